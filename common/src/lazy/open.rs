//! Opening a model for attachment: its manifest, config and chunk indexes
//! from the local store, or from the registry (stored on the way, so a
//! second attach needs no registry for what is present), planned by
//! [`super::plan`]. Layer bytes are not fetched here.

use crate::cas::{BlobSource, Cas};
use crate::chunkindex::local;
use crate::chunkindex::trust::assess;
use crate::config::ModelConfig;
use crate::digest::Digest;
use crate::error::Result;
use crate::manifest::{Descriptor, Manifest};
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::store::Store;
use crate::view::ModelView;

use super::{LayerPlan, LazyPolicy, plan};

/// A model ready to be planned into a view.
#[derive(Debug, Clone)]
pub struct Attachable {
    pub reference: Reference,
    /// The model manifest's descriptor (what `tag` records at completion).
    pub descriptor: Descriptor,
    pub manifest: Manifest,
    pub config: ModelConfig,
    pub view: ModelView,
    pub plans: Vec<LayerPlan>,
    /// Where the model came from: the local store only, or a registry.
    pub from_registry: bool,
    /// Referrers refused on the way (shown as warnings).
    pub warnings: Vec<String>,
}

impl Attachable {
    /// Layers that are served chunk by chunk.
    pub fn lazy_layers(&self) -> usize {
        self.plans.iter().filter(|p| p.is_lazy()).count()
    }

    /// Layers that must be fetched whole before the view is shown.
    pub fn layers_to_fetch(&self) -> impl Iterator<Item = &LayerPlan> {
        self.plans
            .iter()
            .filter(|p| matches!(p.source, super::LayerSource::Fetch))
    }

    /// Plans again (after fetching layers, or once a blob completed).
    pub fn replan(&mut self, store: &Store, policy: LazyPolicy) -> Result<()> {
        let found = local::indexes(store, &self.descriptor.digest)?;
        let pins = local::pins(store, &self.descriptor.digest)?;
        let trust = assess(&self.manifest, &found.indexes, &pins);
        self.plans = plan(&self.view, &trust, &found.indexes, store.cas(), policy);
        Ok(())
    }
}

fn build(
    store: &Store,
    reference: Reference,
    descriptor: Descriptor,
    manifest: Manifest,
    config_bytes: &[u8],
    policy: LazyPolicy,
) -> Result<Attachable> {
    let config = ModelConfig::parse(config_bytes, &format!("config of {reference}"))?;
    crate::extract::check_layer_paths(&manifest.layers)?;
    let view = ModelView::new(
        reference.clone(),
        descriptor.digest.clone(),
        &manifest,
        &config,
    )?;
    let found = local::indexes(store, &descriptor.digest)?;
    let pins = local::pins(store, &descriptor.digest)?;
    let trust = assess(&manifest, &found.indexes, &pins);
    let plans = plan(&view, &trust, &found.indexes, store.cas(), policy);
    Ok(Attachable {
        reference,
        descriptor,
        manifest,
        config,
        view,
        plans,
        from_registry: false,
        warnings: Vec::new(),
    })
}

/// A model recorded in the local store (its blobs may be partly missing:
/// a lazy attach that did not complete).
pub fn open_local(store: &Store, reference: &Reference, policy: LazyPolicy) -> Result<Attachable> {
    let descriptor = store.resolve(reference)?;
    let loaded = store.load_manifest_digest(&descriptor.digest)?;
    let config = store.read_blob(&loaded.manifest.config.digest)?;
    build(
        store,
        reference.clone(),
        descriptor,
        loaded.manifest,
        &config,
        policy,
    )
}

/// A model in a registry: manifest, config and chunk index referrers are
/// fetched, verified and stored (the model is recorded untagged until
/// every layer is complete); layer blobs are not.
pub async fn open_remote(
    client: &RegistryClient,
    store: &Store,
    remote: &Reference,
    policy: LazyPolicy,
) -> Result<Attachable> {
    let (bytes, digest, manifest) = crate::transfer::pull::fetch_manifest(client, remote).await?;
    crate::extract::check_layer_paths(&manifest.layers)?;
    let config = client
        .pull_config(remote, &manifest.config.digest, manifest.config.size)
        .await?;
    let descriptor = crate::transfer::pull::manifest_descriptor(&bytes, &digest, &manifest);
    let _lease = store.lease()?;
    store.put_bytes(&config)?;
    store.put_bytes(&bytes)?;
    store.record_lazy(remote, &descriptor)?;
    let (_, warnings) = match crate::transfer::referrers::pull_into_store(
        client,
        store,
        remote,
        &descriptor,
        &manifest,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => (0, vec![format!("chunk indexes not fetched: {e}")]),
    };
    remember(store, remote, &digest);
    let mut att = build(store, remote.clone(), descriptor, manifest, &config, policy)?;
    att.from_registry = true;
    att.warnings = warnings;
    Ok(att)
}

/// Where the manifest each reference last resolved to is kept, so a view can
/// be mounted again while its registry is unreachable (what was fetched is
/// served; the rest fails with EIO until the registry returns).
fn remembered_path(store: &Store) -> std::path::PathBuf {
    store.root().join("lazy-refs.json")
}

/// Most bytes of the remembered-references file we read.
const MAX_REMEMBERED: u64 = 4 << 20;

fn load_remembered(store: &Store) -> std::collections::BTreeMap<String, Digest> {
    let p = remembered_path(store);
    match std::fs::metadata(&p) {
        Ok(m) if m.len() <= MAX_REMEMBERED => std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default(),
        _ => Default::default(),
    }
}

fn remember(store: &Store, reference: &Reference, digest: &Digest) {
    let res = (|| -> Result<()> {
        let _lock = store.lock()?;
        let mut m = load_remembered(store);
        m.insert(reference.to_string(), digest.clone());
        let bytes = serde_json::to_vec_pretty(&m).expect("a map of strings serialises");
        crate::store::write_atomic(&remembered_path(store), &bytes, &store.tmp_dir())
    })();
    if let Err(e) = res {
        tracing::warn!("cannot remember {reference} for offline remounts: {e}");
    }
}

/// The model `reference` last resolved to when it was opened from its
/// registry, if its manifest is still in the store.
pub fn open_remembered(
    store: &Store,
    reference: &Reference,
    policy: LazyPolicy,
) -> Option<Attachable> {
    let digest = load_remembered(store).remove(&reference.to_string())?;
    let mut att = open_local(store, &reference.with_digest(digest), policy).ok()?;
    att.reference = reference.clone();
    att.view.reference = reference.clone();
    Some(att)
}

/// Fetches a whole blob into the store, verified against its digest before
/// it is visible under its name.
pub async fn fetch_whole(cas: &Cas, src: &dyn BlobSource) -> Result<()> {
    if cas.has(src.digest()) {
        return Ok(());
    }
    let mut ingest = cas.ingest(None)?;
    ingest.fill_from(src, 5, &|_| {}).await?;
    ingest.commit(Some(src.digest()), Some(src.size()))?;
    Ok(())
}
