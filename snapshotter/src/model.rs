//! Model layers through the remote-snapshot protocol: a `Prepare` carrying
//! `containerd.io/snapshot.ref=<chainID>` and our `containerd.io/snapshot/modelpack.*`
//! labels makes us fetch the layer ourselves into the node-level
//! content-addressed store (verified; a blob already there is reused, so a
//! file shared by two models is stored once), lay it out at its filepath
//! (a hardlink to the blob for raw layers, a safe extract for tar layers),
//! commit it under the chainID and answer
//! ALREADY_EXISTS — containerd never downloads or unpacks it.
//!
//! containerd prepares a chain one layer after another (each needs its
//! parent committed), so the first eager Prepare of a model also starts the
//! download of the model's other layers in the background (bounded by the
//! transport's concurrency): the later Prepares find their blob fetched or
//! wait on its one download. Locks are per chain ID and per blob, never global.

use modelpack_common::error::IoContext;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use modelpack_common::extract::{self, ExtractOptions};
use modelpack_common::labels::{LABEL_CHUNK_INDEX, ModelLayerLabels};
use modelpack_common::manifest::{Descriptor, Manifest};
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
    /// ModelPack manifests met through CRI's remote-snapshot labels.
    pub cri: crate::cri::CriViews,
    /// The lazy path (None: every model layer is fetched at Prepare).
    pub lazy: Option<std::sync::Arc<crate::lazy::LazyViews>>,
    /// Concurrent Prepares of one chain ID wait for the first and share its result.
    pub chains: KeyedLocks,
    /// One download per blob: a Prepare and a background fetch of the same blob wait on each other.
    pub blobs: KeyedLocks,
    /// Manifests whose layers are being fetched in the background.
    pub prefetching: std::sync::Mutex<HashSet<String>>,
    /// Models from the registries it lists must be signed (`[signing]`).
    pub policy: Option<std::sync::Arc<modelpack_common::signing::policy::NodePolicy>>,
    /// Manifests fetched by the digest a Prepare names, to check its labels against.
    pub manifests: Manifests,
}

/// Manifests by digest (fetched by digest, so verified), kept while a
/// model's layers Prepare one after another.
#[derive(Default)]
pub struct Manifests(std::sync::Mutex<HashMap<modelpack_common::Digest, Arc<Manifest>>>);

impl Manifests {
    async fn get(
        &self,
        client: &RegistryClient,
        reference: &modelpack_common::Reference,
        digest: &modelpack_common::Digest,
    ) -> Result<Arc<Manifest>> {
        if let Some(m) = self.0.lock().unwrap().get(digest) {
            return Ok(m.clone());
        }
        let pinned = reference.with_digest(digest.clone());
        let f = client.get_manifest(&pinned).await?;
        let m = Arc::new(Manifest::parse(&f.bytes, &format!("manifest of {pinned}"))?);
        let mut cache = self.0.lock().unwrap();
        if cache.len() > 64 {
            cache.clear();
        }
        cache.insert(digest.clone(), m.clone());
        Ok(m)
    }
}

/// Async locks by name, created on first use and dropped once nobody holds them.
#[derive(Default)]
pub struct KeyedLocks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.0.lock().unwrap();
            // Only the map holds these: no one has or waits for them.
            map.retain(|_, m| Arc::strong_count(m) > 1);
            map.entry(key.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }
}

