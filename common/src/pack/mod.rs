//! Packing: files → one layer each → config → manifest, deterministically.
//!
//! The same inputs give byte-identical layers, config and manifest on any
//! machine and any day: tar headers are canonical (fixed mtime, uid/gid 0, no
//! user names, normalised mode), compressors use fixed parameters, metadata
//! annotations carry normalised values, and `createdAt` comes only from
//! `SOURCE_DATE_EPOCH` (or the build's explicit choice). Each byte of a weight
//! file is read once: it is hashed (whole and per chunk) while it is copied.
//! Raw and tar layers get a chunk index blob whose digest the layer
//! descriptor carries, so the index is covered by the model digest.

mod cache;
mod layer;
mod plan;

pub use cache::{DigestCache, get_index, put_index};
pub use layer::{Encoded, LayerEncoding, encode_layer, finish_index, layer_media_type};
pub use plan::{BuildPlan, BuildRequest, plan_build};

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{
    FileMetadata, ModelConfig, ModelDescriptor, ModelFs, ModelSettings, rfc3339, rfc3339_nanos,
};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Annotations, Descriptor, Manifest};
use crate::media::{self, Family, LayerFormat, LayerKind, LayerType};
use crate::store::Store;

/// One file to pack.
#[derive(Debug, Clone)]
pub struct PackFile {
    /// '/'-separated path relative to the model root; becomes the filepath annotation.
    pub rel_path: String,
    pub abs_path: PathBuf,
    pub kind: LayerKind,
    pub size: u64,
    /// Permission bits of the source file.
    pub mode: u32,
    /// The kind came from a heuristic (`org.cncf.model.file.mediatype.untested`).
    pub untested: bool,
}

/// Knobs that change the bytes produced.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub family: Family,
    pub format: LayerFormat,
    /// mtime written into tar headers and metadata annotations (unix
    /// seconds); `None` records each source file's own mtime (nanoseconds in
    /// the metadata annotation, seconds in tar headers), so extracted files
    /// keep their dates in every consumer that applies the annotation — at the
    /// price of digests that change when a file is touched. `build` passes a
    /// fixed value only for `SOURCE_DATE_EPOCH` or `--no-creation-time`.
    pub mtime: Option<i64>,
    /// `descriptor.createdAt`; `None` omits it.
    pub created_at: Option<String>,
    /// Keep real mode/uid/gid/mtime in metadata annotations instead of normalised values.
    pub keep_metadata: bool,
    /// Files packed in parallel.
    pub concurrency: usize,
    /// Chunk size of the chunk indexes of raw and tar layers (checked with
    /// [`crate::chunk::check_chunk_size`]); `None` makes no index.
    pub chunk_size: Option<u64>,
    /// Whether raw layers may share the source files' extents in the store
    /// (XFS/btrfs; see [`crate::kcopy`]).
    pub reflink: crate::kcopy::Reflink,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            family: Family::Cncf,
            format: LayerFormat::Raw,
            mtime: Some(0),
            created_at: None,
            keep_metadata: false,
            concurrency: 4,
            chunk_size: Some(crate::chunk::DEFAULT_CHUNK_SIZE),
            reflink: crate::kcopy::Reflink::Auto,
        }
    }
}

impl PackOptions {
    /// `SOURCE_DATE_EPOCH` as (mtime, createdAt). Invalid values are an error, not silently ignored.
    pub fn source_date_epoch() -> Result<Option<i64>> {
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.trim().is_empty() => v.trim().parse::<i64>().map(Some).map_err(|_| {
                Error::Invalid(format!(
                    "SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970-01-01"
                ))
            }),
            _ => Ok(None),
        }
    }
}

/// What a finished build produced.
#[derive(Debug, Clone)]
pub struct Packed {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: Digest,
    pub config_bytes: Vec<u8>,
    /// Bytes read from source files (0 for layers served from the digest cache).
    pub bytes_read: u64,
    /// Layers whose blob was already present and needed no read.
    pub layers_cached: usize,
    /// The chunk index referrer (its blobs are in the store), when any layer
    /// has an index: bytes and digest. The caller records it under the
    /// model's reference ([`crate::chunkindex::local::put_referrer`]).
    pub referrer: Option<(Digest, Vec<u8>)>,
}

