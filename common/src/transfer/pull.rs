//! Pull into the local store, straight into a directory, or only the files
//! matching patterns. Downloads go to locked `.partial` files in the store's
//! private scratch directory (never inside the output, where a hostile layer
//! could plant a symlink); they survive interruption and resume with `Range`;
//! every blob is verified before it is renamed into place. Each digest is
//! downloaded once however many layers share it.

use std::path::Path;
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::confined::ConfinedDir;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::extract::{self, ExtractOptions, ExtractStats, Target};
use crate::manifest::{Descriptor, Manifest};
use crate::media::LayerFormat;
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::store::{PartialBlob, Store};

use super::{KnownBlobs, TransferProgress};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullReport {
    pub reference: String,
    pub digest: Digest,
    pub layers: usize,
    pub blobs_downloaded: usize,
    pub blobs_skipped: usize,
    pub bytes_received: u64,
    /// Chunk index referrers copied into the store (pull into the store only).
    pub chunk_indexes: usize,
    /// Referrers refused (malformed, oversize, not describing this model).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What happened to each blob, like push's `blobs`.
    pub blobs: Vec<PulledBlob>,
    #[serde(skip)]
    pub manifest: Option<Manifest>,
    pub extract: Option<ExtractStats>,
}

/// One blob of a pull: what was done with it and how many bytes came.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PulledBlob {
    pub digest: Digest,
    pub size: u64,
    /// The file path it holds (`config` for the config).
    pub name: String,
    /// `exists` (already stored), `unchanged` (already extracted) or `downloaded`.
    pub action: &'static str,
    pub bytes_received: u64,
    /// Where the download picked up an earlier attempt's partial file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<u64>,
}

impl PulledBlob {
    fn kept(desc: &Descriptor, name: &str, action: &'static str) -> PulledBlob {
        PulledBlob {
            digest: desc.digest.clone(),
            size: desc.size,
            name: name.to_string(),
            action,
            bytes_received: 0,
            resumed_at: None,
        }
    }

    fn downloaded(desc: &Descriptor, name: &str, resumed_at: Option<u64>) -> PulledBlob {
        PulledBlob {
            bytes_received: desc.size - resumed_at.unwrap_or(0),
            resumed_at,
            ..PulledBlob::kept(desc, name, "downloaded")
        }
    }
}

impl PullReport {
    fn new(
        remote: &Reference,
        digest: Digest,
        manifest: Manifest,
        layers: usize,
        blobs: Vec<PulledBlob>,
    ) -> PullReport {
        let downloaded = blobs.iter().filter(|b| b.action == "downloaded").count();
        PullReport {
            reference: remote.to_string(),
            digest,
            layers,
            blobs_downloaded: downloaded,
            blobs_skipped: blobs.len() - downloaded,
            bytes_received: blobs.iter().map(|b| b.bytes_received).sum(),
            chunk_indexes: 0,
            warnings: Vec::new(),
            blobs,
            manifest: Some(manifest),
            extract: None,
        }
    }
}

/// Fetches and parses a model manifest; an index, or a manifest that is no
/// model of any kind we read (a container image), is refused before anything
/// is stored.
pub(crate) async fn fetch_manifest(
    client: &RegistryClient,
    remote: &Reference,
) -> Result<(Vec<u8>, Digest, Manifest)> {
    let fetched = client.get_manifest(remote).await?;
    let mt = fetched.media_type.as_str();
    if mt == crate::media::OCI_INDEX || mt == crate::media::DOCKER_MANIFEST_LIST {
        return Err(Error::Artifact(format!(
            "{remote} is an image index, not a model manifest; pull one of its manifests by digest"
        )));
    }
    let manifest = Manifest::parse(&fetched.bytes, &format!("manifest of {remote}"))?;
    if !manifest.is_model() {
        return Err(Error::Artifact(crate::peer::not_a_model(
            &remote.to_string(),
            &manifest,
        )));
    }
    let limit = client.options().max_config_size;
    if manifest.config.size > limit {
        return Err(Error::TooLarge {
            what: format!("config {} of {remote}", manifest.config.digest),
            limit,
            declared: Some(manifest.config.size),
        });
    }
    Ok((fetched.bytes, fetched.digest, manifest))
}

