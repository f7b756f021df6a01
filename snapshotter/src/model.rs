//! Model layers through the remote-snapshot protocol: a `Prepare` carrying
//! `containerd.io/snapshot.ref=<chainID>` and our `containerd.io/snapshot/modelpack.*`
//! labels makes us fetch the layer ourselves into the node-level
//! content-addressed store (verified; a blob already there is reused, so a
//! file shared by two models is stored once), lay it out at its filepath
//! (a hardlink to the blob for raw layers, a safe extract for tar layers),
//! record its chunk digests, commit it under the chainID and answer
//! ALREADY_EXISTS — containerd never downloads or unpacks it.

use modelpack_common::error::IoContext;
use std::collections::BTreeMap;

use modelpack_common::cas::source::copy_source;
use modelpack_common::chunk::index_file;
use modelpack_common::extract::{self, ExtractOptions};
use modelpack_common::labels::{LABEL_CHUNK_INDEX, ModelLayerLabels};
use modelpack_common::manifest::Descriptor;
use modelpack_common::media::LayerFormat;
use modelpack_common::registry::{RegistryBlob, RegistryClient};

use crate::error::{Result, SnapError};
use crate::meta::ModelFile;
use crate::snapshots::{LABEL_REF, Snapshots, link_file, model_record};

/// Is this Prepare a model layer we should provide ourselves?
pub fn is_model_prepare(labels: &BTreeMap<String, String>) -> bool {
    ModelLayerLabels::is_model_prepare(labels)
}

pub struct ModelFetcher {
    pub client: RegistryClient,
    pub chunk_size: u64,
    /// ModelPack manifests met through CRI's remote-snapshot labels.
    pub cri: crate::cri::CriViews,
    /// The lazy path (None: every model layer is fetched at Prepare).
    pub lazy: Option<std::sync::Arc<crate::lazy::LazyViews>>,
    /// One model layer materialised at a time: concurrent prepares of the same chainID share the result.
    pub lock: tokio::sync::Mutex<()>,
    /// Models from the registries it lists must be signed (`[signing]`).
    pub policy: Option<std::sync::Arc<modelpack_common::signing::policy::NodePolicy>>,
}

