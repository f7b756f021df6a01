//! The node's signing policy (snapshotter and CSI): registries → public
//! keys. A model from a listed registry (or any, under `"*"`) is attached
//! only when one of its signature referrers verifies with one of the keys
//! against its manifest — before a layer is committed or a volume mounted.
//!
//! The chain that then covers every byte served: signature → each file's
//! sha256 = its raw layer's digest → the manifest (fetched by the digest the
//! Prepare names, verified) → the chunk index it binds → each chunk. Tar
//! layers break that chain without reading them (their files' digests are
//! not in the manifest), so under a policy a model with tar layers is
//! refused with that reason; build it raw (the default).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::reference::Reference;
use crate::registry::RegistryClient;

use super::keys::PublicKey;

pub struct NodePolicy {
    keys: BTreeMap<String, Vec<PublicKey>>,
    /// Manifests already verified, by digest (a model's layers Prepare one
    /// by one, and each Prepare checks its labels against the manifest).
    verified: Mutex<HashMap<Digest, Arc<Manifest>>>,
}

impl NodePolicy {
    /// Loads every key named by `rules` (registry host or `*` → PEM files).
    pub fn load(rules: &BTreeMap<String, Vec<PathBuf>>) -> Result<Option<NodePolicy>> {
        if rules.is_empty() {
            return Ok(None);
        }
        let mut keys = BTreeMap::new();
        for (host, paths) in rules {
            if paths.is_empty() {
                return Err(Error::Invalid(format!("[signing] {host:?} lists no key")));
            }
            let loaded = paths
                .iter()
                .map(|p| PublicKey::load(p))
                .collect::<Result<Vec<_>>>()?;
            keys.insert(host.clone(), loaded);
        }
        Ok(Some(NodePolicy {
            keys,
            verified: Mutex::new(HashMap::new()),
        }))
    }

    /// The keys a model from `registry` must be signed with, if any.
    pub fn keys_for(&self, registry: &str) -> Option<&[PublicKey]> {
        self.keys
            .get(registry)
            .or_else(|| self.keys.get("*"))
            .map(Vec::as_slice)
    }

    /// Checks `reference@digest` against the policy. Returns the verified
    /// manifest, which is what the signature covers: a caller serving a layer
    /// must check that the layer is one of it (`ModelLayerLabels::layer_in`).
    /// `None` for registries the policy does not list.
    pub async fn check(
        &self,
        client: &RegistryClient,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<Option<Arc<Manifest>>> {
        let Some(keys) = self.keys_for(&reference.registry) else {
            return Ok(None);
        };
        if let Some(m) = self.verified.lock().unwrap().get(digest) {
            return Ok(Some(m.clone()));
        }
        let pinned = reference.with_digest(digest.clone());
        let f = client.get_manifest(&pinned).await?;
        let m = Arc::new(Manifest::parse(&f.bytes, &format!("manifest of {pinned}"))?);
        let files = super::files_from_raw_manifest(&m)?.ok_or_else(|| {
            Error::Validation(format!(
                "{pinned} has tar layers: the node's signing policy covers raw-layer models only (their file digests are in the manifest)"
            ))
        })?;
        let bundles: Vec<(String, Vec<u8>)> =
            super::referrer::fetch_remote(client, reference, &f.digest)
                .await?
                .into_iter()
                .map(|(d, _, b)| (format!("signature {d}"), b))
                .collect();
        let mut why = Vec::new();
        for key in keys {
            let modelfile = super::modelfile_digest(&m);
            match super::verify_any(
                &bundles,
                key,
                &files,
                modelfile.as_ref(),
                &pinned.to_string(),
            ) {
                Ok(_) => {
                    let mut v = self.verified.lock().unwrap();
                    if v.len() > 4096 {
                        v.clear();
                    }
                    v.insert(digest.clone(), m.clone());
                    return Ok(Some(m));
                }
                Err(e) => why.push(e.to_string()),
            }
        }
        Err(Error::Validation(why.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2p4P8to2ZbEO53Igo4XCKxgyAaKW
mq9VIPWbGvSP3VaYSqubfTIvkr0Vkrw2EeSj7353ouKjNAAYTBQRHNoRdg==
-----END PUBLIC KEY-----
";

    #[test]
    fn rules_name_registries_then_the_wildcard_and_each_needs_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pub");
        std::fs::write(&key, P256_PUB).unwrap();
        assert!(NodePolicy::load(&BTreeMap::new()).unwrap().is_none());
        let only = NodePolicy::load(&BTreeMap::from([("reg.example".into(), vec![key.clone()])]))
            .unwrap()
            .unwrap();
        assert_eq!(only.keys_for("reg.example").map(<[_]>::len), Some(1));
        assert!(
            only.keys_for("other.example").is_none(),
            "unlisted: no policy"
        );
        let wild = NodePolicy::load(&BTreeMap::from([("*".into(), vec![key.clone()])]))
            .unwrap()
            .unwrap();
        assert!(wild.keys_for("any.example").is_some());
        let e = NodePolicy::load(&BTreeMap::from([("reg.example".into(), vec![])]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("reg.example") && e.contains("no key"), "{e}");
        let e = NodePolicy::load(&BTreeMap::from([(
            "reg.example".into(),
            vec![dir.path().join("missing.pub")],
        )]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("missing.pub"), "{e}");
    }
}
