//! Lazy model layers on the node: a model layer whose bound chunk index the
//! snapshotter can fetch is committed at `Prepare` without fetching its
//! blob, and a View over a chain with such layers is a `modelpack-fs` FUSE
//! mount of the whole model — each read fetches the chunks it needs through
//! the registry client (credentials and `hosts.toml` mirrors of the node),
//! verifies them against the index, and fills the node store's sparse blob.
//!
//! Trust: only an index **bound** to the model (named by the layer
//! descriptor's `org.modelpack.chunks.digest` in the manifest whose digest
//! the Prepare names) is used, and the manifest is fetched by that digest
//! and verified. Anything else — no manifest digest, no bound index, a
//! compressed layer — takes the eager path. The whole-blob digest is still
//! checked when the last chunk arrives.
//!
//! One process serves every lazy view, with one [`SparseBlob`] per blob
//! however many views and models share it. After a restart, every lazy
//! view is mounted again at its directory (stale mounts are detached
//! first); chunks already present are re-hashed from disk on first read,
//! never fetched again. Once every blob of a chain is complete, a new View
//! uses the plain hardlinked layout (no FUSE).

use modelpack_common::error::IoContext;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelpack_common::cas::{Cas, SparseBlob};
use modelpack_common::chunkindex::{IndexFormat, LayerIndex, MAX_INDEX_BLOB};
use modelpack_common::digest::Digest;
use modelpack_common::labels::{LABEL_CHUNK_INDEX, LABEL_REFERENCE, ModelLayerLabels};
use modelpack_common::manifest::Manifest;
use modelpack_common::media;
use modelpack_common::reference::Reference;
use modelpack_common::registry::{RegistryBlob, RegistryClient};
use modelpack_fs::{Backing, FsFile, FsOptions, ModelFs};

use crate::error::{Result, SnapError};
use crate::meta::{ModelFile, Record};

/// The lazy path's settings (from the Nydus-shaped config, see `config.rs`).
#[derive(Debug, Clone)]
pub struct LazyOptions {
    pub enable: bool,
    /// How long a read waits for a missing chunk before EIO.
    pub read_timeout: Duration,
    pub prefetch: bool,
    /// Blobs prefetched at once.
    pub prefetch_threads: usize,
    /// Prefetch bytes per second over all blobs (0: unlimited).
    pub prefetch_bandwidth: u64,
}

impl Default for LazyOptions {
    fn default() -> Self {
        LazyOptions {
            enable: true,
            read_timeout: Duration::from_secs(60),
            prefetch: true,
            prefetch_threads: 2,
            prefetch_bandwidth: 0,
        }
    }
}

/// Counters `stats` reports.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewStats {
    pub id: u64,
    pub reference: String,
    pub path: PathBuf,
    pub reads: u64,
    pub bytes_served: u64,
    pub read_errors: u64,
    pub lazy_blobs: usize,
    pub complete_blobs: usize,
    pub present_chunks: usize,
    pub chunks: usize,
    /// Ranged reads made for the view's blobs, bytes they brought, chunks refused.
    pub fetches: u64,
    pub bytes_fetched: u64,
    pub chunks_refused: u64,
    /// Fetch latency percentiles (ms, histogram bucket bounds).
    pub fetch_p50_ms: Option<u64>,
    pub fetch_p90_ms: Option<u64>,
    pub fetch_p99_ms: Option<u64>,
}

struct MountedView {
    mounted: modelpack_fs::Mounted,
    reference: String,
    files: Vec<FsFile>,
    /// Retries until complete; aborted when the view goes.
    prefetch: Option<tokio::task::JoinHandle<()>>,
}

pub struct LazyViews {
    pub opts: LazyOptions,
    cas: Cas,
    client: RegistryClient,
    rt: tokio::runtime::Handle,
    blobs: Mutex<HashMap<String, Arc<SparseBlob>>>,
    views: Mutex<HashMap<u64, MountedView>>,
    /// Verified manifests by digest (several layers of one model Prepare in a row).
    manifests: Mutex<HashMap<Digest, Arc<Manifest>>>,
}

/// What a lazy Prepare commits.
pub struct LazyLayer {
    pub index: Digest,
    pub files: Vec<ModelFile>,
}

impl LazyViews {
    pub fn new(
        opts: LazyOptions,
        cas: Cas,
        client: RegistryClient,
        rt: tokio::runtime::Handle,
    ) -> LazyViews {
        LazyViews {
            opts,
            cas,
            client,
            rt,
            blobs: Mutex::new(HashMap::new()),
            views: Mutex::new(HashMap::new()),
            manifests: Mutex::new(HashMap::new()),
        }
    }

