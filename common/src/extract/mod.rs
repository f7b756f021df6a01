//! Safe extraction of model files from layers into a directory.
//!
//! Nothing is ever written outside the output directory: every path from every
//! annotation and tar entry is checked (no absolute paths, no `..`, no path
//! through a symlink), symlinks and hardlinks must resolve inside, device nodes
//! and fifos are refused — each with an error naming the layer. Files are
//! written to a temp name next to their destination and renamed into place
//! once complete and verified. A file already extracted from the same layer
//! and unchanged since (same size, mtime and recorded digest xattr) is skipped.

mod path;
mod tarball;

pub use path::safe_relative_path;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use crate::digest::{COPY_BUF, Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{Descriptor, Manifest};
use crate::media::{self, LayerFormat, LayerType};
use crate::store::Store;

/// The xattr recording which layer a file came from, so re-extracts can skip it.
pub const XATTR_DIGEST: &str = "user.modelpack.digest";

#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Apply mode and mtime from the metadata annotation / tar headers.
    pub apply_metadata: bool,
    pub concurrency: usize,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            apply_metadata: true,
            concurrency: 4,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExtractStats {
    pub files_written: usize,
    pub files_skipped: usize,
    pub bytes_written: u64,
}

impl ExtractStats {
    fn add(&mut self, o: &ExtractStats) {
        self.files_written += o.files_written;
        self.files_skipped += o.files_skipped;
        self.bytes_written += o.bytes_written;
    }
}

/// A short human name for a layer in errors: its path, else its digest.
pub fn layer_name(layer: &Descriptor) -> String {
    match layer.filepath() {
        Some(p) => format!("{} ({})", layer.digest, p),
        None => layer.digest.to_string(),
    }
}

/// How to decode a layer: ModelPack types by suffix; an oras directory layer
/// (unpack annotation) as its tar type; anything else is a raw file.
pub fn layer_format(layer: &Descriptor) -> LayerFormat {
    if let Some(t) = LayerType::parse(&layer.media_type) {
        return t.format;
    }
    if layer
        .annotations
        .get(media::ANNOTATION_ORAS_UNPACK)
        .map(String::as_str)
        == Some("true")
    {
        return LayerType::decode_format(&layer.media_type);
    }
    LayerFormat::Raw
}

/// Extracts every layer of a stored manifest into `out`.
pub fn extract_from_store(
    store: &Store,
    manifest: &Manifest,
    out: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractStats> {
    fs::create_dir_all(out).ctx("create output directory", out)?;
    let layers = &manifest.layers;
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..opts.concurrency.clamp(1, 32).min(layers.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= layers.len() {
                        break;
                    }
                    let l = &layers[i];
                    let r = extract_layer(l, &store.blob_path(&l.digest), out, opts);
                    results.lock().unwrap().push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let mut stats = ExtractStats::default();
    for (_, r) in results {
        stats.add(&r?);
    }
    Ok(stats)
}

/// Extracts one layer whose blob is at `blob` (a store blob or a verified download).
pub fn extract_layer(
    layer: &Descriptor,
    blob: &Path,
    out: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractStats> {
    let name = layer_name(layer);
    fs::create_dir_all(out).ctx("create output directory", out)?;
    let f = File::open(blob).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotFound {
                what: format!("blob of layer {name}"),
                hint: Some("pull the model again".into()),
            }
        } else {
            Error::io("open", blob, e)
        }
    })?;
    match layer_format(layer) {
        LayerFormat::Raw => extract_raw(layer, f, out, opts),
        format => tarball::extract_tar(layer, f, format, out, opts),
    }
}

/// True when the raw layer's file is already at `dest`, unchanged since we wrote it.
pub fn is_extracted(dest: &Path, layer: &Descriptor) -> bool {
    let mtime = layer.file_metadata().and_then(|m| m.mtime_unix());
    already_extracted(dest, &layer.digest, layer.size, mtime)
}

/// Places a downloaded, already verified blob: a raw layer's file is renamed
/// into place (no copy), a tar layer is unpacked and its blob removed.
pub fn place_verified_blob(
    layer: &Descriptor,
    blob: &Path,
    out: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractStats> {
    if layer_format(layer) != LayerFormat::Raw {
        let stats = extract_layer(layer, blob, out, opts)?;
        let _ = fs::remove_file(blob);
        return Ok(stats);
    }
    let name = layer_name(layer);
    let rel = layer
        .filepath()
        .ok_or_else(|| Error::Artifact(format!("layer {name} has no file path annotation")))?;
    let rel = safe_relative_path(&name, rel)?;
    let dest = path::prepare_parent(&name, out, &rel)?;
    fs::rename(blob, &dest).ctx("rename into place", &dest)?;
    let meta = layer.file_metadata();
    if opts.apply_metadata {
        finish_file(
            &dest,
            &layer.digest,
            meta.as_ref().map(|m| m.mode & 0o777).filter(|m| *m != 0),
            meta.as_ref().and_then(|m| m.mtime_unix()),
        )?;
    } else {
        finish_file(&dest, &layer.digest, None, None)?;
    }
    Ok(ExtractStats {
        files_written: 1,
        bytes_written: layer.size,
        ..Default::default()
    })
}

fn extract_raw(
    layer: &Descriptor,
    blob: File,
    out: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractStats> {
    let name = layer_name(layer);
    let rel = layer.filepath().ok_or_else(|| Error::Artifact(format!(
        "layer {name} has no org.cncf.model.filepath (or title) annotation, so there is no file name to restore it to"
    )))?;
    let rel = safe_relative_path(&name, rel)?;
    let dest = path::prepare_parent(&name, out, &rel)?;
    let meta = layer.file_metadata();
    let mtime = meta.as_ref().and_then(|m| m.mtime_unix());
    if opts.apply_metadata && already_extracted(&dest, &layer.digest, layer.size, mtime) {
        return Ok(ExtractStats {
            files_skipped: 1,
            ..Default::default()
        });
    }
    let written = write_verified(&dest, blob, &layer.digest, Some(layer.size), &name)?;
    let mode = meta.as_ref().map(|m| m.mode & 0o777).filter(|m| *m != 0);
    finish_file(
        &dest,
        &layer.digest,
        if opts.apply_metadata { mode } else { None },
        if opts.apply_metadata { mtime } else { None },
    )?;
    Ok(ExtractStats {
        files_written: 1,
        bytes_written: written,
        ..Default::default()
    })
}

/// Copies `src` to a temp file beside `dest` while hashing, verifies the digest, renames into place.
fn write_verified(
    dest: &Path,
    src: impl Read,
    digest: &Digest,
    size: Option<u64>,
    layer: &str,
) -> Result<u64> {
    let dir = dest.parent().expect("dest has a parent");
    let (tmp, mut file) = crate::store::tempfile_in(dir)?;
    let guard = TempGuard(Some(tmp.clone()));
    let mut r = HashingReader::new(src);
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = r.read(&mut buf).ctx("read layer", dest)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).ctx("write", &tmp)?;
    }
    let (actual, len) = r.finish();
    if &actual != digest {
        return Err(Error::DigestMismatch {
            what: format!("layer {layer}"),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    if let Some(want) = size.filter(|s| *s != len) {
        return Err(Error::SizeMismatch {
            what: format!("layer {layer}"),
            expected: want,
            actual: len,
        });
    }
    file.sync_all().ctx("fsync", &tmp)?;
    drop(file);
    fs::rename(&tmp, dest).ctx("rename into place", dest)?;
    guard.disarm();
    Ok(len)
}

fn finish_file(dest: &Path, digest: &Digest, mode: Option<u32>, mtime: Option<i64>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(mode) = mode {
        fs::set_permissions(dest, fs::Permissions::from_mode(mode)).ctx("chmod", dest)?;
    }
    if let Some(t) = mtime {
        set_mtime(dest, t)?;
    }
    // Best effort: filesystems without user xattrs just never skip.
    let _ = xattr::set(dest, XATTR_DIGEST, digest.to_string().as_bytes());
    Ok(())
}

fn set_mtime(dest: &Path, unix: i64) -> Result<()> {
    let t = if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    };
    let f = File::options().write(true).open(dest).ctx("open", dest)?;
    f.set_modified(t).ctx("set mtime", dest)
}

fn already_extracted(dest: &Path, digest: &Digest, size: u64, mtime: Option<i64>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = fs::symlink_metadata(dest) else {
        return false;
    };
    if !m.is_file() || m.len() != size {
        return false;
    }
    if let Some(t) = mtime
        && m.mtime() != t
    {
        return false;
    }
    matches!(xattr::get(dest, XATTR_DIGEST), Ok(Some(v)) if v == digest.to_string().as_bytes())
}

/// Removes a temp file unless disarmed.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests;
