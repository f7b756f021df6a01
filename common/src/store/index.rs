//! `index.json`: which manifests the store holds and under which references.
//!
//! Tagged entries carry `org.opencontainers.image.ref.name` = the full
//! reference (`127.0.0.1:5000/models/x:v1`), which is what `skopeo copy
//! oci:<store>:<ref>` looks up. Every entry also records its repository in
//! [`REPOSITORY_ANNOTATION`] so digest-only pulls stay listed and protected from prune.

use std::fs;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::manifest::{Descriptor, Index};
use crate::media;
use crate::reference::Reference;

use super::Store;

/// Annotation on index entries naming the repository (`registry/repo`).
pub const REPOSITORY_ANNOTATION: &str = "dev.modelpack.repository";

/// Annotation on the untagged entry of a model being served lazily (`mount`)
/// before all its blobs are stored: the tag it gets once complete, so `ls`
/// can show it. Never a ref name: verbs that need the whole model must not
/// find it by tag.
pub const PENDING_TAG_ANNOTATION: &str = "dev.modelpack.pending-tag";

/// One manifest entry of index.json.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// Full tagged reference, or `None` for an untagged (digest-only) entry.
    pub reference: Option<String>,
    /// `registry/repository`.
    pub repository: Option<String>,
    /// For an untagged entry of a lazily served model: the tag it will get.
    pub pending_tag: Option<String>,
    pub descriptor: Descriptor,
}

fn load(root: &Path) -> Result<Index> {
    let p = root.join("index.json");
    let bytes = fs::read(&p).ctx("read", &p)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(p.display().to_string(), e))
}

fn save(store: &Store, index: &Index) -> Result<()> {
    super::write_atomic(
        &store.root.join("index.json"),
        &index.to_bytes(),
        &store.tmp_dir(),
    )
}

pub(super) fn read(root: &Path) -> Result<Vec<IndexEntry>> {
    Ok(load(root)?
        .manifests
        .into_iter()
        .map(|d| IndexEntry {
            reference: d.annotations.get(media::ANNOTATION_REF_NAME).cloned(),
            repository: d.annotations.get(REPOSITORY_ANNOTATION).cloned(),
            pending_tag: d.annotations.get(PENDING_TAG_ANNOTATION).cloned(),
            descriptor: d,
        })
        .collect())
}

fn entry_for(reference: &Reference, manifest: &Descriptor, tagged: bool) -> Descriptor {
    let mut d = Descriptor::new(
        manifest.media_type.clone(),
        manifest.digest.clone(),
        manifest.size,
    );
    d.artifact_type = manifest.artifact_type.clone();
    if tagged {
        d.annotations
            .insert(media::ANNOTATION_REF_NAME.into(), reference.to_string());
    }
    d.annotations
        .insert(REPOSITORY_ANNOTATION.into(), reference.name());
    d
}

pub(super) fn tag(store: &Store, reference: &Reference, manifest: &Descriptor) -> Result<()> {
    let tag = reference.tag_or_default().ok_or_else(|| {
        Error::Invalid(format!(
            "{reference}: a tag is needed here, not only a digest"
        ))
    })?;
    let reference = reference.with_tag(tag);
    let name = reference.to_string();
    let mut index = load(&store.root)?;
    index
        .manifests
        .retain(|d| d.annotations.get(media::ANNOTATION_REF_NAME) != Some(&name));
    // A tagged entry supersedes an untagged record of the same manifest in the same repository.
    index.manifests.retain(|d| {
        !(d.digest == manifest.digest
            && !d.annotations.contains_key(media::ANNOTATION_REF_NAME)
            && d.annotations.get(REPOSITORY_ANNOTATION) == Some(&reference.name()))
    });
    index.manifests.push(entry_for(&reference, manifest, true));
    sort(&mut index);
    save(store, &index)
}

pub(super) fn record_untagged(
    store: &Store,
    reference: &Reference,
    manifest: &Descriptor,
    pending_tag: Option<&str>,
) -> Result<()> {
    let mut index = load(&store.root)?;
    let exists = index.manifests.iter().any(|d| {
        d.digest == manifest.digest
            && d.annotations.get(REPOSITORY_ANNOTATION) == Some(&reference.name())
    });
    if !exists {
        let mut entry = entry_for(reference, manifest, false);
        if let Some(t) = pending_tag {
            entry
                .annotations
                .insert(PENDING_TAG_ANNOTATION.into(), t.to_string());
        }
        index.manifests.push(entry);
        sort(&mut index);
        save(store, &index)?;
    }
    Ok(())
}

pub(super) fn remove(store: &Store, reference: &Reference) -> Result<usize> {
    let mut index = load(&store.root)?;
    let before = index.manifests.len();
    match &reference.digest {
        Some(d) => index.manifests.retain(|e| &e.digest != d),
        None => {
            let name = reference
                .with_tag(reference.tag_or_default().unwrap_or("latest"))
                .to_string();
            index
                .manifests
                .retain(|e| e.annotations.get(media::ANNOTATION_REF_NAME) != Some(&name));
        }
    }
    let removed = before - index.manifests.len();
    if removed > 0 {
        save(store, &index)?;
    }
    Ok(removed)
}

fn sort(index: &mut Index) {
    index.schema_version = 2;
    index.media_type = Some(media::OCI_INDEX.into());
    index.manifests.sort_by(|a, b| {
        let ka = (
            a.annotations.get(media::ANNOTATION_REF_NAME),
            a.digest.to_string(),
        );
        let kb = (
            b.annotations.get(media::ANNOTATION_REF_NAME),
            b.digest.to_string(),
        );
        ka.cmp(&kb)
    });
}