/// The descriptor a store records for a fetched manifest: its bytes'
/// media type (OCI when they do not say), digest, size and artifact type.
pub(crate) fn manifest_descriptor(
    bytes: &[u8],
    digest: &Digest,
    manifest: &Manifest,
) -> Descriptor {
    let mut desc = Descriptor::new(
        crate::manifest::sniff_media_type(bytes)
            .unwrap_or_else(|| crate::media::OCI_MANIFEST.into()),
        digest.clone(),
        bytes.len() as u64,
    );
    desc.artifact_type = manifest.artifact_type.clone();
    desc
}

/// Pulls `remote` into the store (skipping blobs already there) and tags it.
pub async fn pull_to_store(
    client: &RegistryClient,
    store: &Store,
    remote: &Reference,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<PullReport> {
    pull_to_store_checked(client, store, remote, concurrency, progress, None).await
}

/// Opens one blob of the model being pulled: from the store, or from the
/// scratch directory where a checked pull stages what it downloaded.
pub type OpenBlob<'a> = dyn Fn(&Digest) -> Result<std::fs::File> + 'a;

/// A check a pulled model must pass before any of it is kept (e.g. a
/// signature over the files of tar layers, known only from their bytes).
pub type BeforeKeep<'a> = dyn Fn(&Manifest, &OpenBlob<'_>) -> Result<()> + Sync + 'a;

/// [`pull_to_store`] with a check run once every blob is downloaded and
/// verified but before anything is kept: downloads stay staged (locked
/// partial files in the scratch directory) until `before_keep` passes, so a
/// refusal discards them and the store is exactly as it was — no blob, no
/// manifest, no tag moved, no referrer recorded.
pub async fn pull_to_store_checked(
    client: &RegistryClient,
    store: &Store,
    remote: &Reference,
    concurrency: usize,
    progress: &dyn TransferProgress,
    before_keep: Option<&BeforeKeep<'_>>,
) -> Result<PullReport> {
    let stage = before_keep.is_some();
    let (bytes, digest, manifest) = fetch_manifest(client, remote).await?;
    crate::extract::check_layer_paths(&manifest.layers)?;
    let _lease = store.lease()?;
    let scratch = store.scratch()?;
    let known = KnownBlobs::open(store);
    let mut blobs = vec![(manifest.config.clone(), "config".to_string())];
    for l in &manifest.layers {
        if !blobs.iter().any(|(d, _)| d.digest == l.digest) {
            blobs.push((l.clone(), l.filepath().unwrap_or("layer").to_string()));
        }
    }
    // The total bar's length: what is not in the store yet.
    progress.total(
        blobs
            .iter()
            .filter(|(d, _)| !store.has_blob(&d.digest))
            .fold(0u64, |acc, (d, _)| acc.saturating_add(d.size)),
    );
    type Staged = (Digest, u64, PartialBlob);
    let results: Result<Vec<(PulledBlob, Option<Staged>)>> =
        stream::iter(blobs.into_iter().map(|(desc, name)| {
            let known = &known;
            let scratch = &scratch;
            async move {
                known.record(&desc.digest, &remote.registry, &remote.repository);
                if store.has_blob(&desc.digest) {
                    progress.blob_finished(&name, desc.size, "exists");
                    return Ok((PulledBlob::kept(&desc, &name, "exists"), None));
                }
                progress.blob_started(&name, desc.size);
                let partial = PartialBlob::open(scratch, &desc.digest).await?;
                if store.has_blob(&desc.digest) {
                    // Another pull finished it while we waited for its lock.
                    let _ = scratch.remove_file(&partial.name);
                    progress.blob_finished(&name, desc.size, "exists");
                    return Ok((PulledBlob::kept(&desc, &name, "exists"), None));
                }
                let blob_progress = super::BlobProgress {
                    parent: progress,
                    name: &name,
                };
                let resumed_at =
                    download(client, remote, &desc, scratch, &partial, &blob_progress).await?;
                progress.blob_finished(&name, desc.size, "downloaded");
                let pulled = PulledBlob::downloaded(&desc, &name, resumed_at);
                if stage {
                    // Kept locked and unnamed until the check passes.
                    return Ok((pulled, Some((desc.digest.clone(), desc.size, partial))));
                }
                store.commit_partial(scratch, &partial, &desc.digest, desc.size)?;
                Ok::<_, Error>((pulled, None))
            }
        }))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await;
    // The stream (and every unstaged download's lock) is dropped by now.
    let results = results.inspect_err(|e| discard_partials(e, &scratch, &manifest))?;
    let (results, staged): (Vec<PulledBlob>, Vec<Option<Staged>>) = results.into_iter().unzip();
    let staged: Vec<Staged> = staged.into_iter().flatten().collect();
    if let Some(check) = before_keep {
        let open = |d: &Digest| -> Result<std::fs::File> {
            match staged.iter().find(|(s, ..)| s == d) {
                Some((_, _, p)) => scratch.open_file(&p.name, false),
                None => store.open_blob(d),
            }
        };
        if let Err(e) = check(&manifest, &open) {
            for (_, _, p) in &staged {
                let _ = scratch.remove_file(&p.name);
            }
            return Err(e);
        }
    }
    for (d, size, p) in &staged {
        store.commit_partial(&scratch, p, d, *size)?;
    }
    drop(staged);
    store.put_bytes(&bytes)?;
    let desc = manifest_descriptor(&bytes, &digest, &manifest);
    if remote.tag.is_some() || remote.digest.is_none() {
        store.tag(remote, &desc)?;
    } else {
        store.record_untagged(remote, &desc)?;
    }
    known.save();
    // The model is complete and tagged; its indexes are an optimisation, so
    // a registry that fails to list or serve them costs a warning, not the pull.
    let (chunk_indexes, warnings) =
        match super::referrers::pull_into_store(client, store, remote, &desc, &manifest).await {
            Ok(r) => r,
            Err(e) => (0, vec![format!("chunk index referrers not copied: {e}")]),
        };
    let layers = manifest.layers.len();
    Ok(PullReport {
        chunk_indexes,
        warnings,
        ..PullReport::new(remote, digest, manifest, layers, results)
    })
}

