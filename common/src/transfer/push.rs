//! Push from the local store, and single-blob upload.

use std::path::Path;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::Reference;
use crate::registry::{PushOutcome, RegistryClient};
use crate::store::Store;

use super::{KnownBlobs, TransferProgress};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobAction {
    /// The registry already had it.
    Exists,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Bytes were sent.
    Uploaded,
}

impl BlobAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobAction::Exists => "exists",
            BlobAction::Mounted => "mounted",
            BlobAction::Uploaded => "uploaded",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobReport {
    pub digest: Digest,
    pub size: u64,
    pub name: String,
    pub action: BlobAction,
    pub bytes_sent: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    pub reference: String,
    pub digest: Digest,
    pub blobs: Vec<BlobReport>,
    pub bytes_sent: u64,
    /// Chunk index referrers published along (digests).
    pub referrers: Vec<Digest>,
    /// Signature referrers published along (digests).
    pub signatures: Vec<Digest>,
}

fn action(o: &PushOutcome) -> (BlobAction, u64) {
    match o {
        PushOutcome::Exists => (BlobAction::Exists, 0),
        PushOutcome::Mounted => (BlobAction::Mounted, 0),
        PushOutcome::Uploaded { bytes_sent } => (BlobAction::Uploaded, *bytes_sent),
    }
}

/// Pushes a stored model to `remote` (config and layers concurrently, manifest last).
pub async fn push_from_store(
    client: &RegistryClient,
    store: &Store,
    local: &Reference,
    remote: &Reference,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<PushReport> {
    let loaded = store.load_manifest(local)?;
    let known = KnownBlobs::open(store);
    let mut blobs = vec![(
        loaded.manifest.config.digest.clone(),
        loaded.manifest.config.size,
        "config".to_string(),
    )];
    for l in &loaded.manifest.layers {
        if !blobs.iter().any(|(d, _, _)| d == &l.digest) {
            blobs.push((
                l.digest.clone(),
                l.size,
                l.filepath().unwrap_or("layer").to_string(),
            ));
        }
    }
    for (d, _, name) in &blobs {
        if !store.has_blob(d) {
            return Err(Error::NotFound {
                what: format!("blob {d} ({name}) of {local} in the local store"),
                hint: Some(format!("pull or rebuild {local} first")),
            });
        }
    }
    let reports: Vec<BlobReport> = stream::iter(blobs.into_iter().map(|(digest, size, name)| {
        let known = &known;
        async move {
            progress.blob_started(&name, size);
            let candidates = known.mount_candidates(&digest, &remote.registry, &remote.repository);
            let outcome = client
                .push_blob_file(
                    remote,
                    &digest,
                    size,
                    &store.blob_path(&digest),
                    &candidates,
                    &super::BlobProgress {
                        parent: progress,
                        name: &name,
                    },
                )
                .await?;
            let (action, bytes_sent) = action(&outcome);
            known.record(&digest, &remote.registry, &remote.repository);
            progress.blob_finished(&name, size, action.as_str());
            Ok::<_, Error>(BlobReport {
                digest,
                size,
                name,
                action,
                bytes_sent,
            })
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect()
    .await?;
    let media_type = crate::manifest::sniff_media_type(&loaded.bytes)
        .unwrap_or_else(|| crate::media::OCI_MANIFEST.into());
    let target = if remote.digest.is_some() && remote.tag.is_none() {
        remote.clone()
    } else {
        remote.with_tag(remote.tag_or_default().unwrap_or("latest"))
    };
    let digest = client
        .put_manifest(&target, &loaded.bytes, &media_type)
        .await?;
    if digest != loaded.digest {
        return Err(Error::DigestMismatch {
            what: format!("manifest pushed to {remote}"),
            expected: loaded.digest.to_string(),
            actual: digest.to_string(),
        });
    }
    known.save();
    let referrers = super::referrers::push_from_store(client, store, remote, &digest).await?;
    let mut signatures = Vec::new();
    for (_, bytes, _) in crate::signing::referrer::local(store, &digest)? {
        signatures.push(crate::signing::referrer::publish(client, store, remote, &bytes).await?);
    }
    let bytes_sent = reports.iter().map(|r| r.bytes_sent).sum();
    Ok(PushReport {
        reference: target.to_string(),
        digest,
        blobs: reports,
        bytes_sent,
        referrers,
        signatures,
    })
}

/// Uploads one file as a raw blob to `repository` (no manifest), so a later
/// `build --output-remote` finds it with a HEAD and skips it. Returns its digest.
pub async fn upload_file(
    client: &RegistryClient,
    store: &Store,
    file: &Path,
    repository: &Reference,
    progress: &dyn TransferProgress,
) -> Result<BlobReport> {
    let path = file.to_path_buf();
    let (digest, size) = tokio::task::spawn_blocking(move || crate::digest::hash_file(&path))
        .await
        .map_err(|e| Error::Invalid(format!("hashing worker failed: {e}")))??;
    let name = file.display().to_string();
    progress.blob_started(&name, size);
    let known = KnownBlobs::open(store);
    let candidates = known.mount_candidates(&digest, &repository.registry, &repository.repository);
    let outcome = client
        .push_blob_file(
            repository,
            &digest,
            size,
            file,
            &candidates,
            &super::BlobProgress {
                parent: progress,
                name: &name,
            },
        )
        .await?;
    let (action, bytes_sent) = action(&outcome);
    known.record(&digest, &repository.registry, &repository.repository);
    known.save();
    progress.blob_finished(&name, size, action.as_str());
    Ok(BlobReport {
        digest,
        size,
        name,
        action,
        bytes_sent,
    })
}
