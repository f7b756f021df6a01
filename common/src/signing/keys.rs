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

/// What a refused key is, for the message: its algorithm's OID in the
/// DER (PKCS#8 and SPKI both carry it near the start), "an unknown" else.
fn algorithm_of(der: &[u8]) -> &'static str {
    const KNOWN: [(&[u8], &str); 4] = [
        (&[0x06, 0x03, 0x2b, 0x65, 0x70], "an Ed25519"),
        (&[0x06, 0x03, 0x2b, 0x65, 0x71], "an Ed448"),
        (
            &[
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
            ],
            "an RSA",
        ),
        (
            &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01],
            "an EC (unsupported curve or malformed)",
        ),
    ];
    let head = &der[..der.len().min(64)];
    KNOWN
        .iter()
        .find(|(oid, _)| head.windows(oid.len()).any(|w| w == *oid))
        .map_or("an unknown or malformed", |(_, name)| name)
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
            "{what} is {} private key, not an EC key on P-256, P-384 or P-521 (model signing keys are ECDSA; Ed25519 and RSA are not accepted)",
            algorithm_of(&der)
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
            "{what} is {} public key, not an EC key on P-256, P-384 or P-521 (model signing keys are ECDSA; Ed25519 and RSA are not accepted)",
            algorithm_of(der)
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

/// A fresh P-256 key (PKCS#8 PEM, as `openssl genpkey` writes it), for tests.
#[cfg(test)]
pub(crate) fn generated_p256() -> PrivateKey {
    use base64::Engine as _;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    PrivateKey::from_pem(&pem, "k").unwrap()
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

    /// Made with `openssl ecparam -name prime256v1 -genkey | openssl ec -pubout`;
    /// `sha256sum` of the file is the hint `model_signing` writes.
    const P256_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2p4P8to2ZbEO53Igo4XCKxgyAaKW
mq9VIPWbGvSP3VaYSqubfTIvkr0Vkrw2EeSj7353ouKjNAAYTBQRHNoRdg==
-----END PUBLIC KEY-----
";
    const P256_PUB_SHA256SUM: &str =
        "c9f0b2be125582d40d102201fc87f3b33a9119056ff18fe238fb8bbb20ff0f11";
    /// `openssl genpkey -algorithm ED25519` and `openssl pkey -pubout`.
    const ED25519_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIIu7DstfCcN0xeqbepCmOxoYUsoc9C5c1aqiw9PKShZc
-----END PRIVATE KEY-----
";
    const ED25519_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA5NiO7C969rcfTkdWoOSVquvQUie/2ifQFb3yL6xypFQ=
-----END PUBLIC KEY-----
";
    /// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024`, its public half.
    const RSA_PUB: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC0xDTmQNvpY3fC7TFvNnyOYySN
MTqEpZr+iq0G0W4XKECabrG8chTZL9BpFGBOQbyfuo09YjXkQ3IHlen00bJoVih5
BI/HjkSYYq9JjmlFp1G2nSqSmAXSZvFywJMDCoOXd8XHXvuxzI4pK1RT3gWq7r2O
W72txIFxwjSR5YWhsQIDAQAB
-----END PUBLIC KEY-----
";
    const RSA_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBALTENOZA2+ljd8Lt
MW82fI5jJI0xOoSlmv6KrQbRbhcoQJpusbxyFNkv0GkUYE5BvJ+6jT1iNeRDcgeV
6fTRsmhWKHkEj8eORJhir0mOaUWnUbadKpKYBdJm8XLAkwMKg5d3xcde+7HMjikr
VFPeBaruvY5bva3EgXHCNJHlhaGxAgMBAAECgYB6AJLTdKL3+jIyVXQv405dq3xX
7wnXzQ23DlGJcIAlEP3JPTyoOzbm/uZihWYaazOrenUpIMfOr9aeWAf3PDB0KH/7
9FJhtvCw+UJTpPc7Pv18jwXQrNuCqQIoX52ePbGUfCMa+f5YTTklxb+dHYcQv7u7
nqSmBBMjxg+Tx2IGIQJBANvO5SLVxL+G86uB1d6CXw5s8J2qTL/lc9xizDE9rqMf
C/9/ij5+TBTsjIwqXfrP/UuTuVhf76y2YLe2bdt4K18CQQDSh6sB6mg/AfA4wX7B
2ahJNG/9iuyDdqGm6Xxefz6rXTdyNhWx6iVWe5TBxCCYCddE6g5GLWxd7tu9wIa2
oVzvAkBtClrTCBa9KHYyq4rsAeKj5lkK7dN7EpmCR6Sh/MZod1tdWOi8jayyaJJk
ahQK+yjdWCAG/jiIhkS+fgpLaHajAkEAgIFFNaciOItzWQFq4OJ9oSl7zlQ1J82K
wHo2auvakfkVNgajWXTlk5NdaqTPjF49YxhG3Dkvs2pwALP6xpFaSwJBANcjVZJQ
W9wEQt696cRwqjFZGqtue/BPtNbmPq89QCtv/+SfYm1UdlZAsbilNagwhYDOIv+f
z03TGun0hAN+ZHw=
-----END PRIVATE KEY-----
";

    #[test]
    fn the_hint_is_the_sha256sum_of_the_pem_file_openssl_writes() {
        let k = PublicKey::from_pem(P256_PUB, "pub.pem").unwrap();
        assert_eq!(k.curve, Curve::P256);
        assert_eq!(k.to_pem(), P256_PUB, "re-encoded byte for byte");
        assert_eq!(k.hint(), P256_PUB_SHA256SUM);
        // Also when the file was written with CRLF or without its last newline.
        let crlf = P256_PUB.replace('\n', "\r\n");
        assert_eq!(
            PublicKey::from_pem(&crlf, "crlf").unwrap().hint(),
            P256_PUB_SHA256SUM
        );
    }

    #[test]
    fn ed25519_and_rsa_keys_are_refused_naming_what_they_are() {
        for (pem, private, algo) in [
            (ED25519_PRIV, true, "an Ed25519 private key"),
            (ED25519_PUB, false, "an Ed25519 public key"),
            (RSA_PRIV, true, "an RSA private key"),
            (RSA_PUB, false, "an RSA public key"),
        ] {
            let e = if private {
                PrivateKey::from_pem(pem, "key.pem").unwrap_err()
            } else {
                PublicKey::from_pem(pem, "key.pem").unwrap_err()
            };
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("key.pem is {algo}"))
                    && msg.contains("P-256, P-384 or P-521")
                    && msg.contains("Ed25519 and RSA are not accepted"),
                "{msg}"
            );
            assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
        }
    }
}
