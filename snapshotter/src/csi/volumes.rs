//! Published volumes: each pod's target path is a read-only bind mount of
//! one shared view of its model — a `modelpack-fs` FUSE mount under
//! `ROOT/csi/views/<key>` keyed by the model digest and the volume's file
//! filter — so ten pods of one model share one view, one set of sparse
//! blobs and one copy on disk. Layers with a chunk index bound to the model
//! are served lazily (every chunk verified); the others are fetched whole
//! and verified before the view exists.
//!
//! State (`ROOT/csi/volumes.json`, written atomically) lists the published
//! targets; after a restart each view is mounted again from the node store
//! (no registry needed for what is present) and each target bound again.
//! The snapshotter's GC asks [`Volumes::blobs_in_use`] what to keep.

use modelpack_common::error::IoContext;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use modelpack_common::cas::BlobSource;
use modelpack_common::credentials::{Credential, CredentialOptions, CredentialStore};
use modelpack_common::digest::Digest;
use modelpack_common::lazy::{self, Attachable, LayerSource, LazyPolicy};
use modelpack_common::reference::Reference;
use modelpack_common::registry::{RegistryBlob, RegistryClient, TransportOptions};
use modelpack_common::store::Store;
use modelpack_fs::{Backing, FsFile, FsOptions, ModelFs};
use serde::{Deserialize, Serialize};

use super::request::{Publish, matcher};
use crate::lazy::LazyViews;
use crate::model::KeyedLocks;
use crate::snapshots::Snapshots;

/// Node-level settings of the CSI service.
#[derive(Debug, Clone)]
pub struct CsiOptions {
    /// The driver name pods and the `CSIDriver` object use.
    pub driver_name: String,
    /// This node's name (`NodeGetInfo`), usually the Kubernetes node name.
    pub node_id: String,
}

/// Why a publish failed, as the CSI codes kubelet acts on.
#[derive(Debug)]
pub enum VolumeError {
    Invalid(String),
    NotFound(String),
    PermissionDenied(String),
    /// Try again: the registry is down or a transfer failed.
    Unavailable(String),
    AlreadyExists(String),
    /// Refused by the node's signing policy.
    FailedPrecondition(String),
    Internal(String),
}

/// By the failure's kind: what kubelet should not retry unchanged
/// (a bad reference, a refused artifact) is InvalidArgument, what may pass
/// later (registry down, bytes corrupt in transit) Unavailable.
impl From<modelpack_common::Error> for VolumeError {
    fn from(e: modelpack_common::Error) -> Self {
        use modelpack_common::ErrorKind as K;
        let msg = e.to_string();
        match e.kind() {
            K::InvalidArgument | K::Refused | K::TooLarge => VolumeError::Invalid(msg),
            K::NotFound => VolumeError::NotFound(msg),
            K::PermissionDenied => VolumeError::PermissionDenied(msg),
            K::Unavailable | K::Corrupt | K::Cancelled => VolumeError::Unavailable(msg),
            K::Internal => VolumeError::Internal(msg),
        }
    }
}

impl From<std::io::Error> for VolumeError {
    fn from(e: std::io::Error) -> Self {
        VolumeError::Internal(e.to_string())
    }
}

type VResult<T> = std::result::Result<T, VolumeError>;

/// A failed signing-policy check: refused (FailedPrecondition: kubelet's
/// retries will not change the verdict until the model is signed), or not
/// checkable now (registry down, credentials refused: by their kind).
fn policy_error(r: &Reference, e: modelpack_common::Error) -> VolumeError {
    use modelpack_common::ErrorKind as K;
    match e.kind() {
        K::Unavailable | K::PermissionDenied | K::NotFound | K::Cancelled => e.into(),
        _ => VolumeError::FailedPrecondition(format!(
            "{r} refused by the node's signing policy: {e}"
        )),
    }
}

/// One published target, as recorded on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Volume {
    volume_id: String,
    reference: String,
    digest: Digest,
    view: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    include: Vec<String>,
    prefetch: bool,
    /// Published with a pull secret (never the secret itself: that is kept
    /// only in memory, and comes back with kubelet's next republish).
    #[serde(default)]
    secret: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// By target path.
    volumes: BTreeMap<PathBuf, Volume>,
}

struct ServedView {
    mounted: modelpack_fs::Mounted,
    files: Vec<FsFile>,
    prefetch: Option<tokio::task::JoinHandle<()>>,
    /// What its lazy layers fetch with.
    client: ClientSlot,
}