/// Refuses a model the node's signing policy does not accept.
pub async fn check_policy(
    policy: Option<&modelpack_common::signing::policy::NodePolicy>,
    client: &RegistryClient,
    parsed: &ModelLayerLabels,
) -> Result<()> {
    let Some(policy) = policy else {
        return Ok(());
    };
    if policy.keys_for(&parsed.reference.registry).is_none() {
        return Ok(());
    }
    let Some(manifest) = &parsed.manifest_digest else {
        return Err(SnapError::FailedPrecondition(format!(
            "the node requires signed models from {}: this Prepare names no manifest digest ({} sends it)",
            parsed.reference.registry,
            modelpack_common::labels::LABEL_MANIFEST
        )));
    };
    policy
        .check(client, &parsed.reference, manifest)
        .await
        .map_err(|e| {
            SnapError::FailedPrecondition(format!(
                "{} refused by the node's signing policy: {e}",
                parsed.reference
            ))
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
    // Labels are untrusted: every value is validated and the chain ID is
    // recomputed from the parent and the diffId before anything is looked up.
    let parsed = ModelLayerLabels::parse(&labels, parent)
        .map_err(|e| SnapError::InvalidArgument(e.to_string()))?;
    let target = parsed.chain_id.to_string();
    let _g = f.lock.lock().await;
    if s.meta.get(&target)?.is_some() {
        return Ok(target);
    }
    if !parent.is_empty() && s.meta.get(parent)?.is_none() {
        return Err(SnapError::NotFound(format!("parent {parent}")));
    }
    check_policy(f.policy.as_deref(), &f.client, &parsed).await?;
    let digest = parsed.layer_digest.clone();
    let reference = parsed.reference.clone();
    let media_type = parsed.media_type.clone();
    let filepath = parsed.filepath.clone();
    let blob = s.blob_path(digest.hex());
    let _in_flight = s.in_flight(digest.hex());
    let mut keep: BTreeMap<String, String> = labels
        .into_iter()
        .filter(|(k, _)| k == LABEL_REF || k.starts_with("containerd.io/snapshot/"))
        // Ours to set, never a caller's: it makes a layer lazy.
        .filter(|(k, _)| k != LABEL_CHUNK_INDEX)
        .collect();
    keep.insert(
        "containerd.io/snapshot/remote".into(),
        "remote snapshot".into(),
    );
    if let Some(lazy) = f.lazy.as_ref().filter(|_| !blob.exists())
        && let Some(layer) = lazy.bound_layer(&parsed).await?
    {
        // Committed without fetching: its View is served by the FUSE view.
        keep.insert(LABEL_CHUNK_INDEX.into(), layer.index.to_string());
        let id = s.meta.update(|t| t.next_id())?;
        std::fs::create_dir_all(s.fs(id)).ctx("create", s.fs(id))?;
        if let Err(e) = s.commit_prepared(model_record(id, &target, parent, keep, layer.files)) {
            let _ = std::fs::remove_dir_all(s.dir(id));
            if matches!(e, SnapError::AlreadyExists(_)) {
                return Ok(target);
            }
            return Err(e);
        }
        tracing::info!(target = %target, digest = %digest, path = %filepath, index = %layer.index, "model layer committed lazily");
        return Ok(target);
    }
    let size = if blob.exists() {
        // Stored blobs were verified when they arrived; reuse (node-level dedup).
        if s.meta.chunks(digest.hex())?.is_none() {
            let (b2, cs) = (blob.clone(), f.chunk_size);
            let (_, chunks) = tokio::task::spawn_blocking(move || index_file(&b2, cs))
                .await
                .map_err(|e| SnapError::Internal(e.to_string()))??;
            s.meta.put_chunks(digest.hex(), &chunks)?;
        }
        std::fs::metadata(&blob).ctx("stat", &blob)?.len()
    } else {
        // One pass: the download is hashed whole and in chunks as it is
        // written; the ingest verifies size and digest before the rename.
        let source = RegistryBlob::new(
            f.client.clone(),
            reference.clone(),
            digest.clone(),
            parsed.layer_size,
        );
        let mut ingest = s.cas.ingest(Some(f.chunk_size))?;
        let retries = f.client.options().retries;
        // The ingest writes synchronously into its buffered temp file; the
        // stream itself is async, so this stays on the runtime.
        copy_source(&source, &mut ingest, retries, &|_| {}).await?;
        let done = ingest.commit(Some(&digest), Some(parsed.layer_size))?;
        let chunks = done.chunks.expect("the ingest was asked to chunk");
        s.meta.put_chunks(digest.hex(), &chunks)?;
        done.size
    };
    let mut desc = Descriptor::new(media_type.clone(), digest.clone(), size);
    desc.annotations
        .insert("org.cncf.model.filepath".into(), filepath.clone());
    let id = s.meta.update(|t| t.next_id())?;
    let fs = s.fs(id);
    std::fs::create_dir_all(&fs).ctx("create", &fs)?;
    let placed = (|| -> Result<Vec<ModelFile>> {
        if extract::layer_format(&desc) == LayerFormat::Raw {
            let file = modelpack_common::view::raw_layer_file(&parsed)?;
            link_file(&blob, &fs.join(&file.path))?;
            Ok(vec![ModelFile {
                filepath: file.path.display().to_string(),
                blob: file.blob.hex().to_string(),
                offset: file.offset,
                size,
                mode: file.mode,
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
        .and_then(|r| {
            r.labels
                .get(modelpack_common::labels::LABEL_MANIFEST)
                .cloned()
        })
        .unwrap_or_default();
    tracing::info!(target = %target, digest = %digest, path = %filepath, manifest = %manifest, "model layer committed");
    Ok(target)
}

#[cfg(test)]
mod tests;
