//! Signatures as OCI referrers of the model manifest, the way cosign v3
//! stores Sigstore bundles: artifactType
//! `application/vnd.dev.sigstore.bundle.v0.3+json`, the empty config, one
//! layer holding the bundle JSON, `subject` = the model. Recorded in the
//! local store beside the model (so `push` carries them) and in registries
//! through the referrers API or the tag schema fallback.

use crate::chunkindex::referrer::{parse_list, subject_of, tag_for};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Descriptor, Manifest};
use crate::media;
use crate::reference::Reference;
use crate::registry::{MAX_MANIFEST, RegistryClient};
use crate::store::Store;

use super::bundle::{BUNDLE_MEDIA_TYPE, MAX_BUNDLE, PREDICATE_TYPE};

/// A signature as found: the referrer's digest, its manifest bytes, the bundle bytes.
pub type FoundSignature = (Digest, Vec<u8>, Vec<u8>);

/// Most signature referrers of one model we look at.
pub const MAX_SIGNATURES: usize = 16;
/// On the referrer: what the bundle's statement is (cosign's convention).
pub const ANNOTATION_PREDICATE: &str = "dev.sigstore.bundle.predicateType";

/// The referrer manifest carrying `bundle` for the model `subject`.
pub fn build(subject: &Descriptor, bundle: &[u8]) -> Manifest {
    let mut layer = Descriptor::new(BUNDLE_MEDIA_TYPE, Digest::of(bundle), bundle.len() as u64);
    layer
        .annotations
        .insert(media::ANNOTATION_TITLE.into(), "model.sig".into());
    let mut m = Manifest::model(crate::media::Family::Cncf, Descriptor::empty(), vec![layer]);
    m.artifact_type = Some(BUNDLE_MEDIA_TYPE.into());
    m.subject = Some(subject.clone());
    m.annotations
        .insert(ANNOTATION_PREDICATE.into(), PREDICATE_TYPE.into());
    m
}

/// Stores `bundle` as a signature of the stored model `digest`, recorded
/// under `reference`'s repository. Returns the referrer's digest.
pub fn put_local(
    store: &Store,
    reference: &Reference,
    digest: &Digest,
    bundle: &[u8],
) -> Result<Digest> {
    let loaded = store.load_manifest_digest(digest)?;
    let subject = subject_of(&loaded.bytes, digest);
    let m = build(&subject, bundle);
    store.put_bytes(bundle)?;
    store.put_bytes(b"{}")?;
    let bytes = m.to_bytes();
    let d = store.put_bytes(&bytes)?;
    let mut desc = Descriptor::new(media::OCI_MANIFEST, d.clone(), bytes.len() as u64);
    desc.artifact_type = Some(BUNDLE_MEDIA_TYPE.into());
    store.record_untagged(reference, &desc)?;
    Ok(d)
}

/// The signature referrers of `subject` in the store: (referrer digest, referrer bytes, bundle bytes).
pub fn local(store: &Store, subject: &Digest) -> Result<Vec<FoundSignature>> {
    let mut out = Vec::new();
    for e in store.entries()? {
        if e.descriptor.artifact_type.as_deref() != Some(BUNDLE_MEDIA_TYPE)
            || out.iter().any(|(d, _, _)| d == &e.descriptor.digest)
        {
            continue;
        }
        let Ok(loaded) = store.load_manifest_digest(&e.descriptor.digest) else {
            continue;
        };
        if loaded.manifest.subject.as_ref().map(|s| &s.digest) != Some(subject) {
            continue;
        }
        let Some(layer) = loaded.manifest.layers.first() else {
            continue;
        };
        if let Ok(bundle) = store.read_blob(&layer.digest) {
            out.push((e.descriptor.digest.clone(), loaded.bytes, bundle));
        }
    }
    Ok(out)
}

