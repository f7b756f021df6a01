//! `build --output-remote`: pack straight into a registry, nothing stored
//! locally except the digest cache (with the small chunk index blobs, so an
//! unchanged raw file needs no read on the next build either). Unchanged
//! files are recognised from the cache and skipped with a HEAD (also after
//! `upload` pre-pushed them); raw layers are uploaded from the source file
//! itself, encoded layers through a temp file that is removed afterwards.
//! The chunk index referrer goes last, after the model manifest it names.

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::config::{ModelDescriptor, ModelSettings};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Annotations;
use crate::media::LayerFormat;
use crate::pack::{self, DigestCache, LayerEncoding, PackFile, PackOptions};
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::store::Store;

use super::{KnownBlobs, PushReport, TransferProgress, push::BlobReport};

#[allow(clippy::too_many_arguments)]
pub async fn pack_to_registry(
    client: &RegistryClient,
    store: &Store,
    remote: &Reference,
    files: &[PackFile],
    descriptor: ModelDescriptor,
    settings: ModelSettings,
    annotations: Annotations,
    opts: &PackOptions,
    progress: &dyn TransferProgress,
) -> Result<PushReport> {
    pack::check_unique_paths(files)?;
    let cache = DigestCache::open(store);
    let known = KnownBlobs::open(store);
    let results: Vec<(LayerEncoding, BlobReport)> = stream::iter(files.iter().map(|file| {
        let (cache, known) = (&cache, &known);
        async move {
            progress.blob_started(&file.rel_path, file.size);
            let (enc, temp) = match cache.lookup(file, opts) {
                Some(enc)
                    if opts.format == LayerFormat::Raw
                        && enc
                            .chunks
                            .as_ref()
                            .is_none_or(|c| pack::get_index(store, c).is_some()) =>
                {
                    (enc, None)
                }
                _ => encode(store, file, opts).await?,
            };
            cache.record(file, opts, &enc);
            let source = temp.clone().unwrap_or_else(|| file.abs_path.clone());
            let candidates =
                known.mount_candidates(&enc.digest, &remote.registry, &remote.repository);
            let outcome = client
                .push_blob_file(
                    remote,
                    &enc.digest,
                    enc.size,
                    &source,
                    &candidates,
                    progress,
                )
                .await;
            if let Some(t) = &temp {
                let _ = std::fs::remove_file(t);
            }
            let outcome = outcome?;
            known.record(&enc.digest, &remote.registry, &remote.repository);
            let (action, bytes_sent) = match outcome {
                crate::registry::PushOutcome::Exists => (super::BlobAction::Exists, 0),
                crate::registry::PushOutcome::Mounted => (super::BlobAction::Mounted, 0),
                crate::registry::PushOutcome::Uploaded { bytes_sent } => {
                    (super::BlobAction::Uploaded, bytes_sent)
                }
            };
            progress.blob_finished(&file.rel_path, file.size, action.as_str());
            let report = BlobReport {
                digest: enc.digest.clone(),
                size: enc.size,
                name: file.rel_path.clone(),
                action,
                bytes_sent,
            };
            Ok::<_, Error>((enc, report))
        }
    }))
    .buffered(opts.concurrency.max(1))
    .try_collect()
    .await?;
    cache.save();
    let layers = files
        .iter()
        .zip(&results)
        .map(|(f, (enc, _))| (pack::layer_descriptor(f, enc, opts), enc.diff_id.clone()))
        .collect();
    let (_, config_bytes, manifest) =
        pack::assemble(layers, descriptor, settings, annotations, opts);
    client.push_blob_bytes(remote, &config_bytes).await?;
    let manifest_bytes = manifest.to_bytes();
    let target = remote.with_tag(remote.tag_or_default().unwrap_or("latest"));
    let digest = client
        .put_manifest(&target, &manifest_bytes, crate::media::OCI_MANIFEST)
        .await?;
    if digest != Digest::of(&manifest_bytes) {
        return Err(Error::DigestMismatch {
            what: format!("manifest pushed to {target}"),
            expected: Digest::of(&manifest_bytes).to_string(),
            actual: digest.to_string(),
        });
    }
    known.save();
    let indexes: Vec<(Digest, u64, Digest)> = results
        .iter()
        .filter_map(|(enc, _)| {
            let c = enc.chunks.clone()?;
            let size = pack::get_index(store, &c)?.len() as u64;
            Some((c, size, enc.digest.clone()))
        })
        .collect();
    let mut referrers = Vec::new();
    if let Some(bytes) = pack::chunk_referrer(&manifest_bytes, &digest, &indexes) {
        let lookup = |d: &Digest| {
            pack::get_index(store, d).ok_or_else(|| Error::NotFound {
                what: format!("chunk index {d} in the digest cache"),
                hint: Some("build again: the cache was cleared during the build".into()),
            })
        };
        let d = super::referrers::publish(client, remote, &bytes, &lookup).await?;
        referrers.push(d);
    }
    let blobs: Vec<BlobReport> = results.into_iter().map(|(_, r)| r).collect();
    Ok(PushReport {
        reference: target.to_string(),
        digest,
        bytes_sent: blobs.iter().map(|b| b.bytes_sent).sum(),
        blobs,
        referrers,
        signatures: Vec::new(),
    })
}

/// Hashes a raw file (indexing it in the same read), or encodes a tar layer
/// into a temp file in the store's tmp dir. The index blob goes into the digest cache.
async fn encode(
    store: &Store,
    file: &PackFile,
    opts: &PackOptions,
) -> Result<(LayerEncoding, Option<std::path::PathBuf>)> {
    let (file, opts, store) = (file.clone(), opts.clone(), store.clone());
    tokio::task::spawn_blocking(move || {
        let (encoded, temp) = if opts.format == LayerFormat::Raw {
            (
                pack::encode_layer(&file, &opts, &mut std::io::sink(), &|_| {})?,
                None,
            )
        } else {
            let (path, f) = crate::store::tempfile_in(&store.tmp_dir())?;
            let mut w = std::io::BufWriter::with_capacity(crate::digest::COPY_BUF, f);
            let enc = pack::encode_layer(&file, &opts, &mut w, &|_| {});
            let enc = enc.and_then(|e| {
                use std::io::Write;
                w.flush().map_err(|err| Error::io("write", &path, err))?;
                Ok(e)
            });
            match enc {
                Ok(e) => (e, Some(path)),
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
            }
        };
        let mut enc = encoded.enc;
        if let Some(i) = encoded.index {
            match pack::put_index(&store, &i.to_bytes()) {
                Ok(d) => enc.chunks = Some(d),
                Err(e) => {
                    if let Some(t) = &temp {
                        let _ = std::fs::remove_file(t);
                    }
                    return Err(e);
                }
            }
        }
        Ok((enc, temp))
    })
    .await
    .map_err(|e| Error::Invalid(format!("encoding worker failed: {e}")))?
}
