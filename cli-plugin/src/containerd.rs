//! Driving containerd for models: `pull --containerd` records the manifest and
//! config in containerd's content store, prepares the layer chain through the
//! `modelpack` proxy snapshotter with our labels (the snapshotter fetches and
//! verifies each layer itself and answers ALREADY_EXISTS), and creates the
//! image record — all under a lease, with the GC labels that keep the chain
//! alive while the image exists. `mount`/`umount` attach a read-only View of a
//! model at a directory for `ctr run --mount` or `nerdctl run -v`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::services::v1::{
    CreateImageRequest, GetImageRequest, Image, ReadContentRequest, UpdateImageRequest,
    WriteAction, WriteContentRequest, leases_client::LeasesClient,
};
use containerd_client::types::Descriptor as CDescriptor;
use containerd_client::types::Mount;
use modelpack_common::Digest;
use modelpack_common::config::ModelConfig;
use modelpack_common::manifest::Manifest;
use serde::{Deserialize, Serialize};
use tonic::Request;
use tonic::transport::Channel;

use modelpack_common::view::ModelView;

/// Where and how to talk to containerd.
#[derive(Debug, Clone, clap::Args)]
pub struct ContainerdArgs {
    /// containerd socket
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub address: PathBuf,
    /// containerd namespace
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Snapshotter that materialises model layers
    #[arg(long, default_value = "modelpack")]
    pub snapshotter: String,
}

fn req<T>(msg: T, ns: &str, lease: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "containerd-namespace",
        ns.parse().expect("namespace is ASCII"),
    );
    if let Some(l) = lease {
        r.metadata_mut()
            .insert("containerd-lease", l.parse().expect("lease id is ASCII"));
    }
    r
}

/// Connects, retrying briefly: containerd reconnects to a restarted proxy plugin with backoff.
pub async fn connect(address: &Path) -> Result<Channel> {
    let mut last = None;
    for _ in 0..20 {
        match containerd_client::connect(address).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(anyhow!(
        "cannot connect to containerd at {}: {}",
        address.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// OCI chain IDs of a layer stack from its diffIds.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<String> {
    modelpack_common::labels::chain_ids(diff_ids)
        .iter()
        .map(|d| d.to_string())
        .collect()
}

async fn write_content(
    ch: &Channel,
    ns: &str,
    lease: &str,
    bytes: &[u8],
    labels: HashMap<String, String>,
) -> Result<()> {
    let mut content =
        containerd_client::services::v1::content_client::ContentClient::new(ch.clone());
    let digest = Digest::of(bytes).to_string();
    let r#ref = format!("modelpack-{}", &digest[7..23]);
    let total = bytes.len() as i64;
    let msgs = vec![
        WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: r#ref.clone(),
            total,
            expected: digest.clone(),
            offset: 0,
            data: bytes.to_vec(),
            labels: HashMap::new(),
        },
        WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref,
            total,
            expected: digest.clone(),
            offset: total,
            data: vec![],
            labels,
        },
    ];
    match content
        .write(req(futures::stream::iter(msgs), ns, Some(lease)))
        .await
    {
        Ok(resp) => {
            let mut s = resp.into_inner();
            while let Some(m) = futures::StreamExt::next(&mut s).await {
                if let Err(e) = m
                    && e.code() != tonic::Code::AlreadyExists
                {
                    return Err(anyhow!(
                        "containerd content write of {digest}: {}",
                        e.message()
                    ));
                }
            }
            Ok(())
        }
        Err(e) if e.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow!(
            "containerd content write of {digest}: {}",
            e.message()
        )),
    }
}

async fn read_content(ch: &Channel, ns: &str, digest: &str) -> Result<Vec<u8>> {
    let mut content =
        containerd_client::services::v1::content_client::ContentClient::new(ch.clone());
    let mut s = content
        .read(req(
            ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            },
            ns,
            None,
        ))
        .await
        .with_context(|| format!("containerd has no content {digest}"))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = futures::StreamExt::next(&mut s).await {
        out.extend(m?.data);
    }
    Ok(out)
}

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

#[derive(Debug, Serialize, Deserialize)]
struct MountState {
    address: PathBuf,
    namespace: String,
    snapshotter: String,
    key: String,
}

fn state_path(dir: &Path) -> PathBuf {
    let d = Digest::of(dir.display().to_string().as_bytes());
    PathBuf::from("/run/modelpack/mounts").join(format!("{}.json", d.short()))
}

