//! EC keys for OpenSSF Model Signing (OMS) key signatures: PEM private keys
//! (SEC1 `EC PRIVATE KEY` or PKCS#8 `PRIVATE KEY`) and public keys
//! (`PUBLIC KEY`, X.509 SubjectPublicKeyInfo) on P-256/SHA-256,
//! P-384/SHA-384 or P-521/SHA-512 — the curves `model_signing` accepts —
//! with ASN.1 DER ECDSA signatures.
//!
//! aws-lc-rs does the cryptography: it is already in the tree (rustls' TLS
//! provider) and covers all three curves and both private key encodings, so
//! no second crypto stack is added.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, ParsedPublicKey};
use base64::Engine as _;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Most bytes of a key file we read.
pub const MAX_KEY_FILE: u64 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    const ALL: [Curve; 3] = [Curve::P256, Curve::P384, Curve::P521];

    fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            Curve::P521 => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        }
    }

    fn verification(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1,
            Curve::P521 => &signature::ECDSA_P521_SHA512_ASN1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }
}

/// The DER inside the first PEM block labelled one of `labels`.
fn pem_block(text: &str, labels: &[&str], what: &str) -> Result<(String, Vec<u8>)> {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        for l in lines.by_ref() {
            if l.trim() == end {
                break;
            }
            b64.push_str(l.trim());
        }
        if labels.contains(&label) {
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| Error::Invalid(format!("{what}: its {label} block is not base64")))?;
            return Ok((label.to_string(), der));
        }
    }
    Err(Error::Invalid(format!(
        "{what} has no {} PEM block",
        labels.join(" or ")
    )))
}

fn read_key_file(path: &std::path::Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("read key", path, e))?;
    if meta.len() > MAX_KEY_FILE {
        return Err(Error::Invalid(format!(
            "{} is {} bytes: not a key file",
            path.display(),
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io("read key", path, e))?;
    String::from_utf8(bytes)
        .map_err(|_| Error::Invalid(format!("{} is not PEM text", path.display())))
}

/// A signing key.
pub struct PrivateKey {
    pair: EcdsaKeyPair,
    pub curve: Curve,
}

impl PrivateKey {
    pub fn from_pem(text: &str, what: &str) -> Result<PrivateKey> {
        let (_, der) = pem_block(text, &["EC PRIVATE KEY", "PRIVATE KEY"], what)?;
        for curve in Curve::ALL {
            if let Ok(pair) = EcdsaKeyPair::from_private_key_der(curve.signing(), &der) {
                return Ok(PrivateKey { pair, curve });
            }
        }
        Err(Error::Invalid(format!(
            "{what} is not an EC private key on P-256, P-384 or P-521 (model signing keys are ECDSA; Ed25519 and RSA are not accepted)"
        )))
    }

    pub fn load(path: &std::path::Path) -> Result<PrivateKey> {
        PrivateKey::from_pem(&read_key_file(path)?, &path.display().to_string())
    }

    /// ASN.1 DER ECDSA signature of `message` (hashed with the curve's hash).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| Error::Invalid("signing failed".into()))
    }

    pub fn public_key(&self) -> Result<PublicKey> {
        let der = self
            .pair
            .public_key()
            .as_der()
            .map_err(|_| Error::Invalid("cannot encode the public key".into()))?;
        PublicKey::from_spki_der(der.as_ref(), "the signing key's public half")
    }
}

/// A verification key.
pub struct PublicKey {
    parsed: ParsedPublicKey,
    spki: Vec<u8>,
    pub curve: Curve,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PublicKey({}, hint {})",
            self.curve.name(),
            &self.hint()[..16]
        )
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({}, redacted)", self.curve.name())
    }
}

impl PublicKey {
    fn from_spki_der(der: &[u8], what: &str) -> Result<PublicKey> {
        for curve in Curve::ALL {
            if let Ok(parsed) = ParsedPublicKey::new(curve.verification(), der) {
                return Ok(PublicKey {
                    parsed,
                    spki: der.to_vec(),
                    curve,
                });
            }
        }
        Err(Error::Invalid(format!(
            "{what} is not an EC public key on P-256, P-384 or P-521"
        )))
    }

    pub fn from_pem(text: &str, what: &str) -> Result<PublicKey> {
        let (_, der) = pem_block(text, &["PUBLIC KEY"], what)?;
        PublicKey::from_spki_der(&der, what)
    }

    pub fn load(path: &std::path::Path) -> Result<PublicKey> {
        PublicKey::from_pem(&read_key_file(path)?, &path.display().to_string())
    }

    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> bool {
        self.parsed.verify_sig(message, der_signature).is_ok()
    }

    /// The key as `openssl ec -pubout` writes it: 64-character base64 lines, LF, trailing newline.
    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.spki);
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// The bundle's `verificationMaterial.publicKey.hint`: hex sha256 of [`Self::to_pem`].
    pub fn hint(&self) -> String {
        Digest::of(self.to_pem().as_bytes()).hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_on_every_curve_sign_and_verify_and_others_are_refused() {
        for curve in Curve::ALL {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(curve.signing(), &rng).unwrap();
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
            );
            let k = PrivateKey::from_pem(&pem, "k").unwrap();
            assert_eq!(k.curve, curve);
            let sig = k.sign(b"payload").unwrap();
            let pubk = PublicKey::from_pem(&k.public_key().unwrap().to_pem(), "p").unwrap();
            assert_eq!(pubk.curve, curve);
            assert!(pubk.verify(b"payload", &sig));
            assert!(!pubk.verify(b"payloaD", &sig));
        }
        assert!(
            PrivateKey::from_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "junk"
            )
            .is_err()
        );
        assert!(
            PublicKey::from_pem("nothing", "x")
                .unwrap_err()
                .to_string()
                .contains("PUBLIC KEY")
        );
    }
}