/// The normalised permission bits we record: 0755 for anything executable, else 0644.
pub fn normalized_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 { 0o755 } else { 0o644 }
}

/// The metadata annotation for a file, deterministic unless `keep_metadata`.
pub fn file_metadata(file: &PackFile, opts: &PackOptions) -> FileMetadata {
    let name = file
        .rel_path
        .rsplit('/')
        .next()
        .unwrap_or(&file.rel_path)
        .to_string();
    if opts.keep_metadata {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(&file.abs_path) {
            return FileMetadata {
                name,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: file.size,
                mtime: rfc3339(m.mtime()),
                typeflag: 0,
            };
        }
    }
    FileMetadata {
        name,
        mode: normalized_mode(file.mode),
        uid: 0,
        gid: 0,
        size: file.size,
        mtime: match opts.mtime {
            Some(t) => rfc3339(t),
            None => source_mtime(file).map_or_else(|| rfc3339(0), rfc3339_nanos),
        },
        typeflag: 0,
    }
}

/// A source file's mtime, with its nanoseconds.
pub(crate) fn source_mtime(file: &PackFile) -> Option<std::time::SystemTime> {
    std::fs::metadata(&file.abs_path)
        .and_then(|m| m.modified())
        .ok()
}

/// The layer descriptor for an encoded file.
pub fn layer_descriptor(file: &PackFile, enc: &LayerEncoding, opts: &PackOptions) -> Descriptor {
    let lt = LayerType::new(opts.family, file.kind, opts.format);
    let mut d = Descriptor::new(lt.media_type(), enc.digest.clone(), enc.size);
    let a = &mut d.annotations;
    a.insert(opts.family.filepath_annotation(), file.rel_path.clone());
    // The title is the name `oras pull` writes the blob's bytes under (and
    // CRI-O mounts it as). On a raw layer that is the file; on a tar layer
    // it would put archive bytes under the model file's name, and oras only
    // unpacks gzip tars whose entries sit below a directory named by the
    // title, which one file at the model root cannot be. So tar layers carry
    // none: `oras pull` skips them (docs/compatibility.md).
    if opts.format == LayerFormat::Raw {
        a.insert(media::ANNOTATION_TITLE.into(), file.rel_path.clone());
    }
    a.insert(
        opts.family.metadata_annotation(),
        file_metadata(file, opts).to_annotation(),
    );
    a.insert(opts.family.untested_annotation(), file.untested.to_string());
    if let Some(c) = &enc.chunks {
        a.insert(media::ANNOTATION_CHUNKS_DIGEST.into(), c.to_string());
    }
    d
}

/// The referrer of a packed model's indexes (`(index digest, size, layer
/// digest)` per indexed layer), or `None` when no layer has one.
pub fn chunk_referrer(
    manifest_bytes: &[u8],
    manifest_digest: &Digest,
    indexes: &[(Digest, u64, Digest)],
) -> Option<Vec<u8>> {
    if indexes.is_empty() {
        return None;
    }
    let subject = crate::chunkindex::referrer::subject_of(manifest_bytes, manifest_digest);
    Some(crate::chunkindex::referrer::build(&subject, indexes).to_bytes())
}

/// Builds the config and manifest around finished layers.
pub fn assemble(
    layers: Vec<(Descriptor, Digest)>,
    mut descriptor: ModelDescriptor,
    settings: ModelSettings,
    manifest_annotations: Annotations,
    opts: &PackOptions,
) -> (ModelConfig, Vec<u8>, Manifest) {
    descriptor.created_at = opts.created_at.clone();
    let config = ModelConfig {
        descriptor,
        config: settings,
        modelfs: ModelFs {
            fs_type: "layers".into(),
            diff_ids: layers.iter().map(|(_, diff)| diff.clone()).collect(),
        },
    };
    let config_bytes = config.to_bytes();
    let config_desc = Descriptor::new(
        opts.family.config_media_type(),
        Digest::of(&config_bytes),
        config_bytes.len() as u64,
    );
    let mut manifest = Manifest::model(
        opts.family,
        config_desc,
        layers.into_iter().map(|(d, _)| d).collect(),
    );
    manifest.annotations = manifest_annotations;
    (config, config_bytes, manifest)
}

