//! `pull --containerd`: manifest and config into containerd's content store,
//! the layer chain prepared through the modelpack snapshotter, the image record
//! created — under a lease, with the GC labels that keep the chain alive.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    CreateImageRequest, Image, UpdateImageRequest, leases_client::LeasesClient,
};
use containerd_client::types::Descriptor as CDescriptor;
use modelpack_common::Digest;
use modelpack_common::config::ModelConfig;
use modelpack_common::manifest::Manifest;

use modelpack_common::view::ModelView;

use super::ContainerdArgs;
use super::client::*;

/// Records the model in containerd and prepares its layer chain through the snapshotter.
pub async fn pull(
    c: &ContainerdArgs,
    reference: &str,
    manifest_bytes: &[u8],
    manifest: &Manifest,
    config_bytes: &[u8],
) -> Result<String> {
    let config = ModelConfig::parse(config_bytes, "model config")?;
    let view = ModelView::new(
        reference.parse()?,
        Digest::of(manifest_bytes),
        manifest,
        &config,
    )?;
    let top = view.top_chain_id().to_string();
    let ch = connect(&c.address).await?;
    let ns = c.namespace.as_str();
    let mut leases = LeasesClient::new(ch.clone());
    let lease_id = format!("modelpack-pull-{:016x}", rand_u64());
    let expire = chrono::Utc::now() + chrono::Duration::hours(1);
    let lease_labels = HashMap::from([(
        "containerd.io/gc.expire".to_string(),
        expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )]);
    leases
        .create(req(
            containerd_client::services::v1::CreateRequest {
                id: lease_id.clone(),
                labels: lease_labels,
            },
            ns,
            None,
        ))
        .await
        .map_err(|e| anyhow!("containerd lease: {}", e.message()))?;
    let result = async {
        let snap_label = format!("containerd.io/gc.ref.snapshot.{}", c.snapshotter);
        write_content(&ch, ns, &lease_id, config_bytes, HashMap::from([(snap_label, top.clone())])).await?;
        let mut mlabels = HashMap::from([("containerd.io/gc.ref.content.config".to_string(), manifest.config.digest.to_string())]);
        mlabels.insert("containerd.io/distribution.source.modelpack".into(), reference.to_string());
        write_content(&ch, ns, &lease_id, manifest_bytes, mlabels).await?;
        let mut snaps = containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient::new(ch.clone());
        let manifest_digest = view.manifest_digest.to_string();
        for (i, layer) in view.layers.iter().enumerate() {
            let parent = view.parent(i);
            let path = &layer.filepath;
            let labels: HashMap<String, String> = view.labels(i).to_labels().into_iter().collect();
            let chain = &layer.chain_id;
            let key = format!("modelpack-extract-{:016x}-{chain}", rand_u64());
            let res = snaps.prepare(req(PrepareSnapshotRequest { snapshotter: c.snapshotter.clone(), key: key.clone(), parent, labels }, ns, Some(&lease_id))).await;
            match res {
                Err(e) if e.code() == tonic::Code::AlreadyExists => {}
                Ok(_) => {
                    let _ = snaps.remove(req(RemoveSnapshotRequest { snapshotter: c.snapshotter.clone(), key }, ns, Some(&lease_id))).await;
                    bail!("snapshotter {:?} did not provide model layer {path}: is it modelpack-snapshotter?", c.snapshotter);
                }
                Err(e) => bail!("preparing layer {path} ({}) through snapshotter {:?}: {}", layer.descriptor.digest, c.snapshotter, e.message()),
            }
        }
        let mut images = containerd_client::services::v1::images_client::ImagesClient::new(ch.clone());
        let image = Image {
            name: reference.to_string(),
            labels: HashMap::from([("io.modelpack.model".to_string(), "true".to_string())]),
            target: Some(CDescriptor { media_type: modelpack_common::media::OCI_MANIFEST.into(), digest: manifest_digest.clone(), size: manifest_bytes.len() as i64, annotations: HashMap::new() }),
            created_at: None,
            updated_at: None,
        };
        match images.create(req(CreateImageRequest { image: Some(image.clone()), source_date_epoch: None }, ns, Some(&lease_id))).await {
            Ok(_) => {}
            Err(e) if e.code() == tonic::Code::AlreadyExists => {
                images.update(req(UpdateImageRequest { image: Some(image), update_mask: None, source_date_epoch: None }, ns, Some(&lease_id))).await.map_err(|e| anyhow!("containerd image update: {}", e.message()))?;
            }
            Err(e) => bail!("containerd image create: {}", e.message()),
        }
        Ok::<_, anyhow::Error>(top.clone())
    }
    .await;
    let _ = leases
        .delete(req(
            containerd_client::services::v1::DeleteRequest {
                id: lease_id,
                sync: false,
            },
            ns,
            None,
        ))
        .await;
    result
}