/// The registry client a view's lazy layers fetch with, replaceable. A pull
/// secret is never written to disk, so a restarted node agent serves a
/// secret-published volume with the node's credentials until kubelet
/// republishes it (the `CSIDriver` sets `requiresRepublish`, and kubelet
/// sends the secret with every call); that republish puts the secret's
/// credential back here for the chunks not fetched yet.
type ClientSlot = Arc<std::sync::RwLock<RegistryClient>>;

/// A lazy layer's blob in its registry, through the view's [`ClientSlot`].
struct SlotBlob {
    slot: ClientSlot,
    reference: Reference,
    digest: Digest,
    size: u64,
}

impl BlobSource for SlotBlob {
    fn digest(&self) -> &Digest {
        &self.digest
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn describe(&self) -> String {
        format!("blob {} from {}", self.digest, self.reference)
    }

    fn read_range(
        &self,
        offset: u64,
        len: u64,
    ) -> futures::future::BoxFuture<'_, modelpack_common::Result<modelpack_common::cas::ByteStream>>
    {
        let client = self.slot.read().unwrap().clone();
        Box::pin(async move {
            RegistryBlob::new(
                client,
                self.reference.clone(),
                self.digest.clone(),
                self.size,
            )
            .read_range(offset, len)
            .await
        })
    }
}

pub struct Volumes {
    pub opts: CsiOptions,
    dir: PathBuf,
    store: Store,
    snaps: Arc<Snapshots>,
    lazy: Arc<LazyViews>,
    transport: TransportOptions,
    node_client: RegistryClient,
    /// The recorded volumes. Held only for short, non-blocking steps (never
    /// across a fetch): the long work of a publish is serialised per target,
    /// per model and per view by `locks`, so one big download does not hold
    /// up publishes and unpublishes of other models.
    state: tokio::sync::Mutex<State>,
    /// Keyed async locks, always taken in this order: `target`, `ref`,
    /// `digest`, `view` (unpublish skips `ref`), so no two calls wait on
    /// each other in a cycle.
    locks: KeyedLocks,
    /// Publishes in flight, and whether a GC came meanwhile (see `during_gc`).
    gc: Mutex<GcHold>,
    views: Mutex<HashMap<String, ServedView>>,
    policy: Option<Arc<modelpack_common::signing::policy::NodePolicy>>,
}

/// Publishes that may be storing blobs GC does not know of yet, and a GC
/// that was put off because of them.
#[derive(Debug, Default)]
struct GcHold {
    publishes: usize,
    pending: bool,
}

/// A publish in flight: GC waits for the last one to end (see
/// `during_gc`), which then runs the GC that was put off.
struct InFlight<'a> {
    v: &'a Volumes,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let run = {
            let mut hold = self.v.gc.lock().unwrap();
            hold.publishes -= 1;
            hold.publishes == 0 && std::mem::take(&mut hold.pending)
        };
        if run && let Ok(rt) = tokio::runtime::Handle::try_current() {
            let snaps = self.v.snaps.clone();
            rt.spawn_blocking(move || {
                if let Err(e) = snaps.cleanup() {
                    tracing::warn!("GC put off by a publish: {e}");
                }
            });
        }
    }
}

/// Most bytes of the state file we read (it is ours; bounded all the same).
const MAX_STATE: u64 = 64 << 20;

impl Volumes {
    pub fn open(
        opts: CsiOptions,
        root: &Path,
        snaps: Arc<Snapshots>,
        lazy: Arc<LazyViews>,
        transport: TransportOptions,
        node_client: RegistryClient,
        policy: Option<Arc<modelpack_common::signing::policy::NodePolicy>>,
    ) -> VResult<Volumes> {
        let dir = root.join("csi");
        std::fs::create_dir_all(dir.join("views")).ctx("create", dir.join("views"))?;
        let store = Store::open(root)?;
        let state = match std::fs::metadata(dir.join("volumes.json")) {
            Ok(m) if m.len() <= MAX_STATE => {
                let bytes = std::fs::read(dir.join("volumes.json"))
                    .ctx("read", dir.join("volumes.json"))?;
                serde_json::from_slice(&bytes).map_err(|e| {
                    VolumeError::Internal(format!("{}: {e}", dir.join("volumes.json").display()))
                })?
            }
            Ok(_) => return Err(VolumeError::Internal("volumes.json is oversize".into())),
            Err(_) => State::default(),
        };
        Ok(Volumes {
            opts,
            dir,
            store,
            snaps,
            lazy,
            transport,
            node_client,
            state: tokio::sync::Mutex::new(state),
            locks: KeyedLocks::default(),
            gc: Mutex::new(GcHold::default()),
            views: Mutex::new(HashMap::new()),
            policy,
        })
    }

