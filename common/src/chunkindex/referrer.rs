//! The referrer that publishes a model's chunk indexes: an OCI 1.1 manifest
//! whose `subject` is the model manifest, `artifactType` the chunk index
//! type, config the empty descriptor, and one layer per index blob (each
//! annotated with the model layer it indexes). Registries without the
//! referrers API (distribution 2.8) find it through the referrers tag
//! schema: tag `sha256-<hex>` holding an image index of referrer descriptors.
//!
//! Everything read here is hostile input and bounded: manifests and tag
//! indexes by [`MAX_MANIFEST`], entry and layer counts by the caps below.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Descriptor, Index, Manifest};
use crate::media;
use crate::registry::MAX_MANIFEST;

use super::MAX_INDEX_BLOB;

/// Most entries a referrers list (API answer or tag index) may have.
pub const MAX_REFERRERS: usize = 4096;
/// Most chunk index referrers of one model we fetch.
pub const MAX_CHUNK_REFERRERS: usize = 16;
/// Most index blobs one referrer may list (one per model layer).
pub const MAX_REFERRER_LAYERS: usize = 10_000;

/// The descriptor of a model manifest, as a `subject` names it.
pub fn subject_of(bytes: &[u8], digest: &Digest) -> Descriptor {
    let mt = crate::manifest::sniff_media_type(bytes).unwrap_or_else(|| media::OCI_MANIFEST.into());
    Descriptor::new(mt, digest.clone(), bytes.len() as u64)
}

/// The referrer manifest for `indexes` (`(index digest, index size, layer
/// digest)` in model layer order). Deterministic: the same model and
/// indexes always give the same referrer digest. An index listed twice
/// (two layers with one blob) appears once.
pub fn build(subject: &Descriptor, indexes: &[(Digest, u64, Digest)]) -> Manifest {
    let mut layers: Vec<Descriptor> = Vec::new();
    for (d, size, layer) in indexes {
        if layers.iter().any(|l| &l.digest == d) {
            continue;
        }
        let mut l = Descriptor::new(media::CHUNK_INDEX, d.clone(), *size);
        l.annotations
            .insert(media::ANNOTATION_CHUNKS_LAYER.into(), layer.to_string());
        layers.push(l);
    }
    Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        artifact_type: Some(media::CHUNK_INDEX.into()),
        config: Descriptor::empty(),
        layers,
        subject: Some(Descriptor::new(
            subject.media_type.clone(),
            subject.digest.clone(),
            subject.size,
        )),
        annotations: Default::default(),
    }
}

/// Parses a chunk index referrer of `subject`, refusing anything else.
pub fn parse(bytes: &[u8], subject: &Digest, what: &str) -> Result<Manifest> {
    let bad = |reason: String| Error::ChunkIndex {
        what: format!("referrer {what}"),
        reason,
    };
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(Error::TooLarge {
            what: format!("referrer {what}"),
            limit: MAX_MANIFEST,
            declared: Some(bytes.len() as u64),
        });
    }
    let m = Manifest::parse(bytes, &format!("referrer {what}"))?;
    if m.artifact_type.as_deref() != Some(media::CHUNK_INDEX) {
        return Err(bad("its artifactType is not the chunk index type".into()));
    }
    match &m.subject {
        Some(s) if &s.digest == subject => {}
        _ => return Err(bad(format!("its subject is not {subject}"))),
    }
    if m.layers.len() > MAX_REFERRER_LAYERS {
        return Err(bad(format!(
            "{} layers (at most {MAX_REFERRER_LAYERS})",
            m.layers.len()
        )));
    }
    for l in &m.layers {
        if l.media_type != media::CHUNK_INDEX {
            return Err(bad(format!("layer {} is not a chunk index", l.digest)));
        }
        if l.size > MAX_INDEX_BLOB {
            return Err(bad(format!(
                "index {} claims {} bytes (at most {MAX_INDEX_BLOB})",
                l.digest, l.size
            )));
        }
        indexed_layer(l).ok_or_else(|| {
            bad(format!(
                "index {} does not name its layer ({})",
                l.digest,
                media::ANNOTATION_CHUNKS_LAYER
            ))
        })?;
    }
    Ok(m)
}

/// The model layer digest a referrer's index blob is annotated with.
pub fn indexed_layer(l: &Descriptor) -> Option<Digest> {
    l.annotations
        .get(media::ANNOTATION_CHUNKS_LAYER)
        .and_then(|s| s.parse().ok())
}

/// The referrers tag schema's tag for `subject`: `sha256-<hex>`.
pub fn tag_for(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm(), subject.hex())
}

