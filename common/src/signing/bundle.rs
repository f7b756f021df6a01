//! The OMS signature file: a Sigstore bundle v0.3 whose DSSE envelope holds
//! an in-toto Statement v1 with the `model_signing` v1.0 predicate — field
//! for field what `model_signing sign key` writes (checked against
//! model-signing 1.1.1), so each tool verifies the other's signatures.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

use super::keys::{PrivateKey, PublicKey};

pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// What `model_signing` ignores by default, recorded as it records it.
pub const DEFAULT_IGNORE: [&str; 4] = [".gitignore", ".gitattributes", ".github", ".git"];
/// Most bytes of a bundle we read (a 1000-file model is ~150 KiB).
pub const MAX_BUNDLE: u64 = 16 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bundle {
    pub media_type: String,
    pub verification_material: VerificationMaterial,
    pub dsse_envelope: Envelope,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMaterial {
    pub public_key: PublicKeyHint,
    #[serde(default)]
    pub tlog_entries: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicKeyHint {
    #[serde(default)]
    pub hint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    pub sig: String,
    #[serde(default)]
    pub keyid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Predicate,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Predicate {
    pub serialization: Serialization,
    pub resources: Vec<Resource>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Serialization {
    pub method: String,
    pub hash_type: String,
    pub allow_symlinks: bool,
    #[serde(default)]
    pub ignore_paths: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub algorithm: String,
    pub digest: String,
}

/// `model_signing`'s order: by path components, so `a/b < a/c < a-b`.
pub fn sort_paths(paths: &mut [String]) {
    paths.sort_by(|a, b| a.split('/').cmp(b.split('/')));
}

/// ROOT: sha256 over the raw 32-byte file digests in path order.
pub fn root_of(files: &BTreeMap<String, Digest>) -> Result<String> {
    let mut paths: Vec<String> = files.keys().cloned().collect();
    sort_paths(&mut paths);
    let mut all = Vec::with_capacity(paths.len() * 32);
    for p in &paths {
        let raw = hex::decode(files[p].hex())
            .map_err(|_| Error::Invalid(format!("digest of {p} is not hex")))?;
        all.extend_from_slice(&raw);
    }
    Ok(Digest::of(&all).hex().to_string())
}

/// DSSE's pre-authentication encoding, the bytes that are signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Signs the files (path → sha256) of the model named `name`; files under
/// `ignore_paths` are left out and the list recorded in the statement (as
/// `model_signing sign` does), so every verifier skips exactly those.
pub fn sign(
    files: &BTreeMap<String, Digest>,
    ignore_paths: &[String],
    name: &str,
    key: &PrivateKey,
) -> Result<Bundle> {
    let files: BTreeMap<String, Digest> = files
        .iter()
        .filter(|(p, _)| !super::resources::ignored(p, ignore_paths))
        .map(|(p, d)| (p.clone(), d.clone()))
        .collect();
    let files = &files;
    let mut paths: Vec<String> = files.keys().cloned().collect();
    sort_paths(&mut paths);
    let statement = Statement {
        statement_type: STATEMENT_TYPE.into(),
        subject: vec![Subject {
            name: name.into(),
            digest: BTreeMap::from([("sha256".to_string(), root_of(files)?)]),
        }],
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Predicate {
            serialization: Serialization {
                method: "files".into(),
                hash_type: "sha256".into(),
                allow_symlinks: false,
                ignore_paths: ignore_paths.to_vec(),
            },
            resources: paths
                .iter()
                .map(|p| Resource {
                    name: p.clone(),
                    algorithm: "sha256".into(),
                    digest: files[p].hex().to_string(),
                })
                .collect(),
        },
    };
    let payload = serde_json::to_vec(&statement).expect("a statement serialises");
    let sig = key.sign(&pae(PAYLOAD_TYPE, &payload))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(Bundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        verification_material: VerificationMaterial {
            public_key: PublicKeyHint {
                hint: key.public_key()?.hint(),
            },
            tlog_entries: vec![],
        },
        dsse_envelope: Envelope {
            payload: b64.encode(&payload),
            payload_type: PAYLOAD_TYPE.into(),
            signatures: vec![EnvelopeSignature {
                sig: b64.encode(sig),
                keyid: String::new(),
            }],
        },
    })
}

impl Bundle {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Bundle> {
        if bytes.len() as u64 > MAX_BUNDLE {
            return Err(Error::TooLarge {
                what: what.to_string(),
                limit: MAX_BUNDLE,
                declared: Some(bytes.len() as u64),
            });
        }
        let b: Bundle = serde_json::from_slice(bytes).map_err(|e| Error::json(what, e))?;
        if b.media_type != BUNDLE_MEDIA_TYPE {
            return Err(Error::Invalid(format!(
                "{what} is a {:?} bundle; OMS signatures are {BUNDLE_MEDIA_TYPE}",
                b.media_type
            )));
        }
        Ok(b)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a bundle serialises")
    }

    /// Checks the DSSE signature with `key` and returns the signed statement,
    /// whose ROOT has been checked against its own resources.
    pub fn verify(&self, key: &PublicKey, what: &str) -> Result<Statement> {
        let e = &self.dsse_envelope;
        if e.payload_type != PAYLOAD_TYPE {
            return Err(Error::Invalid(format!(
                "{what}: payload type {:?}, expected {PAYLOAD_TYPE}",
                e.payload_type
            )));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64
            .decode(&e.payload)
            .map_err(|_| Error::Invalid(format!("{what}: the payload is not base64")))?;
        let pae = pae(&e.payload_type, &payload);
        let signed = e
            .signatures
            .iter()
            .any(|s| b64.decode(&s.sig).is_ok_and(|sig| key.verify(&pae, &sig)));
        if !signed {
            return Err(Error::Validation(format!(
                "{what}: the signature does not verify with this key ({} key, hint {}; the bundle names {})",
                key.curve.name(),
                &key.hint()[..16],
                self.verification_material
                    .public_key
                    .hint
                    .get(..16)
                    .unwrap_or("no hint")
            )));
        }
        let st: Statement = serde_json::from_slice(&payload)
            .map_err(|e| Error::json(format!("{what}'s statement"), e))?;
        if st.statement_type != STATEMENT_TYPE || st.predicate_type != PREDICATE_TYPE {
            return Err(Error::Invalid(format!(
                "{what}: statement {:?} / predicate {:?} is not an OMS model signature",
                st.statement_type, st.predicate_type
            )));
        }
        let s = &st.predicate.serialization;
        if s.method != "files" || s.hash_type != "sha256" {
            return Err(Error::Invalid(format!(
                "{what}: serialization {:?} with {:?} is not supported (files, sha256)",
                s.method, s.hash_type
            )));
        }
        let files = st.files(what)?;
        let root = root_of(&files)?;
        let claimed = st
            .subject
            .first()
            .and_then(|s| s.digest.get("sha256"))
            .cloned()
            .unwrap_or_default();
        if root != claimed {
            return Err(Error::Validation(format!(
                "{what}: the subject digest {claimed} is not the root of its resources ({root})"
            )));
        }
        Ok(st)
    }
}

impl Statement {
    /// The signed files, path → digest.
    pub fn files(&self, what: &str) -> Result<BTreeMap<String, Digest>> {
        let mut out = BTreeMap::new();
        for r in &self.predicate.resources {
            if r.algorithm != "sha256" {
                return Err(Error::Invalid(format!(
                    "{what}: {} is hashed with {:?}, not sha256",
                    r.name, r.algorithm
                )));
            }
            let d: Digest = format!("sha256:{}", r.digest).parse()?;
            if out.insert(r.name.clone(), d).is_some() {
                return Err(Error::Invalid(format!("{what} lists {} twice", r.name)));
            }
        }
        Ok(out)
    }
}

/// What differs between the signed files and the model's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mismatch {
    pub changed: Vec<String>,
    pub missing: Vec<String>,
    pub extra: Vec<String>,
}

impl Mismatch {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        let list = |v: &[String]| {
            let shown: Vec<String> = v.iter().take(5).map(|s| crate::extract::shown(s)).collect();
            let more = if v.len() > 5 {
                format!(" and {} more", v.len() - 5)
            } else {
                String::new()
            };
            format!("{}{more}", shown.join(", "))
        };
        if !self.changed.is_empty() {
            parts.push(format!("content differs: {}", list(&self.changed)));
        }
        if !self.missing.is_empty() {
            parts.push(format!("signed but missing: {}", list(&self.missing)));
        }
        if !self.extra.is_empty() {
            parts.push(format!("not signed: {}", list(&self.extra)));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Compares the signed files with `actual` (path → digest).
pub fn compare(signed: &BTreeMap<String, Digest>, actual: &BTreeMap<String, Digest>) -> Mismatch {
    let mut m = Mismatch::default();
    for (p, d) in signed {
        match actual.get(p) {
            None => m.missing.push(p.clone()),
            Some(a) if a != d => m.changed.push(p.clone()),
            Some(_) => {}
        }
    }
    m.extra = actual
        .keys()
        .filter(|p| !signed.contains_key(*p))
        .cloned()
        .collect();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PrivateKey {
        crate::signing::keys::generated_p256()
    }

    /// `model_signing` orders by path components (Python's PurePosixPath
    /// comparison), not by string: `-` (0x2d) sorts before `/` (0x2f) as a
    /// byte, but `a` is a prefix component of `a-b`.
    const ORDERED: [&str; 9] = [
        "a/b",
        "a/c",
        "a-b",
        "dir/a",
        "dir/sub/x",
        "dir/sub/y/z",
        "dir/sub-x",
        "dir.txt",
        "z",
    ];

    fn files() -> BTreeMap<String, Digest> {
        ORDERED
            .iter()
            .map(|p| (p.to_string(), Digest::of(p.as_bytes())))
            .collect()
    }

    #[test]
    fn paths_sort_by_components_and_root_follows_that_order() {
        let mut paths: Vec<String> = ORDERED.iter().rev().map(|s| s.to_string()).collect();
        sort_paths(&mut paths);
        assert_eq!(paths, ORDERED);
        let mut bytewise: Vec<&str> = ORDERED.to_vec();
        bytewise.sort();
        assert_ne!(bytewise, ORDERED, "the case must differ from a string sort");
        // ROOT is over the raw digests in component order.
        let mut raw = Vec::new();
        for p in ORDERED {
            raw.extend_from_slice(&hex::decode(Digest::of(p.as_bytes()).hex()).unwrap());
        }
        assert_eq!(root_of(&files()).unwrap(), Digest::of(&raw).hex());
        // The statement lists its resources in that order too.
        let k = key();
        let b = sign(&files(), &[], "m", &k).unwrap();
        let st = b.verify(&k.public_key().unwrap(), "sig").unwrap();
        let names: Vec<&str> = st
            .predicate
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ORDERED);
    }

    #[test]
    fn a_signed_statement_names_the_file_that_differs() {
        let k = key();
        let public = k.public_key().unwrap();
        let b = sign(&files(), &[], "m", &k).unwrap();
        let check = |actual: &BTreeMap<String, Digest>| {
            super::super::verify_files(&b, &public, actual, None, "model.sig")
                .map_err(|e| e.to_string())
        };
        assert!(check(&files()).is_ok());
        let mut changed = files();
        changed.insert("dir/sub/x".into(), Digest::of(b"other"));
        let e = check(&changed).unwrap_err();
        assert!(e.contains("content differs: dir/sub/x"), "{e}");
        let mut missing = files();
        missing.remove("a-b");
        let e = check(&missing).unwrap_err();
        assert!(e.contains("signed but missing: a-b"), "{e}");
        let mut extra = files();
        extra.insert("injected.py".into(), Digest::of(b"x"));
        let e = check(&extra).unwrap_err();
        assert!(e.contains("not signed: injected.py"), "{e}");
    }

    #[test]
    fn a_changed_statement_or_another_key_does_not_verify() {
        let k = key();
        let b = sign(&files(), &[], "m", &k).unwrap();
        let e = b.verify(&key().public_key().unwrap(), "sig").unwrap_err();
        assert!(
            e.to_string().contains("does not verify with this key"),
            "{e}"
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut tampered = b.clone();
        let payload = String::from_utf8(b64.decode(&b.dsse_envelope.payload).unwrap()).unwrap();
        tampered.dsse_envelope.payload = b64.encode(payload.replacen("dir/a", "dir/b", 1));
        let e = tampered
            .verify(&k.public_key().unwrap(), "sig")
            .unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        // Unknown top-level fields are refused, as model_signing's parser does.
        let mut v: serde_json::Value = serde_json::from_slice(&b.to_bytes()).unwrap();
        v["extra"] = serde_json::Value::Bool(true);
        assert!(Bundle::parse(&serde_json::to_vec(&v).unwrap(), "sig").is_err());
    }
}
