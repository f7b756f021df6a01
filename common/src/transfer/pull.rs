//! Pull into the local store, straight into a directory, or only the files
//! matching patterns. Downloads go to `.partial` files that survive
//! interruption and resume with `Range`; every blob is verified before it is
//! renamed into place.

use std::path::{Path, PathBuf};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::extract::{self, ExtractOptions, ExtractStats};
use crate::manifest::{Descriptor, Manifest};
use crate::media::LayerFormat;
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::store::Store;

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
    #[serde(skip)]
    pub manifest: Option<Manifest>,
    pub extract: Option<ExtractStats>,
}

/// Fetches and parses a model manifest; an index is refused with a clear message.
async fn fetch_manifest(
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
    Ok((fetched.bytes, fetched.digest, manifest))
}

/// Pulls `remote` into the store (skipping blobs already there) and tags it.
pub async fn pull_to_store(
    client: &RegistryClient,
    store: &Store,
    remote: &Reference,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<PullReport> {
    let (bytes, digest, manifest) = fetch_manifest(client, remote).await?;
    let known = KnownBlobs::open(store);
    let mut blobs = vec![(manifest.config.clone(), "config".to_string())];
    for l in &manifest.layers {
        if !blobs.iter().any(|(d, _)| d.digest == l.digest) {
            blobs.push((l.clone(), l.filepath().unwrap_or("layer").to_string()));
        }
    }
    let results: Vec<(bool, u64)> = stream::iter(blobs.into_iter().map(|(desc, name)| {
        let known = &known;
        async move {
            known.record(&desc.digest, &remote.registry, &remote.repository);
            if store.has_blob(&desc.digest) {
                progress.blob_finished(&name, desc.size, "exists");
                return Ok((false, 0));
            }
            progress.blob_started(&name, desc.size);
            let partial = store.partial_path(&desc.digest);
            client
                .pull_blob_to_file(remote, &desc.digest, desc.size, &partial, progress)
                .await?;
            sync_and_rename(&partial, &store.blob_path(&desc.digest))?;
            progress.blob_finished(&name, desc.size, "downloaded");
            Ok::<_, Error>((true, desc.size))
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect()
    .await?;
    store.put_bytes(&bytes)?;
    let mut desc = Descriptor::new(
        crate::manifest::sniff_media_type(&bytes)
            .unwrap_or_else(|| crate::media::OCI_MANIFEST.into()),
        digest.clone(),
        bytes.len() as u64,
    );
    desc.artifact_type = manifest.artifact_type.clone();
    if remote.tag.is_some() || remote.digest.is_none() {
        store.tag(remote, &desc)?;
    } else {
        store.record_untagged(remote, &desc)?;
    }
    known.save();
    Ok(PullReport {
        reference: remote.to_string(),
        digest,
        layers: manifest.layers.len(),
        blobs_downloaded: results.iter().filter(|r| r.0).count(),
        blobs_skipped: results.iter().filter(|r| !r.0).count(),
        bytes_received: results.iter().map(|r| r.1).sum(),
        manifest: Some(manifest),
        extract: None,
    })
}

fn sync_and_rename(partial: &Path, dest: &Path) -> Result<()> {
    std::fs::File::open(partial)
        .and_then(|f| f.sync_all())
        .ctx("fsync", partial)?;
    std::fs::rename(partial, dest).ctx("rename into place", dest)
}

/// Streams `remote`'s files straight into `out` (nothing kept in the store).
pub async fn pull_to_dir(
    client: &RegistryClient,
    remote: &Reference,
    out: &Path,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<PullReport> {
    fetch_to_dir(client, remote, out, &[], concurrency, progress).await
}

/// Like [`pull_to_dir`], restricted to layers whose file path matches one of
/// `patterns` (globs with `**`); each matching layer is fetched once.
pub async fn fetch_to_dir(
    client: &RegistryClient,
    remote: &Reference,
    out: &Path,
    patterns: &[String],
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<PullReport> {
    let (_, digest, manifest) = fetch_manifest(client, remote).await?;
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
        if wanted
            && !selected
                .iter()
                .any(|s| s.digest == l.digest && s.filepath() == l.filepath())
        {
            selected.push(l.clone());
        }
    }
    if matcher.is_some() && selected.is_empty() {
        return Err(Error::NotFound {
            what: format!("files matching {patterns:?} in {remote}"),
            hint: Some(format!("`inspect --remote {remote}` lists the file paths")),
        });
    }
    std::fs::create_dir_all(out).ctx("create output directory", out)?;
    let partial_dir = out.join(".modelpack-partial");
    std::fs::create_dir_all(&partial_dir).ctx("create directory", &partial_dir)?;
    let opts = ExtractOptions::default();
    let results: Vec<(bool, u64, ExtractStats)> = stream::iter(selected.iter().map(|layer| {
        let partial_dir = &partial_dir;
        let opts = &opts;
        async move {
            let name = layer.filepath().unwrap_or("layer").to_string();
            if let Some(dest) = raw_destination(layer, out)?
                && extract::is_extracted(&dest, layer)
            {
                progress.blob_finished(&name, layer.size, "unchanged");
                return Ok((
                    false,
                    0,
                    ExtractStats {
                        files_skipped: 1,
                        ..Default::default()
                    },
                ));
            }
            progress.blob_started(&name, layer.size);
            let partial = partial_dir.join(format!("{}.partial", layer.digest.hex()));
            client
                .pull_blob_to_file(remote, &layer.digest, layer.size, &partial, progress)
                .await?;
            let layer2 = layer.clone();
            let out2 = out.to_path_buf();
            let opts2 = opts.clone();
            let stats = tokio::task::spawn_blocking(move || {
                extract::place_verified_blob(&layer2, &partial, &out2, &opts2)
            })
            .await
            .map_err(|e| Error::Invalid(format!("extract worker failed: {e}")))??;
            progress.blob_finished(&name, layer.size, "downloaded");
            Ok::<_, Error>((true, layer.size, stats))
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect()
    .await?;
    let _ = std::fs::remove_dir(&partial_dir);
    let mut stats = ExtractStats::default();
    for (_, _, s) in &results {
        stats.files_written += s.files_written;
        stats.files_skipped += s.files_skipped;
        stats.bytes_written += s.bytes_written;
    }
    Ok(PullReport {
        reference: remote.to_string(),
        digest,
        layers: selected.len(),
        blobs_downloaded: results.iter().filter(|r| r.0).count(),
        blobs_skipped: results.iter().filter(|r| !r.0).count(),
        bytes_received: results.iter().map(|r| r.1).sum(),
        manifest: Some(manifest),
        extract: Some(stats),
    })
}

fn raw_destination(layer: &Descriptor, out: &Path) -> Result<Option<PathBuf>> {
    if extract::layer_format(layer) != LayerFormat::Raw {
        return Ok(None);
    }
    match layer.filepath() {
        Some(p) => Ok(Some(
            out.join(extract::safe_relative_path(&extract::layer_name(layer), p)?),
        )),
        None => Ok(None),
    }
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