/// The descriptor a referrers list carries for a referrer manifest.
pub fn entry_for(bytes: &[u8], m: &Manifest) -> Descriptor {
    let mut d = Descriptor::new(media::OCI_MANIFEST, Digest::of(bytes), bytes.len() as u64);
    d.artifact_type = m.artifact_type.clone();
    d.annotations = m.annotations.clone();
    d
}

/// The entries of a referrers list (API answer or tag schema index), bounded.
pub fn parse_list(bytes: &[u8], what: &str) -> Result<Vec<Descriptor>> {
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(Error::TooLarge {
            what: what.to_string(),
            limit: MAX_MANIFEST,
            declared: Some(bytes.len() as u64),
        });
    }
    let i: Index = serde_json::from_slice(bytes).map_err(|e| Error::json(what, e))?;
    if i.manifests.len() > MAX_REFERRERS {
        return Err(Error::ChunkIndex {
            what: what.to_string(),
            reason: format!(
                "{} referrers listed (at most {MAX_REFERRERS})",
                i.manifests.len()
            ),
        });
    }
    Ok(i.manifests)
}

/// The tag schema index after adding `entry` to `existing` (the current tag
/// content, if any), keeping every other entry as it was; `None` when the
/// entry is already listed and nothing needs pushing.
pub fn merge_list(existing: Option<&[u8]>, entry: Descriptor, what: &str) -> Result<Option<Index>> {
    let mut index = Index::new();
    if let Some(bytes) = existing {
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(Error::TooLarge {
                what: what.to_string(),
                limit: MAX_MANIFEST,
                declared: Some(bytes.len() as u64),
            });
        }
        let old: Index = serde_json::from_slice(bytes).map_err(|e| Error::json(what, e))?;
        index.annotations = old.annotations;
        index.manifests = old.manifests;
    }
    if index.manifests.iter().any(|d| d.digest == entry.digest) {
        return Ok(None);
    }
    if index.manifests.len() >= MAX_REFERRERS {
        return Err(Error::ChunkIndex {
            what: what.to_string(),
            reason: format!("already lists {MAX_REFERRERS} referrers; not adding another"),
        });
    }
    index.manifests.push(entry);
    Ok(Some(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Descriptor {
        Descriptor::new(media::OCI_MANIFEST, Digest::of(b"model"), 5)
    }

    #[test]
    fn build_is_deterministic_and_parses_back() {
        let idx = vec![
            (Digest::of(b"i1"), 10, Digest::of(b"l1")),
            (Digest::of(b"i2"), 20, Digest::of(b"l2")),
            (Digest::of(b"i1"), 10, Digest::of(b"l1")),
        ];
        let a = build(&subject(), &idx).to_bytes();
        assert_eq!(a, build(&subject(), &idx).to_bytes());
        let m = parse(&a, &subject().digest, "r").unwrap();
        assert_eq!(m.layers.len(), 2);
        assert_eq!(indexed_layer(&m.layers[1]), Some(Digest::of(b"l2")));
        assert_eq!(m.config.digest.to_string(), media::OCI_EMPTY_DIGEST);
        // Another subject, or a stray layer type, is refused.
        assert!(parse(&a, &Digest::of(b"other"), "r").is_err());
        let mut bad = build(&subject(), &idx);
        bad.layers[0].media_type = "application/octet-stream".into();
        assert!(parse(&bad.to_bytes(), &subject().digest, "r").is_err());
        let mut huge = build(&subject(), &idx);
        huge.layers[0].size = MAX_INDEX_BLOB + 1;
        assert!(parse(&huge.to_bytes(), &subject().digest, "r").is_err());
    }

    #[test]
    fn tag_schema_merge_keeps_others_and_is_idempotent() {
        assert_eq!(
            tag_for(&Digest::of(b"")),
            "sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let other = Descriptor::new(media::OCI_MANIFEST, Digest::of(b"sig"), 3);
        let mut existing = Index::new();
        existing.manifests.push(other.clone());
        let mine = Descriptor::new(media::OCI_MANIFEST, Digest::of(b"mine"), 4);
        let merged = merge_list(Some(&existing.to_bytes()), mine.clone(), "t")
            .unwrap()
            .unwrap();
        assert_eq!(merged.manifests, vec![other, mine.clone()]);
        assert!(
            merge_list(Some(&merged.to_bytes()), mine.clone(), "t")
                .unwrap()
                .is_none()
        );
        let mut full = Index::new();
        for i in 0..MAX_REFERRERS {
            full.manifests.push(Descriptor::new(
                media::OCI_MANIFEST,
                Digest::of(i.to_string().as_bytes()),
                1,
            ));
        }
        assert!(merge_list(Some(&full.to_bytes()), mine, "t").is_err());
        let mut over = full.clone();
        over.manifests
            .push(Descriptor::new(media::OCI_MANIFEST, Digest::of(b"x"), 1));
        assert!(parse_list(&over.to_bytes(), "t").is_err());
    }
}