    async fn manifest(&self, reference: &Reference, digest: &Digest) -> Result<Arc<Manifest>> {
        if let Some(m) = self.manifests.lock().unwrap().get(digest) {
            return Ok(m.clone());
        }
        // A digest reference: the client verifies the bytes against it.
        let f = self
            .client
            .get_manifest(&reference.with_digest(digest.clone()))
            .await?;
        let m = Arc::new(Manifest::parse(&f.bytes, &format!("manifest {digest}"))?);
        let mut cache = self.manifests.lock().unwrap();
        if cache.len() > 64 {
            cache.clear();
        }
        cache.insert(digest.clone(), m.clone());
        Ok(m)
    }

    /// The bound index of the Prepare's layer, stored in the node store, or
    /// `None` when the layer has to be fetched eagerly (and why, logged).
    pub async fn bound_layer(&self, parsed: &ModelLayerLabels) -> Result<Option<LazyLayer>> {
        let why_not = |reason: &str| {
            tracing::debug!(layer = %parsed.layer_digest, "eager: {reason}");
            Ok(None)
        };
        if !self.opts.enable {
            return why_not("lazy attach is disabled");
        }
        let Some(format) = IndexFormat::for_media_type(&parsed.media_type) else {
            return why_not("compressed layer");
        };
        let Some(manifest_digest) = &parsed.manifest_digest else {
            return why_not("no manifest digest label");
        };
        let manifest = self.manifest(&parsed.reference, manifest_digest).await?;
        // Also checked by the Prepare before either path; this is the
        // descriptor whose bound index the lazy view trusts.
        let layer = parsed.layer_in(&manifest, manifest_digest)?;
        let Some(bound) = layer
            .annotations
            .get(media::ANNOTATION_CHUNKS_DIGEST)
            .and_then(|s| s.parse::<Digest>().ok())
        else {
            return why_not("no bound chunk index");
        };
        let bytes = match self.cas.has(&bound) {
            true => {
                std::fs::read(self.cas.blob_path(&bound)).ctx("read", self.cas.blob_path(&bound))?
            }
            false => {
                let what = format!("chunk index {bound} of {}", parsed.reference);
                let bytes = self
                    .client
                    .pull_small_blob(
                        &parsed.reference,
                        &bound,
                        MAX_INDEX_BLOB,
                        MAX_INDEX_BLOB,
                        &what,
                    )
                    .await?;
                let mut ingest = self.cas.ingest(None)?;
                std::io::Write::write_all(&mut ingest, &bytes)
                    .map_err(|e| SnapError::Internal(format!("store {what}: {e}")))?;
                ingest.commit(Some(&bound), Some(bytes.len() as u64))?;
                bytes
            }
        };
        let index = LayerIndex::parse(&bytes, &bound.to_string())?;
        index.describes(layer)?;
        let files = layer_files(parsed, &index, format)?;
        Ok(Some(LazyLayer {
            index: bound,
            files,
        }))
    }

    fn sparse(
        &self,
        blob: &str,
        size: u64,
        index: &Digest,
        reference: &str,
    ) -> Result<Arc<SparseBlob>> {
        if let Some(b) = self.blobs.lock().unwrap().get(blob) {
            return Ok(b.clone());
        }
        let digest: Digest = format!("sha256:{blob}").parse()?;
        let bytes =
            std::fs::read(self.cas.blob_path(index)).ctx("read", self.cas.blob_path(index))?;
        let idx = LayerIndex::parse(&bytes, &index.to_string())?;
        let reference: Reference = reference.parse()?;
        let source = Arc::new(RegistryBlob::new(
            self.client.clone(),
            reference,
            digest,
            size,
        ));
        let b = Arc::new(SparseBlob::open(&self.cas, idx.chunk_index(), source)?);
        self.blobs
            .lock()
            .unwrap()
            .entry(blob.to_string())
            .or_insert(b.clone());
        Ok(b)
    }

    /// Does a View over `chain` need FUSE (some lazy blob still incomplete,
    /// or a lazy tar layer, whose files exist only inside its blob)?
    pub fn needs_fuse(&self, chain: &[Record]) -> bool {
        chain.iter().filter(|r| is_lazy(r)).any(|r| {
            r.model.iter().any(|f| {
                f.offset != 0
                    || IndexFormat::for_media_type(&f.media_type) == Some(IndexFormat::Tar)
                    || !format!("sha256:{}", f.blob)
                        .parse::<Digest>()
                        .is_ok_and(|d| self.cas.has(&d))
            })
        })
    }

