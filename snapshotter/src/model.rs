//! Model layers through the remote-snapshot protocol: a `Prepare` carrying
//! `containerd.io/snapshot.ref=<chainID>` and our `containerd.io/snapshot/modelpack.*`
//! labels makes us fetch the layer ourselves into the node-level
//! content-addressed store (verified; a blob already there is reused, so a
//! file shared by two models is stored once), lay it out at its filepath
//! (a hardlink to the blob for raw layers, a safe extract for tar layers),
//! record its chunk digests, commit it under the chainID and answer
//! ALREADY_EXISTS — containerd never downloads or unpacks it.

use std::collections::BTreeMap;

use modelpack_common::Digest;
use modelpack_common::Reference;
use modelpack_common::chunk::index_file;
use modelpack_common::extract::{self, ExtractOptions};
use modelpack_common::manifest::Descriptor;
use modelpack_common::media::LayerFormat;
use modelpack_common::registry::RegistryClient;

use crate::error::{Result, SnapError};
use crate::meta::ModelFile;
use crate::snapshots::{LABEL_REF, Snapshots, link_file, model_record};

pub const LABEL_REFERENCE: &str = "containerd.io/snapshot/modelpack.reference";
pub const LABEL_MANIFEST: &str = "containerd.io/snapshot/modelpack.manifest-digest";
pub const LABEL_LAYER_DIGEST: &str = "containerd.io/snapshot/modelpack.layer-digest";
pub const LABEL_LAYER_SIZE: &str = "containerd.io/snapshot/modelpack.layer-size";
pub const LABEL_MEDIA_TYPE: &str = "containerd.io/snapshot/modelpack.layer-media-type";
pub const LABEL_FILEPATH: &str = "containerd.io/snapshot/modelpack.filepath";

/// Is this Prepare a model layer we should provide ourselves?
pub fn is_model_prepare(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key(LABEL_REF)
        && labels.contains_key(LABEL_LAYER_DIGEST)
        && labels.contains_key(LABEL_REFERENCE)
}

pub struct ModelFetcher {
    pub client: RegistryClient,
    pub chunk_size: u64,
    /// One model layer materialised at a time: concurrent prepares of the same chainID share the result.
    pub lock: tokio::sync::Mutex<()>,
}

fn label<'a>(labels: &'a BTreeMap<String, String>, k: &str) -> Result<&'a str> {
    labels.get(k).map(String::as_str).ok_or_else(|| {
        SnapError::InvalidArgument(format!("label {k} is required for a model layer"))
    })
}

/// Materialises the layer and commits it; returns the AlreadyExists the protocol expects.
pub async fn prepare_model(
    s: &Snapshots,
    f: &ModelFetcher,
    parent: &str,
    labels: BTreeMap<String, String>,
) -> SnapError {
    match prepare_inner(s, f, parent, labels).await {
        Ok(target) => SnapError::AlreadyExists(target),
        Err(e) => e,
    }
}