    fn save(&self, state: &State) -> VResult<()> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        modelpack_common::store::write_atomic(
            &self.dir.join("volumes.json"),
            &bytes,
            &self.store.tmp_dir(),
        )?;
        Ok(())
    }

    fn view_dir(&self, key: &str) -> PathBuf {
        self.dir.join("views").join(key)
    }

    /// The view key: the model digest and the file filter.
    fn view_key(digest: &Digest, include: &[String]) -> String {
        let mut s = digest.to_string();
        for g in include {
            s.push('\n');
            s.push_str(g);
        }
        Digest::of(s.as_bytes()).hex()[..32].to_string()
    }

    fn client_for(&self, cred: Option<Credential>) -> VResult<RegistryClient> {
        match cred {
            None => Ok(self.node_client.clone()),
            Some(c) => Ok(RegistryClient::new(
                self.transport.clone(),
                Arc::new(CredentialStore::new(CredentialOptions {
                    explicit: Some(c),
                    ..Default::default()
                })),
            )?),
        }
    }

    /// Marks a publish in flight (GC is put off until the last one ends).
    /// Waits while a GC runs: GC is a short scan, and must not see a blob
    /// of a publish that started after it listed what to keep.
    fn in_flight(&self) -> InFlight<'_> {
        self.gc.lock().unwrap().publishes += 1;
        InFlight { v: self }
    }

    /// NodePublishVolume: the model's view (shared), bound read-only at the target.
    pub async fn publish(&self, p: Publish, cred: Option<Credential>) -> VResult<()> {
        let _target = self
            .locks
            .lock(&format!("target\n{}", p.target.display()))
            .await;
        let recorded = self.state.lock().await.volumes.get(&p.target).cloned();
        if let Some(v) = &recorded {
            if v.volume_id != p.volume_id {
                return Err(VolumeError::AlreadyExists(format!(
                    "{} is already the target of volume {}",
                    p.target.display(),
                    v.volume_id
                )));
            }
            let same = v.path == p.path && v.include == p.include;
            if !same {
                return Err(VolumeError::AlreadyExists(format!(
                    "volume {} is published at {} with other attributes",
                    p.volume_id,
                    p.target.display()
                )));
            }
            // Repeated call (kubelet's retries and republishes): fine once the
            // bind is in place; a pull secret in it is the one to fetch with.
            if self.is_served(&p.target, v) {
                if cred.is_some() {
                    let client = self.client_for(cred)?;
                    if let Some(view) = self.views.lock().unwrap().get(&v.view) {
                        *view.client.write().unwrap() = client;
                    }
                }
                return Ok(());
            }
            // Recorded but not bound (a dead mount): bound again on top of
            // it, so a container's copy of the mount sees the new view.
        }
        let _in_flight = self.in_flight();
        self.publish_new(&p, cred).await
    }

    /// A publish under its target's lock: the model opened (one publish of a
    /// reference at a time), its view served and bound, the volume recorded.
    async fn publish_new(&self, p: &Publish, cred: Option<Credential>) -> VResult<()> {
        let secret = cred.is_some();
        let client = self.client_for(cred)?;
        let _model = self.locks.lock(&format!("ref\n{}", p.reference)).await;
        // The policy first: a refused model leaves nothing in the node store.
        let reference = self.check_policy(&client, &p.reference).await?;
        let att = self.open_model(&client, &reference).await?;
        let digest = att.descriptor.digest.clone();
        let key = Self::view_key(&digest, &p.include);
        let _digest = self.locks.lock(&format!("digest\n{digest}")).await;
        let _view = self.locks.lock(&format!("view\n{key}")).await;
        let prefetch = p.prefetch.unwrap_or(self.lazy.opts.prefetch);
        let result = self
            .serve_and_bind(p, &key, att, &client, prefetch, secret)
            .await;
        let mut state = self.state.lock().await;
        if let Err(e) = result {
            // Nothing of a failed publish stays: not its view (unless another
            // volume uses it), not the model's record.
            self.release_if_unused(&state, &key);
            self.forget_if_unused(&state, &p.reference, &digest);
            return Err(e);
        }
        state.volumes.insert(
            p.target.clone(),
            Volume {
                volume_id: p.volume_id.clone(),
                reference: p.reference.to_string(),
                digest,
                view: key,
                path: p.path.clone(),
                include: p.include.clone(),
                prefetch,
                secret,
            },
        );
        if let Err(e) = self.save(&state) {
            // Not recorded: not published (kubelet retries).
            let v = state.volumes.remove(&p.target).expect("just inserted");
            unbind(&p.target);
            self.release_if_unused(&state, &v.view);
            return Err(e);
        }
        drop(state);
        tracing::info!(volume = %p.volume_id, target = %p.target.display(), reference = %p.reference, "volume published");
        Ok(())
    }

    /// The view (mounted unless already served) bound at the target.
    async fn serve_and_bind(
        &self,
        p: &Publish,
        key: &str,
        att: Attachable,
        client: &RegistryClient,
        prefetch: bool,
        secret: bool,
    ) -> VResult<()> {
        let served = self
            .views
            .lock()
            .unwrap()
            .get(key)
            .map(|v| v.client.clone());
        match served {
            None => {
                self.serve_view(key, att, client, &p.include, prefetch)
                    .await?
            }
            // A view served since a restart with the node's credentials: a
            // publish with a secret brings the credential it lacked.
            Some(slot) if secret => {
                *slot.write().unwrap() = client.clone();
            }
            Some(_) => {}
        }
        let source = match &p.path {
            Some(sub) => self.view_dir(key).join(sub),
            None => self.view_dir(key),
        };
        if !source.is_dir() {
            return Err(VolumeError::Invalid(format!(
                "volumeAttributes.path {:?} is not a directory of {}",
                p.path.as_deref().unwrap_or(""),
                p.reference
            )));
        }
        bind_read_only(&source, &p.target)
    }

    /// The model's record in the node store goes when no volume uses it
    /// (GC then frees its blobs).
    fn forget_if_unused(&self, state: &State, reference: &Reference, digest: &Digest) {
        if state.volumes.values().any(|v| &v.digest == digest) {
            return;
        }
        // Its chunk-index referrers' entries too, so none names a freed blob.
        let referrers =
            modelpack_common::chunkindex::local::referrers(&self.store, digest).unwrap_or_default();
        for r in referrers
            .iter()
            .map(|r| r.digest.clone())
            .chain([digest.clone()])
        {
            if let Err(e) = self.store.remove(&reference.with_digest(r)) {
                tracing::debug!("forget {reference}: {e}");
            }
        }
    }

    /// Checks the node's signing policy before anything of the model is
    /// stored. Returns the reference to open: pinned to the digest that was
    /// checked when the policy covers its registry (a tag moved meanwhile
    /// cannot swap in an unchecked model), else as asked.
    async fn check_policy(&self, client: &RegistryClient, r: &Reference) -> VResult<Reference> {
        let Some(policy) = &self.policy else {
            return Ok(r.clone());
        };
        if policy.keys_for(&r.registry).is_none() {
            return Ok(r.clone());
        }
        let digest = match &r.digest {
            Some(d) => d.clone(),
            None => client.get_manifest(r).await?.digest,
        };
        policy
            .check(client, r, &digest)
            .await
            .map_err(|e| policy_error(r, e))?;
        Ok(r.with_digest(digest))
    }

    /// The model from the node store when its digest is known and stored,
    /// else from its registry.
    ///
    /// A stored copy is served only to a caller its registry would serve:
    /// the copy may have come from another pod's secret or another registry,
    /// and a digest alone proves nothing about access (the hole Kubernetes
    /// closes for images with `ensureSecretPulledImages`). So the manifest is
    /// asked for with this publish's credentials first; a refusal or a
    /// missing manifest refuses the publish. Only an unreachable registry
    /// lets the node's copy be served unconfirmed, as it is to a remount.
    async fn open_model(&self, client: &RegistryClient, r: &Reference) -> VResult<Attachable> {
        let policy = LazyPolicy::default();
        if r.digest.is_some()
            && let Ok(att) = lazy::open_local(&self.store, r, policy)
        {
            match client.get_manifest(r).await {
                Ok(_) => {}
                Err(e) if e.kind() == modelpack_common::error::ErrorKind::Unavailable => {
                    tracing::warn!(reference = %r, "registry unreachable: serving the node's verified copy without confirming this caller's access ({e})");
                }
                Err(e) => return Err(e.into()),
            }
            return Ok(att);
        }
        Ok(lazy::open_remote(client, &self.store, r, policy).await?)
    }

    /// Fetches what must be whole, mounts the view and starts its prefetch.
    async fn serve_view(
        &self,
        key: &str,
        mut att: Attachable,
        client: &RegistryClient,
        include: &[String],
        prefetch: bool,
    ) -> VResult<()> {
        let wanted = matcher(include);
        let shown = |path: &Path| wanted.as_ref().is_none_or(|m| m.is_match(path));
        let cas = self.store.cas().clone();
        // Layers without a trusted index are fetched whole (verified) first —
        // unless a filter leaves none of their files (raw layers name theirs).
        for plan in att.layers_to_fetch().cloned().collect::<Vec<_>>() {
            let l = &plan.layer;
            if l.format == modelpack_common::media::LayerFormat::Raw
                && !l.files.iter().any(|f| shown(&f.path))
            {
                continue;
            }
            let src = RegistryBlob::new(
                client.clone(),
                att.reference.clone(),
                l.descriptor.digest.clone(),
                l.descriptor.size,
            );
            lazy::fetch_whole(&cas, &src).await?;
        }
        att.replan(&self.store, LazyPolicy::default())?;
        let slot: ClientSlot = Arc::new(std::sync::RwLock::new(client.clone()));
        let mut files = Vec::new();
        for plan in &att.plans {
            let desc = &plan.layer.descriptor;
            let backing = match &plan.source {
                LayerSource::Complete => {
                    let p = cas.blob_path(&desc.digest);
                    Backing::Complete(Arc::new(std::fs::File::open(&p).map_err(|e| {
                        VolumeError::Internal(format!("open {}: {e}", p.display()))
                    })?))
                }
                LayerSource::Lazy { index, .. } => {
                    let src: Arc<dyn BlobSource> = Arc::new(SlotBlob {
                        slot: slot.clone(),
                        reference: att.reference.clone(),
                        digest: desc.digest.clone(),
                        size: desc.size,
                    });
                    Backing::Lazy(
                        self.lazy
                            .shared_sparse(&desc.digest, index, src)
                            .map_err(|e| VolumeError::Internal(e.to_string()))?,
                    )
                }
                // Filtered out above: none of its files are shown.
                LayerSource::Fetch => continue,
            };
            for f in lazy::layer_files(plan, &cas)? {
                if shown(&f.path) {
                    files.push(FsFile {
                        path: f.path,
                        backing: backing.clone(),
                        offset: f.offset,
                        size: f.size,
                        mode: f.mode,
                    });
                }
            }
        }
        if files.is_empty() {
            return Err(VolumeError::Invalid(format!(
                "volumeAttributes.include {include:?} matches no file of {}",
                att.reference
            )));
        }
        let opts = FsOptions {
            read_timeout: self.lazy.opts.read_timeout,
            allow_other: true,
            fsname: format!("modelpack:{}", att.reference),
            ..FsOptions::default()
        };
        let fs = ModelFs::new(
            files.clone(),
            std::time::SystemTime::UNIX_EPOCH,
            opts,
            tokio::runtime::Handle::current(),
        )
        .map_err(|e| VolumeError::Invalid(format!("{}: {e}", att.reference)))?;
        let dir = self.view_dir(key);
        crate::lazy::detach(&dir);
        std::fs::create_dir_all(&dir).ctx("create", &dir)?;
        let mounted = modelpack_fs::mount(fs, &dir)
            .map_err(|e| VolumeError::Internal(format!("mount {}: {e}", dir.display())))?;
        // Private: each target's bind of it is then a peer group of its own
        // (where the target's parent is shared, as kubelet's pods dir is).
        // Shared, every bind of one view would be peers, and the bind a
        // restart stacks on one target would propagate onto all of them —
        // and onto the view itself.
        if let Err(e) = nix::mount::mount(
            None::<&str>,
            &dir,
            None::<&str>,
            nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        ) {
            let _ = mounted.unmount();
            return Err(VolumeError::Internal(format!(
                "make {} private: {e}",
                dir.display()
            )));
        }
        let lazy_files = files.iter().any(|f| matches!(f.backing, Backing::Lazy(_)));
        let prefetch = (prefetch && lazy_files).then(|| {
            let files = files.clone();
            let opts = modelpack_fs::Prefetch {
                concurrency: self.lazy.opts.prefetch_threads,
                bytes_per_sec: self.lazy.opts.prefetch_bandwidth,
                ..modelpack_fs::Prefetch::default()
            };
            let key = key.to_string();
            tokio::spawn(async move {
                let n = modelpack_fs::prefetch_until_complete(files, opts).await;
                tracing::info!(view = %key, "prefetch: {n} blobs complete");
            })
        });
        tracing::info!(view = %key, reference = %att.reference, files = files.len(), lazy = lazy_files, "model view mounted");
        self.views.lock().unwrap().insert(
            key.to_string(),
            ServedView {
                mounted,
                files,
                prefetch,
                client: slot,
            },
        );
        Ok(())
    }

    /// What is bound at a volume's target: its view, or the view's sub-path.
    fn source_of(&self, v: &Volume) -> PathBuf {
        match &v.path {
            Some(sub) => self.view_dir(&v.view).join(sub),
            None => self.view_dir(&v.view),
        }
    }

    /// Is `target` bound to the view served now for `v` (not to a dead
    /// mount a previous process left)?
    fn is_served(&self, target: &Path, v: &Volume) -> bool {
        let served = self.views.lock().unwrap().contains_key(&v.view);
        served && is_bound_to(target, &self.source_of(v))
    }

    /// Unmounts a view no recorded volume uses.
    fn release_if_unused(&self, state: &State, key: &str) -> bool {
        if state.volumes.values().any(|v| v.view == key) {
            return false;
        }
        let Some(v) = self.views.lock().unwrap().remove(key) else {
            return false;
        };
        if let Some(p) = &v.prefetch {
            p.abort();
        }
        let dir = v.mounted.dir.clone();
        if let Err(e) = v.mounted.unmount() {
            tracing::warn!("unmount {}: {e}", dir.display());
            crate::lazy::detach(&dir);
        }
        let _ = std::fs::remove_dir(&dir);
        drop(v.files);
        self.lazy.close_unused_sparse();
        tracing::info!(view = %key, "model view released");
        true
    }

    /// NodeUnpublishVolume: the bind goes, the target directory goes, and the
    /// view goes with its last volume (its blobs are then GC's to free). Only
    /// a target we recorded is unmounted: a path we know nothing about is
    /// someone else's (success when nothing is mounted there, as the spec
    /// asks of a repeated call; refused when something is).
    pub async fn unpublish(&self, volume_id: &str, target: &Path) -> VResult<()> {
        let _target = self
            .locks
            .lock(&format!("target\n{}", target.display()))
            .await;
        let recorded = self.state.lock().await.volumes.get(target).cloned();
        let Some(v) = recorded else {
            if is_mount_point(target) {
                return Err(VolumeError::FailedPrecondition(format!(
                    "{} is a mount point this node service did not make; it is left alone",
                    target.display()
                )));
            }
            // Already unpublished (or never by us): idempotent success.
            return Ok(());
        };
        if v.volume_id != volume_id {
            return Err(VolumeError::NotFound(format!(
                "{} is the target of volume {}, not {volume_id}",
                target.display(),
                v.volume_id
            )));
        }
        // A publish of this model or view in flight finishes first (it may
        // be about to use the view this unpublish would release).
        let _digest = self.locks.lock(&format!("digest\n{}", v.digest)).await;
        let _view = self.locks.lock(&format!("view\n{}", v.view)).await;
        unbind(target);
        match std::fs::remove_dir(target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("remove {}: {e}", target.display()),
        }
        let mut state = self.state.lock().await;
        state.volumes.remove(target);
        self.save(&state)?;
        let released = self.release_if_unused(&state, &v.view);
        tracing::info!(volume = %volume_id, target = %target.display(), "volume unpublished");
        if released && !state.volumes.values().any(|o| o.digest == v.digest) {
            // The model's index entry goes; GC frees what no snapshot uses.
            if let Ok(r) = v.reference.parse::<Reference>() {
                self.forget_if_unused(&state, &r, &v.digest);
            }
            drop(state);
            let snaps = self.snaps.clone();
            match tokio::task::spawn_blocking(move || snaps.cleanup()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("GC after unpublishing {volume_id}: {e}"),
                Err(e) => tracing::warn!("GC after unpublishing {volume_id}: {e}"),
            }
        }
        Ok(())
    }

    /// NodeGetVolumeStats: bytes and files the volume shows.
    pub async fn stats(&self, volume_id: &str, path: &Path) -> VResult<(u64, u64, bool)> {
        let recorded = self.state.lock().await.volumes.get(path).cloned();
        let v = recorded
            .filter(|v| v.volume_id == volume_id)
            .ok_or_else(|| {
                VolumeError::NotFound(format!(
                    "volume {volume_id} is not published at {}",
                    path.display()
                ))
            })?;
        let (mut bytes, mut files) = (0u64, 0u64);
        {
            let views = self.views.lock().unwrap();
            let Some(view) = views.get(&v.view) else {
                return Ok((0, 0, false));
            };
            let prefix = v.path.as_deref().map(Path::new);
            for f in &view.files {
                if prefix.is_none_or(|p| f.path.starts_with(p)) {
                    bytes += f.size;
                    files += 1;
                }
            }
        }
        let healthy = self.is_served(path, &v);
        Ok((bytes, files, healthy))
    }

    /// After a restart: every recorded view mounted again from the node
    /// store, every target bound again — on top of the dead mount the old
    /// process left, not in its place: a running container holds a copy of
    /// that mount, and only a mount made on it propagates into the copy
    /// (`mountPropagation: HostToContainer`). Under a signing policy each
    /// model is checked again (the policy may have been tightened across the
    /// restart): a model it refuses now, or that cannot be checked, is not
    /// served, and says so in the log. Failures are left for kubelet's
    /// retries; the record stays so the blobs stay and unpublish cleans up.
    pub async fn restore(&self) -> usize {
        let _in_flight = self.in_flight();
        let mut ok = 0;
        let targets: Vec<(PathBuf, Volume)> = self
            .state
            .lock()
            .await
            .volumes
            .iter()
            .map(|(t, v)| (t.clone(), v.clone()))
            .collect();
        let mut refused: HashSet<Digest> = HashSet::new();
        for (target, v) in targets {
            let r = async {
                let reference: Reference = v
                    .reference
                    .parse()
                    .map_err(|e: modelpack_common::Error| VolumeError::Internal(e.to_string()))?;
                let client = self.node_client.clone();
                if refused.contains(&v.digest) {
                    return Err(VolumeError::FailedPrecondition(
                        "refused by the node's signing policy (see above)".into(),
                    ));
                }
                if let Err(e) = self
                    .check_policy(&client, &reference.with_digest(v.digest.clone()))
                    .await
                {
                    if matches!(e, VolumeError::FailedPrecondition(_)) {
                        refused.insert(v.digest.clone());
                    }
                    return Err(e);
                }
                if !self.views.lock().unwrap().contains_key(&v.view) {
                    let att = lazy::open_local(
                        &self.store,
                        &reference.with_digest(v.digest.clone()),
                        LazyPolicy::default(),
                    )?;
                    self.serve_view(&v.view, att, &client, &v.include, v.prefetch)
                        .await?;
                }
                if self.is_served(&target, &v) {
                    return Ok(());
                }
                bind_read_only(&self.source_of(&v), &target)
            }
            .await;
            match r {
                Ok(()) if v.secret => {
                    ok += 1;
                    tracing::info!(volume = %v.volume_id, target = %target.display(), "served again; published with a pull secret, which is not kept across restarts: chunks not on the node yet are fetched with the node's credentials until kubelet republishes the volume with it (requiresRepublish)");
                }
                Ok(()) => ok += 1,
                Err(VolumeError::FailedPrecondition(e)) => {
                    tracing::error!(volume = %v.volume_id, target = %target.display(), reference = %v.reference, "not served again after the restart: {e}")
                }
                Err(e) => {
                    tracing::warn!(volume = %v.volume_id, target = %target.display(), "not served again: {e:?}")
                }
            }
        }
        ok
    }

    /// Blobs the published volumes need (manifests, configs, layers, chunk
    /// indexes and their referrers).
    fn blobs_in_use(&self, state: &State) -> HashSet<String> {
        let mut out = HashSet::new();
        let digests: HashSet<&Digest> = state.volumes.values().map(|v| &v.digest).collect();
        for d in digests {
            out.insert(d.hex().to_string());
            if let Ok(m) = self.store.load_manifest_digest(d) {
                out.insert(m.manifest.config.digest.hex().to_string());
                for l in &m.manifest.layers {
                    out.insert(l.digest.hex().to_string());
                    if let Some(i) = l
                        .annotations
                        .get(modelpack_common::media::ANNOTATION_CHUNKS_DIGEST)
                    {
                        out.insert(i.trim_start_matches("sha256:").to_string());
                    }
                }
            }
            if let Ok(refs) = modelpack_common::chunkindex::local::referrers(&self.store, d) {
                for r in refs {
                    out.insert(r.digest.hex().to_string());
                    out.insert(r.manifest.config.digest.hex().to_string());
                    for l in &r.manifest.layers {
                        out.insert(l.digest.hex().to_string());
                    }
                }
            }
        }
        out
    }
}