    /// Mounts the whole model of `chain` (nearest layer wins) at `dir`.
    pub fn mount_view(
        &self,
        id: u64,
        dir: &std::path::Path,
        chain: &[Record],
        layer_fs: &dyn Fn(u64) -> PathBuf,
    ) -> Result<()> {
        let mut by_path: BTreeMap<String, FsFile> = BTreeMap::new();
        let mut reference = String::new();
        for r in chain.iter().rev() {
            for f in &r.model {
                let digest: Digest = format!("sha256:{}", f.blob).parse()?;
                let (backing, offset) = if !is_lazy(r) {
                    // An eager layer: its files are laid out in its own directory.
                    let p = layer_fs(r.id).join(&f.filepath);
                    (
                        Backing::Complete(Arc::new(std::fs::File::open(&p).ctx("open", &p)?)),
                        0,
                    )
                } else if self.cas.has(&digest) {
                    let p = self.cas.blob_path(&digest);
                    (
                        Backing::Complete(Arc::new(std::fs::File::open(&p).ctx("open", &p)?)),
                        f.offset,
                    )
                } else {
                    let index: Digest = r.labels[LABEL_CHUNK_INDEX].parse()?;
                    let rf = r.labels.get(LABEL_REFERENCE).cloned().unwrap_or_default();
                    let size = blob_size(r, f);
                    (
                        Backing::Lazy(self.sparse(&f.blob, size, &index, &rf)?),
                        f.offset,
                    )
                };
                if reference.is_empty() {
                    reference = r.labels.get(LABEL_REFERENCE).cloned().unwrap_or_default();
                }
                by_path.insert(
                    f.filepath.clone(),
                    FsFile {
                        path: PathBuf::from(&f.filepath),
                        backing,
                        offset,
                        size: f.size,
                        mode: f.mode,
                    },
                );
            }
        }
        let files: Vec<FsFile> = by_path.into_values().collect();
        let opts = FsOptions {
            read_timeout: self.opts.read_timeout,
            allow_other: true,
            fsname: format!("modelpack:{reference}"),
            ..FsOptions::default()
        };
        let fs = ModelFs::new(
            files.clone(),
            std::time::SystemTime::UNIX_EPOCH,
            opts,
            self.rt.clone(),
        )
        .map_err(|e| SnapError::Internal(format!("view {id}: {e}")))?;
        detach(dir);
        std::fs::create_dir_all(dir).ctx("create", dir)?;
        let mounted = modelpack_fs::mount(fs, dir).map_err(|e| {
            SnapError::Internal(format!("mount the lazy view at {}: {e}", dir.display()))
        })?;
        let prefetch = self.opts.prefetch.then(|| {
            let files = files.clone();
            let opts = modelpack_fs::Prefetch {
                concurrency: self.opts.prefetch_threads,
                bytes_per_sec: self.opts.prefetch_bandwidth,
                ..modelpack_fs::Prefetch::default()
            };
            self.rt.spawn(async move {
                let n = modelpack_fs::prefetch_until_complete(files, opts).await;
                tracing::info!(view = id, "prefetch: {n} blobs complete");
            })
        });
        tracing::info!(view = id, reference = %reference, files = files.len(), "lazy view mounted");
        self.views.lock().unwrap().insert(
            id,
            MountedView {
                mounted,
                reference,
                files,
                prefetch,
            },
        );
        Ok(())
    }

    /// The one [`SparseBlob`] of `digest` on this node, shared with every
    /// snapshot view and CSI volume that serves it (a sparse file has one
    /// writer, holding its lock).
    pub fn shared_sparse(
        &self,
        digest: &Digest,
        index: &LayerIndex,
        source: Arc<dyn modelpack_common::cas::BlobSource>,
    ) -> modelpack_common::Result<Arc<SparseBlob>> {
        let hex = digest.hex().to_string();
        if let Some(b) = self.blobs.lock().unwrap().get(&hex) {
            return Ok(b.clone());
        }
        let b = Arc::new(SparseBlob::open(&self.cas, index.chunk_index(), source)?);
        Ok(self.blobs.lock().unwrap().entry(hex).or_insert(b).clone())
    }

    /// Closes partial blobs no view reads any more (their locks released).
    pub fn close_unused_sparse(&self) {
        self.blobs
            .lock()
            .unwrap()
            .retain(|_, b| Arc::strong_count(b) > 1);
    }

    /// Is the partial blob `hex` open here (GC must leave its files)?
    pub fn has_sparse(&self, hex: &str) -> bool {
        self.blobs.lock().unwrap().contains_key(hex)
    }

