//! A stored model re-labelled in the other identifier family, for registries
//! that need it (Harbor ≤ 2.15 reads only `vnd.cnai.*`; `settings`).
//!
//! Only the manifest changes — media types and annotation keys — so no blob
//! is copied or re-hashed; the chunk-index referrer is rebuilt for the new
//! manifest digest, since an index binds to the manifest that names it.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Descriptor;
use crate::media::{self, Family};
use crate::reference::Reference;
use crate::store::Store;

/// Stores `source`'s model in `family` and tags it `dest`. Returns the new
/// manifest digest, or `None` when it already is in that family.
pub fn store_in_family(
    store: &Store,
    source: &Reference,
    dest: &Reference,
    family: Family,
) -> Result<Option<Digest>> {
    let _lease = store.lease()?;
    let loaded = store.load_manifest(source)?;
    let Some(converted) = loaded.manifest.in_family(family) else {
        if loaded.manifest.model_family().is_none() {
            return Err(Error::Artifact(format!(
                "{source} is not a ModelPack artifact, so it has no {family:?} form"
            )));
        }
        return Ok(None);
    };
    let bytes = converted.to_bytes();
    let digest = store.put_bytes(&bytes)?;
    let mut desc = Descriptor::new(media::OCI_MANIFEST, digest.clone(), bytes.len() as u64);
    desc.artifact_type = converted.artifact_type.clone();
    store.tag(dest, &desc)?;
    let indexes: Vec<(Digest, u64, Digest)> = converted
        .layers
        .iter()
        .filter_map(|l| {
            let index: Digest = l
                .annotations
                .get(media::ANNOTATION_CHUNKS_DIGEST)?
                .parse()
                .ok()?;
            Some((index.clone(), store.blob_size(&index)?, l.digest.clone()))
        })
        .collect();
    if let Some(referrer) = crate::pack::chunk_referrer(&bytes, &digest, &indexes) {
        store.put_bytes(b"{}")?;
        crate::chunkindex::local::put_referrer(store, dest, &referrer)?;
    }
    Ok(Some(digest))
}