/// After a failure that retrying cannot fix (hostile or inconsistent
/// artifact), the partial downloads of this model are removed: there is
/// nothing worth resuming. A dropped connection keeps them for the next run.
fn discard_partials(e: &Error, scratch: &ConfinedDir, manifest: &Manifest) {
    if matches!(e, Error::Registry { message, .. } if message.starts_with("connection failed")) {
        return;
    }
    for d in std::iter::once(&manifest.config).chain(manifest.layers.iter()) {
        let name = std::ffi::OsString::from(format!("{}.partial", d.digest.hex()));
        // A cancelled download's last write may still hold its (shared) file
        // description, and so the lock, for a moment on tokio's blocking pool.
        for _ in 0..40 {
            if !crate::store::is_in_use(scratch, &name) {
                let _ = scratch.remove_file(&name);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }
}

/// Downloads one blob into its locked partial file; bytes that fail
/// verification are removed (a dropped connection keeps them for resuming).
async fn download(
    client: &RegistryClient,
    remote: &Reference,
    desc: &Descriptor,
    scratch: &ConfinedDir,
    partial: &PartialBlob,
    progress: &dyn TransferProgress,
) -> Result<Option<u64>> {
    // What an earlier, interrupted attempt left (the client re-hashes and continues it).
    let resumed_at = partial
        .file
        .metadata()
        .map(|m| m.len())
        .ok()
        .filter(|&n| n > 0 && n < desc.size);
    let r = client
        .pull_blob_to_file(
            remote,
            &desc.digest,
            desc.size,
            &partial.file,
            &partial.shown,
            progress,
        )
        .await;
    if let Err(Error::DigestMismatch { .. } | Error::SizeMismatch { .. }) = &r {
        let _ = scratch.remove_file(&partial.name);
    }
    r.map(|()| resumed_at)
}

/// Streams `remote`'s files straight into `out` (nothing kept in the store
/// but resumable partial downloads in its private scratch directory).
pub async fn pull_to_dir(
    client: &RegistryClient,
    store: &Store,
    remote: &Reference,
    out: &Path,
    concurrency: usize,
    force: bool,
    progress: &dyn TransferProgress,
) -> Result<PullReport> {
    fetch_to_dir(
        client,
        store,
        remote,
        out,
        &[],
        concurrency,
        force,
        progress,
    )
    .await
}

/// Like [`pull_to_dir`], restricted to layers whose file path matches one of
/// `patterns` (globs with `**`); each matching layer is fetched once. An
/// existing file with other content is refused before anything moves,
/// unless `force`.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_to_dir(
    client: &RegistryClient,
    store: &Store,
    remote: &Reference,
    out: &Path,
    patterns: &[String],
    concurrency: usize,
    force: bool,
    progress: &dyn TransferProgress,
) -> Result<PullReport> {
    let (_, digest, manifest) = fetch_manifest(client, remote).await?;
    crate::extract::check_layer_paths(&manifest.layers)?;
    let matcher = if patterns.is_empty() {
        None
    } else {
        Some(build_globs(patterns)?)
    };
    let mut selected: Vec<Descriptor> = Vec::new();
    for l in &manifest.layers {
        let path = l.filepath().unwrap_or_default();
        let wanted = match &matcher {
            None => true,
            Some(m) => m.is_match(path) || m.is_match(path.trim_end_matches('/')),
        };
        if wanted {
            selected.push(l.clone());
        }
    }
    if matcher.is_some() && selected.is_empty() {
        return Err(Error::NotFound {
            what: format!("files matching {patterns:?} in {remote}"),
            hint: Some(format!("`inspect --remote {remote}` lists the file paths")),
        });
    }
    // One download per digest; every layer naming it is placed from that one file.
    let mut by_digest: Vec<(Descriptor, Vec<Descriptor>)> = Vec::new();
    for l in selected.iter().cloned() {
        match by_digest.iter_mut().find(|(d, _)| d.digest == l.digest) {
            Some((_, users)) => users.push(l),
            None => by_digest.push((l.clone(), vec![l])),
        }
    }
    progress.total(
        by_digest
            .iter()
            .fold(0u64, |acc, (d, _)| acc.saturating_add(d.size)),
    );
    let target = Arc::new(Target::open(
        out,
        &ExtractOptions {
            force,
            ..Default::default()
        },
    )?);
    target.check_overwrites(&selected)?;
    let _lease = store.lease()?;
    let scratch = Arc::new(store.scratch()?);
    let results: Result<Vec<(PulledBlob, ExtractStats)>> =
        stream::iter(by_digest.into_iter().map(|(blob, users)| {
            let target = target.clone();
            let scratch = scratch.clone();
            async move {
                let name = blob.filepath().unwrap_or("layer").to_string();
                let pending: Vec<Descriptor> = users
                    .into_iter()
                    .filter(|l| {
                        let done =
                            extract::layer_format(l) == LayerFormat::Raw && target.is_extracted(l);
                        if done {
                            progress.blob_finished(
                                l.filepath().unwrap_or("layer"),
                                l.size,
                                "unchanged",
                            );
                        }
                        !done
                    })
                    .collect();
                if pending.is_empty() {
                    return Ok((
                        PulledBlob::kept(&blob, &name, "unchanged"),
                        ExtractStats {
                            files_skipped: 1,
                            ..Default::default()
                        },
                    ));
                }
                progress.blob_started(&name, blob.size);
                let partial = PartialBlob::open(&scratch, &blob.digest).await?;
                let blob_progress = super::BlobProgress {
                    parent: progress,
                    name: &name,
                };
                let resumed_at =
                    download(client, remote, &blob, &scratch, &partial, &blob_progress).await?;
                let pulled = PulledBlob::downloaded(&blob, &name, resumed_at);
                let stats = tokio::task::spawn_blocking(move || {
                    let mut stats = ExtractStats::default();
                    let n = pending.len();
                    let r = (|| {
                        for (i, l) in pending.iter().enumerate() {
                            stats.add(&target.place_downloaded(
                                l,
                                &scratch,
                                &partial.name,
                                i + 1 < n,
                            )?);
                        }
                        Ok::<_, Error>(())
                    })();
                    let _ = scratch.remove_file(&partial.name);
                    r.map(|()| stats)
                })
                .await
                .map_err(|e| Error::Invalid(format!("extract worker failed: {e}")))??;
                progress.blob_finished(&name, blob.size, "downloaded");
                Ok::<_, Error>((pulled, stats))
            }
        }))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await;
    let results = results.inspect_err(|e| discard_partials(e, &scratch, &manifest))?;
    target.sweep_stale_temps();
    let mut stats = ExtractStats::default();
    let mut blobs = Vec::with_capacity(results.len());
    for (b, s) in results {
        stats.add(&s);
        blobs.push(b);
    }
    Ok(PullReport {
        extract: Some(stats),
        ..PullReport::new(remote, digest, manifest, selected.len(), blobs)
    })
}

fn build_globs(patterns: &[String]) -> Result<globset::GlobSet> {
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns
        .iter()
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let g = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::Invalid(format!("invalid pattern {p:?}: {e}")))?;
        b.add(g);
    }
    b.build()
        .map_err(|e| Error::Invalid(format!("invalid patterns: {e}")))
}
