//! CRI's remote-snapshot labels. When containerd's CRI plugin pulls with
//! `disable_snapshot_annotations = false` (what stargz and nydus require),
//! every layer `Prepare` carries `containerd.io/snapshot/cri.image-ref`,
//! `.cri.manifest-digest` and `.cri.layer-digest`. For a ModelPack
//! manifest we derive our own model-layer labels from the manifest and
//! config themselves (fetched by digest and verified), so the day
//! containerd's image volumes accept artifacts (containerd#11381, #11907)
//! the same lazy or eager path serves Kubernetes pods. Anything that is
//! not a ModelPack manifest — every ordinary image — takes the ordinary
//! path, and so does any failure to tell (logged, never fatal for an image).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use modelpack_common::config::ModelConfig;
use modelpack_common::digest::Digest;
use modelpack_common::labels::{LABEL_REF, ModelLayerLabels};
use modelpack_common::manifest::Manifest;
use modelpack_common::media::Family;
use modelpack_common::reference::Reference;
use modelpack_common::registry::RegistryClient;
use modelpack_common::view::ModelView;

pub const CRI_IMAGE_REF: &str = "containerd.io/snapshot/cri.image-ref";
pub const CRI_MANIFEST_DIGEST: &str = "containerd.io/snapshot/cri.manifest-digest";
pub const CRI_LAYER_DIGEST: &str = "containerd.io/snapshot/cri.layer-digest";

/// Is this a CRI layer Prepare (which may or may not be a model's)?
pub fn is_cri_prepare(labels: &BTreeMap<String, String>) -> bool {
    [
        LABEL_REF,
        CRI_IMAGE_REF,
        CRI_MANIFEST_DIGEST,
        CRI_LAYER_DIGEST,
    ]
    .iter()
    .all(|k| labels.contains_key(*k))
}

/// Manifests already judged, by digest: the model's view, or `None` for
/// "not a model" (so an image's other layers cost no fetch).
#[derive(Default)]
pub struct CriViews {
    judged: Mutex<HashMap<Digest, Option<Arc<ModelView>>>>,
}

impl CriViews {
    /// Our labels for a CRI Prepare of a ModelPack layer, or `None` when the
    /// Prepare is not one (the caller then prepares an ordinary snapshot).
    pub async fn model_labels(
        &self,
        client: &RegistryClient,
        labels: &BTreeMap<String, String>,
        parent: &str,
    ) -> Option<ModelLayerLabels> {
        let image: Reference = labels.get(CRI_IMAGE_REF)?.parse().ok()?;
        let manifest_digest: Digest = labels.get(CRI_MANIFEST_DIGEST)?.parse().ok()?;
        let layer: Digest = labels.get(CRI_LAYER_DIGEST)?.parse().ok()?;
        let cached = self.judged.lock().unwrap().get(&manifest_digest).cloned();
        let view = match cached {
            Some(v) => v,
            None => {
                let v = judge(client, &image, &manifest_digest).await.map(Arc::new);
                let mut m = self.judged.lock().unwrap();
                if m.len() > 256 {
                    m.clear();
                }
                m.insert(manifest_digest.clone(), v.clone());
                v
            }
        }?;
        let i = view
            .layers
            .iter()
            .position(|l| l.descriptor.digest == layer)?;
        if view.parent(i) != parent {
            tracing::warn!(
                layer = %layer,
                "CRI Prepare of a model layer on parent {parent:?}, not the model's own chain: ordinary path"
            );
            return None;
        }
        Some(view.labels(i))
    }
}

/// The model view of `image@digest`, or `None` for anything else.
async fn judge(client: &RegistryClient, image: &Reference, digest: &Digest) -> Option<ModelView> {
    let at = image.with_digest(digest.clone());
    let fetched = match client.get_manifest(&at).await {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("CRI Prepare: cannot fetch {at} ({e}); ordinary path");
            return None;
        }
    };
    let manifest = Manifest::parse(&fetched.bytes, &format!("manifest {digest}")).ok()?;
    let is_model = Family::of_media_type(&manifest.config.media_type).is_some()
        || manifest
            .artifact_type
            .as_deref()
            .is_some_and(|t| Family::of_media_type(t).is_some());
    if !is_model {
        return None;
    }
    let config = match client
        .pull_config(&at, &manifest.config.digest, manifest.config.size)
        .await
        .and_then(|b| ModelConfig::parse(&b, &format!("config of {at}")))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("CRI Prepare of model {at}: {e}; ordinary path");
            return None;
        }
    };
    match ModelView::new(image.clone(), digest.clone(), &manifest, &config) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("CRI Prepare of model {at}: {e}; ordinary path");
            None
        }
    }
}