impl crate::snapshots::BlobUsers for Volumes {
    /// A publish in flight stores blobs (manifest, config, chunk indexes,
    /// layers) before its volume is recorded, so GC must not run during
    /// one. With none in flight, GC runs now and no publish starts until it
    /// is done (a short scan). With some, it is put off, not skipped: the
    /// last of them to finish runs it — GC never waits for a download, and
    /// a publish never waits for a GC that waits for a download. Called on
    /// a blocking thread (every GC runs in `spawn_blocking`).
    fn during_gc(&self, gc: &mut dyn FnMut(&HashSet<String>)) {
        let mut hold = self.gc.lock().unwrap();
        if hold.publishes > 0 {
            hold.pending = true;
            tracing::debug!(
                "GC put off until {} publish(es) in flight end",
                hold.publishes
            );
            return;
        }
        let keep = {
            let state = self.state.blocking_lock();
            self.blobs_in_use(&state)
        };
        gc(&keep);
        drop(hold);
    }
}

/// Is `target` the root of a mount of `source` (same device and inode)?
/// A dead FUSE mount may still answer `stat` from the kernel's attribute
/// cache, so "a mount point that stats" is not enough: it must be a mount
/// of the view that is served now.
fn is_bound_to(target: &Path, source: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(target), std::fs::metadata(source)) {
        (Ok(t), Ok(s)) => t.dev() == s.dev() && t.ino() == s.ino(),
        _ => false,
    }
}