async fn prepare_inner(
    s: &Snapshots,
    f: &ModelFetcher,
    parent: &str,
    labels: BTreeMap<String, String>,
) -> Result<String> {
    let target = label(&labels, LABEL_REF)?.to_string();
    let _g = f.lock.lock().await;
    if s.meta.get(&target)?.is_some() {
        return Ok(target);
    }
    if !parent.is_empty() && s.meta.get(parent)?.is_none() {
        return Err(SnapError::NotFound(format!("parent {parent}")));
    }
    let digest: Digest = label(&labels, LABEL_LAYER_DIGEST)?
        .parse()
        .map_err(|e: modelpack_common::Error| SnapError::InvalidArgument(e.to_string()))?;
    let reference: Reference = label(&labels, LABEL_REFERENCE)?
        .parse()
        .map_err(|e: modelpack_common::Error| SnapError::InvalidArgument(e.to_string()))?;
    let media_type = labels
        .get(LABEL_MEDIA_TYPE)
        .cloned()
        .unwrap_or_else(|| "application/vnd.cncf.model.weight.v1.raw".into());
    let filepath = label(&labels, LABEL_FILEPATH)?.to_string();
    let blob = s.blob_path(digest.hex());
    let size = if blob.exists() {
        // Stored blobs were verified when they arrived; reuse (node-level dedup).
        if s.meta.chunks(digest.hex())?.is_none() {
            let (b2, cs) = (blob.clone(), f.chunk_size);
            let (_, chunks) = tokio::task::spawn_blocking(move || index_file(&b2, cs))
                .await
                .map_err(|e| SnapError::Internal(e.to_string()))??;
            s.meta.put_chunks(digest.hex(), &chunks)?;
        }
        std::fs::metadata(&blob)?.len()
    } else {
        let size = match labels.get(LABEL_LAYER_SIZE).and_then(|v| v.parse().ok()) {
            Some(n) => n,
            None => f
                .client
                .blob_exists(&reference, &digest)
                .await?
                .ok_or_else(|| SnapError::NotFound(format!("blob {digest} in {reference}")))?,
        };
        let partial = s.root.join("tmp").join(format!("{}.partial", digest.hex()));
        f.client
            .pull_blob_to_file(&reference, &digest, size, &partial, &())
            .await?;
        let (p2, cs) = (partial.clone(), f.chunk_size);
        let (whole, chunks) = tokio::task::spawn_blocking(move || index_file(&p2, cs))
            .await
            .map_err(|e| SnapError::Internal(e.to_string()))??;
        if whole != digest {
            let _ = std::fs::remove_file(&partial);
            return Err(SnapError::Model(modelpack_common::Error::DigestMismatch {
                what: format!("layer {digest} from {reference}"),
                expected: digest.to_string(),
                actual: whole.to_string(),
            }));
        }
        s.meta.put_chunks(digest.hex(), &chunks)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o444))?;
        std::fs::rename(&partial, &blob)?;
        size
    };
    let mut desc = Descriptor::new(media_type.clone(), digest.clone(), size);
    desc.annotations
        .insert("org.cncf.model.filepath".into(), filepath.clone());
    let id = s.meta.update(|t| t.next_id())?;
    let fs = s.fs(id);
    std::fs::create_dir_all(&fs)?;
    let placed = (|| -> Result<Vec<ModelFile>> {
        if extract::layer_format(&desc) == LayerFormat::Raw {
            let rel = extract::safe_relative_path(&extract::layer_name(&desc), &filepath)?;
            link_file(&blob, &fs.join(&rel))?;
            Ok(vec![ModelFile {
                filepath: rel.display().to_string(),
                blob: digest.hex().to_string(),
                offset: 0,
                size,
                mode: 0o444,
                media_type: media_type.clone(),
            }])
        } else {
            extract::extract_layer(&desc, &blob, &fs, &ExtractOptions::default())?;
            let mut files = Vec::new();
            for e in walkdir::WalkDir::new(&fs)
                .min_depth(1)
                .into_iter()
                .flatten()
            {
                if e.file_type().is_file() {
                    let rel = e
                        .path()
                        .strip_prefix(&fs)
                        .unwrap_or(e.path())
                        .display()
                        .to_string();
                    files.push(ModelFile {
                        filepath: rel,
                        blob: digest.hex().to_string(),
                        offset: 0,
                        size: e.metadata().map(|m| m.len()).unwrap_or(0),
                        mode: 0o444,
                        media_type: media_type.clone(),
                    });
                }
            }
            Ok(files)
        }
    })();
    let files = match placed {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(s.dir(id));
            return Err(e);
        }
    };
    let mut keep: BTreeMap<String, String> = labels
        .into_iter()
        .filter(|(k, _)| k == LABEL_REF || k.starts_with("containerd.io/snapshot/"))
        .collect();
    keep.insert(
        "containerd.io/snapshot/remote".into(),
        "remote snapshot".into(),
    );
    if let Err(e) = s.commit_prepared(model_record(id, &target, parent, keep, files)) {
        let _ = std::fs::remove_dir_all(s.dir(id));
        if matches!(e, SnapError::AlreadyExists(_)) {
            return Ok(target);
        }
        return Err(e);
    }
    let manifest = s
        .meta
        .get(&target)?
        .and_then(|r| r.labels.get(LABEL_MANIFEST).cloned())
        .unwrap_or_default();
    tracing::info!(target = %target, digest = %digest, path = %filepath, manifest = %manifest, "model layer committed");
    Ok(target)
}

#[cfg(test)]
mod tests;