/// Pushes a signature referrer (bytes from the store) to `remote`'s repository.
pub async fn publish(
    client: &RegistryClient,
    store: &Store,
    remote: &Reference,
    bytes: &[u8],
) -> Result<Digest> {
    let m = Manifest::parse(bytes, "signature referrer")?;
    let subject = m
        .subject
        .clone()
        .ok_or_else(|| Error::Invalid("a signature referrer needs a subject".into()))?;
    client.push_blob_bytes(remote, b"{}").await?;
    for l in &m.layers {
        client
            .push_blob_bytes(remote, &store.read_blob(&l.digest)?)
            .await?;
    }
    crate::transfer::referrers::put_referrer_manifest(
        client,
        remote,
        bytes,
        &m,
        &subject.digest,
        "signature referrer",
    )
    .await
}

/// Every referrer of `subject` in `remote`'s repository (referrers API, else tag schema).
pub async fn list_remote(
    client: &RegistryClient,
    remote: &Reference,
    subject: &Digest,
) -> Result<Vec<Descriptor>> {
    Ok(match client.get_referrers(remote, subject).await? {
        Some(bytes) => parse_list(&bytes, &format!("referrers of {subject}"))?,
        None => {
            let tag = remote.with_tag(&tag_for(subject));
            match client.get_manifest(&tag).await {
                Ok(f) => parse_list(&f.bytes, &format!("referrers tag {tag}"))?,
                Err(Error::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(e),
            }
        }
    })
}

/// The signatures of `subject` in the registry: (referrer digest, referrer bytes, bundle bytes), bounded.
pub async fn fetch_remote(
    client: &RegistryClient,
    remote: &Reference,
    subject: &Digest,
) -> Result<Vec<FoundSignature>> {
    let mut out = Vec::new();
    for d in list_remote(client, remote, subject).await? {
        if d.artifact_type.as_deref() != Some(BUNDLE_MEDIA_TYPE) || out.len() >= MAX_SIGNATURES {
            continue;
        }
        if d.size > MAX_MANIFEST {
            continue;
        }
        let f = client
            .get_manifest(&remote.with_digest(d.digest.clone()))
            .await?;
        let m = Manifest::parse(&f.bytes, &format!("signature referrer {}", d.digest))?;
        if m.subject.as_ref().map(|s| &s.digest) != Some(subject) {
            continue;
        }
        let Some(layer) = m
            .layers
            .first()
            .filter(|l| l.media_type == BUNDLE_MEDIA_TYPE)
        else {
            continue;
        };
        let bundle = client
            .pull_small_blob(
                remote,
                &layer.digest,
                layer.size,
                MAX_BUNDLE,
                &format!("signature bundle {}", layer.digest),
            )
            .await?;
        out.push((f.digest, f.bytes, bundle));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_referrer_is_shaped_as_cosign_stores_bundles() {
        let subject = Descriptor::new(media::OCI_MANIFEST, Digest::of(b"model"), 5);
        let m = build(&subject, b"{\"bundle\":1}");
        assert_eq!(m.artifact_type.as_deref(), Some(BUNDLE_MEDIA_TYPE));
        assert_eq!(m.subject.as_ref().map(|s| &s.digest), Some(&subject.digest));
        assert_eq!(m.config.digest, Digest::of(b"{}"));
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].media_type, BUNDLE_MEDIA_TYPE);
        assert_eq!(m.layers[0].digest, Digest::of(b"{\"bundle\":1}"));
        assert_eq!(
            m.layers[0]
                .annotations
                .get(media::ANNOTATION_TITLE)
                .map(String::as_str),
            Some("model.sig")
        );
        assert_eq!(
            m.annotations.get(ANNOTATION_PREDICATE).map(String::as_str),
            Some(PREDICATE_TYPE)
        );
        // It round-trips through its own bytes.
        let again = Manifest::parse(&m.to_bytes(), "referrer").unwrap();
        assert_eq!(again.subject.unwrap().digest, subject.digest);
    }
}