    pub fn unmount_view(&self, id: u64) {
        if let Some(v) = self.views.lock().unwrap().remove(&id) {
            if let Some(p) = &v.prefetch {
                p.abort();
            }
            let dir = v.mounted.dir.clone();
            if let Err(e) = v.mounted.unmount() {
                tracing::warn!(view = id, "unmount {}: {e}", dir.display());
                detach(&dir);
            }
        }
        // Partial blobs no view reads any more are closed (their flock released).
        self.close_unused_sparse();
    }

    pub fn stats(&self) -> Vec<ViewStats> {
        use std::sync::atomic::Ordering::Relaxed;
        let views = self.views.lock().unwrap();
        let mut out: Vec<ViewStats> = views
            .iter()
            .map(|(id, v)| {
                let (complete, lazy, present, chunks) = modelpack_fs::attach::progress(&v.files);
                let f = modelpack_fs::attach::fetch_summary(&v.files);
                let s = &v.mounted.stats;
                ViewStats {
                    id: *id,
                    reference: v.reference.clone(),
                    path: v.mounted.dir.clone(),
                    reads: s.reads.load(Relaxed),
                    bytes_served: s.bytes_served.load(Relaxed),
                    read_errors: s.read_errors.load(Relaxed),
                    lazy_blobs: lazy,
                    complete_blobs: complete,
                    present_chunks: present,
                    chunks,
                    fetches: f.fetches,
                    bytes_fetched: f.bytes,
                    chunks_refused: f.refused,
                    fetch_p50_ms: f.p50_ms,
                    fetch_p90_ms: f.p90_ms,
                    fetch_p99_ms: f.p99_ms,
                }
            })
            .collect();
        out.sort_by_key(|v| v.id);
        out
    }
}

/// Where the running snapshotter publishes [`LazyViews::stats`] (`stats` reads it).
pub fn stats_path(root: &std::path::Path) -> PathBuf {
    root.join("stats.json")
}

/// Rewrites the stats file every second (atomically: temp + rename).
pub async fn publish_stats(views: Arc<LazyViews>, root: PathBuf) {
    let path = stats_path(&root);
    let tmp = root.join("stats.json.tmp");
    loop {
        let body = serde_json::json!({
            "views": views.stats(),
            "updatedAt": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        });
        let bytes = serde_json::to_vec_pretty(&body).expect("stats serialise");
        if std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .is_err()
        {
            tracing::debug!("cannot write {}", path.display());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Was this record committed lazily (by us: the label is stripped from Prepares)?
pub fn is_lazy(r: &Record) -> bool {
    r.labels.contains_key(LABEL_CHUNK_INDEX)
}

/// The size of the blob a lazy file lives in (the layer size label).
fn blob_size(r: &Record, f: &ModelFile) -> u64 {
    r.labels
        .get(modelpack_common::labels::LABEL_LAYER_SIZE)
        .and_then(|s| s.parse().ok())
        .unwrap_or(f.offset + f.size)
}

/// The files a lazily committed layer provides, at their offsets in its blob.
fn layer_files(
    parsed: &ModelLayerLabels,
    index: &LayerIndex,
    format: IndexFormat,
) -> Result<Vec<ModelFile>> {
    let blob = parsed.layer_digest.hex().to_string();
    if format == IndexFormat::Raw {
        let f = modelpack_common::view::raw_layer_file(parsed)?;
        return Ok(vec![ModelFile {
            filepath: f.path.display().to_string(),
            blob,
            offset: 0,
            size: parsed.layer_size,
            mode: f.mode,
            media_type: parsed.media_type.clone(),
        }]);
    }
    index
        .files
        .iter()
        .map(|e| {
            let shown = format!("{} in layer {}", e.path, parsed.layer_digest);
            if e.offset
                .checked_add(e.size)
                .is_none_or(|end| end > parsed.layer_size)
            {
                return Err(SnapError::InvalidArgument(format!(
                    "{shown}: outside the layer"
                )));
            }
            let p = modelpack_common::extract::safe_relative_path(&shown, &e.path)?;
            Ok(ModelFile {
                filepath: p.display().to_string(),
                blob: blob.clone(),
                offset: e.offset,
                size: e.size,
                mode: modelpack_common::view::VIEW_FILE_MODE | (e.mode & 0o111),
                media_type: parsed.media_type.clone(),
            })
        })
        .collect()
}

/// Detaches whatever is mounted at `dir` (a stale FUSE mount of a previous
/// process answers ENOTCONN to everything); nothing mounted is fine.
pub fn detach(dir: &std::path::Path) {
    let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
}