/// Refuses a model the node's signing policy does not accept; returns the
/// manifest the signature verified (`None`: no policy for its registry).
pub async fn check_policy(
    policy: Option<&modelpack_common::signing::policy::NodePolicy>,
    client: &RegistryClient,
    parsed: &ModelLayerLabels,
) -> Result<Option<Arc<Manifest>>> {
    let Some(policy) = policy else {
        return Ok(None);
    };
    if policy.keys_for(&parsed.reference.registry).is_none() {
        return Ok(None);
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
    s: &Arc<Snapshots>,
    f: &Arc<ModelFetcher>,
    parent: &str,
    labels: BTreeMap<String, String>,
) -> SnapError {
    match prepare_inner(s, f, parent, labels).await {
        Ok(target) => SnapError::AlreadyExists(target),
        Err(e) => e,
    }
}

async fn prepare_inner(
    s: &Arc<Snapshots>,
    f: &Arc<ModelFetcher>,
    parent: &str,
    labels: BTreeMap<String, String>,
) -> Result<String> {
    // Labels are untrusted: every value is validated and the chain ID is
    // recomputed from the parent and the diffId before anything is looked up.
    let parsed = ModelLayerLabels::parse(&labels, parent)
        .map_err(|e| SnapError::InvalidArgument(e.to_string()))?;
    let target = parsed.chain_id.to_string();
    let _g = f.chains.lock(&target).await;
    if s.meta.get(&target)?.is_some() {
        return Ok(target);
    }
    if !parent.is_empty() && s.meta.get(parent)?.is_none() {
        return Err(SnapError::NotFound(format!("parent {parent}")));
    }
    let verified = check_policy(f.policy.as_deref(), &f.client, &parsed).await?;
    // The signature covers the manifest, not the labels: the layer served
    // (eagerly or lazily) must be one of the manifest's, at its path, or a
    // signed model's digest would vouch for any blob at any path. Without a
    // manifest label (and so without a policy) there is nothing to check against.
    if let Some(md) = &parsed.manifest_digest {
        let manifest = match verified {
            Some(m) => m,
            None => f.manifests.get(&f.client, &parsed.reference, md).await?,
        };
        parsed.layer_in(&manifest, md)?;
    }
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
    if let Some(manifest) = &parsed.manifest_digest {
        prefetch_siblings(s, f, &reference, manifest, &digest);
    }
    let size = fetch_blob(s, f, &reference, &digest, parsed.layer_size).await?;
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

/// Puts blob `digest` into the node store (verified)
/// unless it is there; returns its size. One download per blob at a time:
/// whoever comes second finds it stored, or fetches again if the first failed.
async fn fetch_blob(
    s: &Snapshots,
    f: &ModelFetcher,
    reference: &modelpack_common::Reference,
    digest: &modelpack_common::Digest,
    size: u64,
) -> Result<u64> {
    let _one = f.blobs.lock(digest.hex()).await;
    let _in_flight = s.in_flight(digest.hex());
    let blob = s.blob_path(digest.hex());
    if blob.exists() {
        // Stored blobs were verified when they arrived; reuse (node-level dedup).
        return Ok(std::fs::metadata(&blob).ctx("stat", &blob)?.len());
    }
    // One pass, one hash per byte: the download is hashed as it is written
    // and the ingest verifies size and digest before the rename. (An eager
    // layer needs no chunk digests: lazy reads use the model's own chunk
    // index, and a whole verified blob is served as it is.)
    let source = RegistryBlob::new(f.client.clone(), reference.clone(), digest.clone(), size);
    let mut ingest = s.cas.ingest(None)?;
    let retries = f.client.options().retries;
    // The task receives; the ingest's writes and hash run on threads of their own.
    ingest.fill_from(&source, retries, &|_| {}).await?;
    let done = ingest.commit(Some(digest), Some(size))?;
    Ok(done.size)
}

/// Starts fetching the other layers of `manifest` (once per manifest at a
/// time), so containerd's one-by-one Prepares of the chain overlap their
/// downloads. The manifest is fetched by digest, so its bytes are verified;
/// every blob is verified by [`fetch_blob`]. Failures only cost the head
/// start: each Prepare fetches its own layer if it is still missing.
fn prefetch_siblings(
    s: &Arc<Snapshots>,
    f: &Arc<ModelFetcher>,
    reference: &modelpack_common::Reference,
    manifest: &modelpack_common::Digest,
    this_layer: &modelpack_common::Digest,
) {
    if !f.prefetching.lock().unwrap().insert(manifest.to_string()) {
        return;
    }
    let (s, f, key) = (s.clone(), f.clone(), manifest.to_string());
    let pinned = reference.with_digest(manifest.clone());
    let this_layer = this_layer.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        let result = async {
            let fetched = f.client.get_manifest(&pinned).await?;
            let m = modelpack_common::manifest::Manifest::parse(
                &fetched.bytes,
                &format!("manifest of {pinned}"),
            )?;
            let mut seen = HashSet::from([this_layer.clone()]);
            let layers: Vec<_> = m
                .layers
                .into_iter()
                .filter(|l| seen.insert(l.digest.clone()))
                .filter(|l| !s.blob_path(l.digest.hex()).exists())
                .collect();
            let concurrency = f.client.options().concurrency.max(1);
            futures::stream::iter(layers)
                .for_each_concurrent(concurrency, |l| {
                    let (s, f, pinned) = (&s, &f, &pinned);
                    async move {
                        if let Err(e) = fetch_blob(s, f, pinned, &l.digest, l.size).await {
                            tracing::warn!(digest = %l.digest, "background layer fetch failed (its Prepare fetches it): {e}");
                        }
                    }
                })
                .await;
            Ok::<_, SnapError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(manifest = %pinned, "background fetch of the model's layers not started: {e}");
        }
        f.prefetching.lock().unwrap().remove(&key);
    });
}

#[cfg(test)]
mod tests;