/// Binds `source` read-only at `target`, creating the directory when it is
/// missing. A target that is a dead mount (ENOTCONN after a restart) is
/// bound on top of, never replaced: see [`Volumes::restore`]. On failure
/// nothing stays mounted.
fn bind_read_only(source: &Path, target: &Path) -> VResult<()> {
    use nix::mount::{MsFlags, mount};
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(target)
            .map_err(|e| VolumeError::Internal(format!("create {}: {e}", target.display())))?,
        Ok(m) if !m.is_dir() => {
            return Err(VolumeError::Invalid(format!(
                "target_path {} exists and is not a directory",
                target.display()
            )));
        }
        // A directory, or a dead mount: mount on it.
        _ => {}
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        VolumeError::Internal(format!(
            "bind {} at {}: {e}",
            source.display(),
            target.display()
        ))
    })?;
    if let Err(e) = mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    ) {
        unbind_top(target);
        return Err(VolumeError::Internal(format!(
            "make {} read-only: {e}",
            target.display()
        )));
    }
    Ok(())
}

/// Unmounts the topmost mount at `target`.
fn unbind_top(target: &Path) {
    use nix::mount::{MntFlags, umount2};
    if umount2(target, MntFlags::empty()).is_err() {
        let _ = umount2(target, MntFlags::MNT_DETACH);
    }
}

