//! `mount --containerd` / `umount`: a read-only View of a model's chain at a
//! directory (for `ctr run --mount`, `nerdctl run -v`), and its removal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use containerd_client::services::v1::GetImageRequest;
use containerd_client::services::v1::snapshots::{
    MountsRequest, RemoveSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::types::Mount;
use modelpack_common::Digest;
use modelpack_common::config::ModelConfig;
use modelpack_common::manifest::Manifest;
use serde::{Deserialize, Serialize};

use super::ContainerdArgs;
use super::client::*;

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