/// Did `mount --containerd` mount `dir`?
pub fn is_containerd_mount(dir: &Path) -> bool {
    std::fs::canonicalize(dir)
        .map(|d| state_path(&d).exists())
        .unwrap_or(false)
}

/// Views the model's top snapshot and bind-mounts it read-only at `dir`.
pub async fn mount(c: &ContainerdArgs, reference: &str, dir: &Path) -> Result<()> {
    let dir = std::fs::canonicalize(dir).or_else(|_| {
        std::fs::create_dir_all(dir)?;
        std::fs::canonicalize(dir)
    })?;
    let ch = connect(&c.address).await?;
    let ns = c.namespace.as_str();
    let mut images = containerd_client::services::v1::images_client::ImagesClient::new(ch.clone());
    let img = images
        .get(req(GetImageRequest { name: reference.to_string() }, ns, None))
        .await
        .map_err(|e| anyhow!("{reference} is not an image in containerd namespace {ns}: {}\nhint: run `docker modelpack pull --containerd {reference}` first", e.message()))?
        .into_inner()
        .image
        .ok_or_else(|| anyhow!("{reference}: empty image record"))?;
    let target = img
        .target
        .ok_or_else(|| anyhow!("{reference}: image has no target"))?;
    let manifest = Manifest::parse(&read_content(&ch, ns, &target.digest).await?, "manifest")?;
    let config = ModelConfig::parse(
        &read_content(&ch, ns, &manifest.config.digest.to_string()).await?,
        "config",
    )?;
    let top = chain_ids(&config.modelfs.diff_ids)
        .pop()
        .ok_or_else(|| anyhow!("{reference} has no layers"))?;
    let key = format!(
        "modelpack-mount-{}",
        Digest::of(dir.display().to_string().as_bytes()).short()
    );
    let mut snaps =
        containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient::new(
            ch.clone(),
        );
    let labels = HashMap::from([(
        "containerd.io/gc.root".to_string(),
        chrono::Utc::now().to_rfc3339(),
    )]);
    let mounts: Vec<Mount> = match snaps
        .view(req(
            ViewSnapshotRequest {
                snapshotter: c.snapshotter.clone(),
                key: key.clone(),
                parent: top,
                labels,
            },
            ns,
            None,
        ))
        .await
    {
        Ok(r) => r.into_inner().mounts,
        Err(e) if e.code() == tonic::Code::AlreadyExists => {
            snaps
                .mounts(req(
                    MountsRequest {
                        snapshotter: c.snapshotter.clone(),
                        key: key.clone(),
                    },
                    ns,
                    None,
                ))
                .await?
                .into_inner()
                .mounts
        }
        Err(e) => bail!(
            "view of {reference} through snapshotter {:?}: {}",
            c.snapshotter,
            e.message()
        ),
    };
    let m = mounts
        .first()
        .ok_or_else(|| anyhow!("snapshotter returned no mounts"))?;
    if m.r#type != "bind" {
        bail!("expected a bind mount for a model view, got {}", m.r#type);
    }
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some(m.source.as_str()),
        &dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind mount onto {}", dir.display()))?;
    nix::mount::mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .context("remount read-only")?;
    let st = MountState {
        address: c.address.clone(),
        namespace: ns.to_string(),
        snapshotter: c.snapshotter.clone(),
        key,
    };
    let sp = state_path(&dir);
    std::fs::create_dir_all(sp.parent().expect("has parent"))?;
    std::fs::write(&sp, serde_json::to_vec(&st)?)?;
    Ok(())
}

pub async fn umount(dir: &Path) -> Result<()> {
    let dir =
        std::fs::canonicalize(dir).with_context(|| format!("{} does not exist", dir.display()))?;
    let sp = state_path(&dir);
    let st: MountState = serde_json::from_slice(
        &std::fs::read(&sp)
            .with_context(|| format!("{} was not mounted by modelpack", dir.display()))?,
    )?;
    nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH)
        .with_context(|| format!("unmount {}", dir.display()))?;
    let ch = connect(&st.address).await?;
    let mut snaps =
        containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient::new(ch);
    snaps
        .remove(req(
            RemoveSnapshotRequest {
                snapshotter: st.snapshotter,
                key: st.key,
            },
            &st.namespace,
            None,
        ))
        .await
        .map_err(|e| anyhow!("remove view: {}", e.message()))?;
    let _ = std::fs::remove_file(sp);
    Ok(())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a.to_string());
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()).to_string());
    }
}