/// Packs files into the local store. `progress` is called with bytes read.
pub fn pack_to_store(
    store: &Store,
    files: &[PackFile],
    descriptor: ModelDescriptor,
    settings: ModelSettings,
    manifest_annotations: Annotations,
    opts: &PackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Packed> {
    check_unique_paths(files)?;
    let cache = DigestCache::open(store);
    type Slot = Mutex<Option<Result<(LayerEncoding, bool)>>>;
    let results: Vec<Slot> = files.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicU64::new(0);
    let bytes_read = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..opts.concurrency.clamp(1, 32).min(files.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if i >= files.len() {
                        break;
                    }
                    let file = &files[i];
                    let r = (|| {
                        if let Some(enc) = cache.lookup(file, opts).filter(|e| {
                            store.has_blob(&e.digest)
                                && e.chunks.as_ref().is_none_or(|c| store.has_blob(c))
                        }) {
                            progress(file.size);
                            return Ok((enc, true));
                        }
                        let mut w = store.blob_writer()?;
                        // The blob writer hashes what it stores: each byte is read and hashed once.
                        let temp = w.temp_path().to_path_buf();
                        let counted = |n| {
                            bytes_read.fetch_add(n, Ordering::Relaxed);
                            progress(n)
                        };
                        let encoded = if opts.format == crate::media::LayerFormat::Raw {
                            layer::encode_raw_into_store(file, opts, &mut w, &counted)
                                .map(|ix| (None, ix))
                        } else {
                            layer::encode_layer_unhashed(file, opts, &mut w, &counted)
                        };
                        let (diff_id, indexer) = encoded.map_err(|e| match e {
                            // A full disk is the store's problem, not the source file's: name the store.
                            Error::Io { source, .. } if source.raw_os_error() == Some(28) => {
                                Error::io("write to the store", temp.clone(), source)
                            }
                            e => e,
                        })?;
                        let (digest, size) = w.commit(None)?;
                        let chunks = match layer::finish_index(indexer, file, opts, &digest, size) {
                            Some(i) => Some(store.put_bytes(&i.to_bytes())?),
                            None => None,
                        };
                        let enc = LayerEncoding {
                            diff_id: diff_id.unwrap_or_else(|| digest.clone()),
                            digest,
                            size,
                            chunks,
                        };
                        cache.record(file, opts, &enc);
                        Ok((enc, false))
                    })();
                    *results[i].lock().unwrap() = Some(r);
                }
            });
        }
    });
    let mut layers = Vec::with_capacity(files.len());
    let mut indexes = Vec::new();
    let mut cached = 0;
    for (file, r) in files.iter().zip(results) {
        let (enc, hit) = r.into_inner().unwrap().expect("every file processed")?;
        cached += hit as usize;
        if let Some(c) = &enc.chunks {
            let size = store.blob_size(c).unwrap_or_default();
            indexes.push((c.clone(), size, enc.digest.clone()));
        }
        layers.push((layer_descriptor(file, &enc, opts), enc.diff_id.clone()));
    }
    cache.save();
    let (_, config_bytes, manifest) =
        assemble(layers, descriptor, settings, manifest_annotations, opts);
    store.put_bytes(&config_bytes)?;
    let manifest_bytes = manifest.to_bytes();
    let manifest_digest = store.put_bytes(&manifest_bytes)?;
    let referrer = match chunk_referrer(&manifest_bytes, &manifest_digest, &indexes) {
        Some(bytes) => {
            store.put_bytes(b"{}")?;
            Some((store.put_bytes(&bytes)?, bytes))
        }
        None => None,
    };
    Ok(Packed {
        referrer,
        manifest,
        manifest_bytes,
        manifest_digest,
        config_bytes,
        bytes_read: bytes_read.into_inner(),
        layers_cached: cached,
    })
}

/// Two layers with one path would overwrite each other on extract.
pub fn check_unique_paths(files: &[PackFile]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for f in files {
        if !seen.insert(f.rel_path.as_str()) {
            return Err(Error::Workspace(format!(
                "{} is listed twice; each file becomes exactly one layer",
                f.rel_path
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
