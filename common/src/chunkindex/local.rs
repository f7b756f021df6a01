//! Chunk index referrers and pins in the local store.
//!
//! A referrer is kept as an untagged `index.json` entry of its model's
//! repository with `artifactType` = the chunk index type (how ORAS keeps
//! referrers in an OCI layout), so `skopeo`/`oras` see it, prune keeps it
//! and `push` finds it again. Since prune also keeps a referrer's subject,
//! [`drop_orphans`] removes referrers whose model has no other entry left
//! (`rm` and `prune` call it). Pins live in `<store>/chunk-pins.json`:
//! model manifest digest → index digests the user vouched for.

use std::collections::{BTreeMap, BTreeSet};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Descriptor;
use crate::media;
use crate::reference::Reference;
use crate::store::{LoadedManifest, Store};

use super::LayerIndex;

/// Most bytes of the pins file we read (it is ours, but a store may be shared).
const MAX_PINS_FILE: u64 = 16 << 20;

/// Stores a referrer manifest (its blobs must already be in the store) and
/// records it under `reference`'s repository. Returns its digest.
pub fn put_referrer(store: &Store, reference: &Reference, bytes: &[u8]) -> Result<Digest> {
    let d = store.put_bytes(bytes)?;
    let mut desc = Descriptor::new(media::OCI_MANIFEST, d.clone(), bytes.len() as u64);
    desc.artifact_type = Some(media::CHUNK_INDEX.into());
    store.record_untagged(reference, &desc)?;
    Ok(d)
}

/// The chunk index referrers of `subject` recorded in the store.
pub fn referrers(store: &Store, subject: &Digest) -> Result<Vec<LoadedManifest>> {
    let mut out: Vec<LoadedManifest> = Vec::new();
    for e in store.entries()? {
        if e.descriptor.artifact_type.as_deref() != Some(media::CHUNK_INDEX)
            || out.iter().any(|m| m.digest == e.descriptor.digest)
        {
            continue;
        }
        let Ok(m) = store.load_manifest_digest(&e.descriptor.digest) else {
            continue;
        };
        if m.manifest.subject.as_ref().map(|s| &s.digest) == Some(subject) {
            out.push(m);
        }
    }
    Ok(out)
}

/// A model's local referrers and the indexes they carry.
#[derive(Debug, Default)]
pub struct Found {
    pub referrers: Vec<Digest>,
    /// `(index blob digest, parsed index)`.
    pub indexes: Vec<(Digest, LayerIndex)>,
}

/// The indexes of `subject`'s local referrers. Blobs that are missing or
/// fail to parse are skipped (the layer then has no index), never trusted.
pub fn indexes(store: &Store, subject: &Digest) -> Result<Found> {
    let mut refs = Vec::new();
    let mut out: Vec<(Digest, LayerIndex)> = Vec::new();
    for m in referrers(store, subject)? {
        refs.push(m.digest.clone());
        for l in &m.manifest.layers {
            if out.iter().any(|(d, _)| d == &l.digest) || l.size > super::MAX_INDEX_BLOB {
                continue;
            }
            let parsed = store
                .read_blob(&l.digest)
                .and_then(|b| LayerIndex::parse(&b, &l.digest.to_string()));
            match parsed {
                Ok(i) => out.push((l.digest.clone(), i)),
                Err(e) => tracing::warn!("chunk index {} ignored: {e}", l.digest),
            }
        }
    }
    Ok(Found {
        referrers: refs,
        indexes: out,
    })
}

/// Removes referrer entries whose subject no other entry of the store
/// names. Returns how many were removed.
pub fn drop_orphans(store: &Store) -> Result<usize> {
    let entries = store.entries()?;
    let live: BTreeSet<&Digest> = entries
        .iter()
        .filter(|e| e.descriptor.artifact_type.as_deref() != Some(media::CHUNK_INDEX))
        .map(|e| &e.descriptor.digest)
        .collect();
    let mut removed = 0;
    for e in &entries {
        if e.descriptor.artifact_type.as_deref() != Some(media::CHUNK_INDEX) {
            continue;
        }
        let subject = store
            .load_manifest_digest(&e.descriptor.digest)
            .ok()
            .and_then(|m| m.manifest.subject.map(|s| s.digest));
        if subject.as_ref().is_some_and(|s| live.contains(s)) {
            continue;
        }
        let name = e
            .repository
            .clone()
            .unwrap_or_else(|| "localhost/referrer".into());
        let r: Reference = format!("{name}@{}", e.descriptor.digest).parse()?;
        removed += store.remove(&r)?;
    }
    Ok(removed)
}

fn pins_path(store: &Store) -> std::path::PathBuf {
    store.root().join("chunk-pins.json")
}

fn load_pins(store: &Store) -> Result<BTreeMap<Digest, BTreeSet<Digest>>> {
    let p = pins_path(store);
    match std::fs::metadata(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io("stat", p, e)),
        Ok(m) if m.len() > MAX_PINS_FILE => {
            return Err(Error::TooLarge {
                what: p.display().to_string(),
                limit: MAX_PINS_FILE,
                declared: Some(m.len()),
            });
        }
        Ok(_) => {}
    }
    let bytes = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(p.display().to_string(), e))
}

/// Records that the user trusts `indexes` for the model `manifest`
/// (`modelpack index --pin`). The store lock serialises writers.
pub fn pin(store: &Store, manifest: &Digest, indexes: &[Digest]) -> Result<()> {
    let _lock = store.lock()?;
    let mut pins = load_pins(store)?;
    pins.entry(manifest.clone())
        .or_default()
        .extend(indexes.iter().cloned());
    let bytes = serde_json::to_vec_pretty(&pins).expect("pins serialise");
    crate::store::write_atomic(&pins_path(store), &bytes, &store.tmp_dir())
}

/// The index digests pinned for `manifest`.
pub fn pins(store: &Store, manifest: &Digest) -> Result<Vec<Digest>> {
    Ok(load_pins(store)?
        .remove(manifest)
        .map(|s| s.into_iter().collect())
        .unwrap_or_default())
}

/// Is this store entry a chunk index referrer (hidden from `ls`)?
pub fn is_referrer_entry(e: &crate::store::IndexEntry) -> bool {
    e.descriptor.artifact_type.as_deref() == Some(media::CHUNK_INDEX)
}