/// Most mounts stacked at one target we unmount (one per restart while the
/// volume was published; bounded so a hostile stack cannot spin us).
const MAX_STACKED: usize = 64;

/// Unmounts every mount we stacked at `target` (nothing mounted is fine).
fn unbind(target: &Path) {
    use nix::errno::Errno;
    use nix::mount::{MntFlags, umount2};
    for _ in 0..MAX_STACKED {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            // Not a mount point (any more), or gone.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return,
            Err(_) => {
                if umount2(target, MntFlags::MNT_DETACH).is_err() {
                    return;
                }
            }
        }
    }
}

/// Is something mounted at `target` itself (a live or dead mount)?
fn is_mount_point(target: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| Path::new(&unescape_mountinfo(m)) == target)
    })
}

/// Mount points in mountinfo have space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshots::BlobUsers;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn volumes(root: &Path) -> Arc<Volumes> {
        let snaps = Arc::new(Snapshots::open(root).unwrap());
        let client = RegistryClient::new(
            TransportOptions::default(),
            Arc::new(CredentialStore::new(CredentialOptions::default())),
        )
        .unwrap();
        let lazy = Arc::new(LazyViews::new(
            crate::lazy::LazyOptions {
                enable: false,
                ..Default::default()
            },
            snaps.cas.clone(),
            client.clone(),
            tokio::runtime::Handle::current(),
        ));
        let opts = CsiOptions {
            driver_name: "d".into(),
            node_id: "n".into(),
        };
        Arc::new(
            Volumes::open(
                opts,
                root,
                snaps,
                lazy,
                TransportOptions::default(),
                client,
                None,
            )
            .unwrap(),
        )
    }

    /// A GC that comes while a publish is in flight is put off, not skipped
    /// (skipping it would leave an unpublished model's blobs on the node):
    /// the publish's end runs it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gc_during_a_publish_is_put_off_then_runs() {
        let dir = tempfile::tempdir().unwrap();
        let v = volumes(dir.path());
        let _ = v
            .snaps
            .blob_users
            .set(v.clone() as Arc<dyn crate::snapshots::BlobUsers>);
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let stray = blobs.join("ab".repeat(32));
        std::fs::write(&stray, b"no one uses this").unwrap();
        let publishing = v.in_flight();
        let ran = Arc::new(AtomicBool::new(false));
        {
            let (v, ran) = (v.clone(), ran.clone());
            tokio::task::spawn_blocking(move || {
                v.during_gc(&mut |_| ran.store(true, Ordering::SeqCst))
            })
            .await
            .unwrap();
        }
        assert!(
            !ran.load(Ordering::SeqCst),
            "GC ran while a publish was in flight"
        );
        assert!(v.gc.lock().unwrap().pending, "the GC was dropped");
        assert!(stray.exists());
        drop(publishing);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stray.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the GC put off did not run after the publish"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!v.gc.lock().unwrap().pending);
        // With nothing in flight, GC runs at once.
        let ran2 = ran.clone();
        let v2 = v.clone();
        tokio::task::spawn_blocking(move || {
            v2.during_gc(&mut |_| ran2.store(true, Ordering::SeqCst))
        })
        .await
        .unwrap();
        assert!(ran.load(Ordering::SeqCst));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/trunc\04"), r"/trunc\04");
    }
}
