//! Safe extraction of model files from layers into a directory.
//!
//! One engine for every path that writes model files (`extract`, `pull
//! --extract-dir`, `--extract-from-remote`, `fetch`, the snapshotter's eager
//! layout), built so it cannot escape the output directory:
//! - every write goes through a [`ConfinedDir`] handle: paths are walked one
//!   component at a time without following symlinks, files are created
//!   `O_EXCL | O_NOFOLLOW` under hidden temp names, and only renamed to their
//!   final name once their bytes are verified against the layer digest (for a
//!   tar layer, every entry waits staged until the whole blob has been hashed);
//! - paths are cleaned (no absolute, no `..`, no NUL/backslash) and claimed
//!   per artifact, so duplicate paths and file/directory prefix conflicts are
//!   refused before anything is written;
//! - symlink targets must resolve inside by construction (see
//!   [`path::check_symlink_target`]), hardlinks may only name files of the same
//!   layer, device nodes and fifos are refused;
//! - modes are sanitised (no setuid/setgid/sticky, within the umask, never
//!   world-writable).
//!
//! A file already extracted from the same layer and unchanged since (same
//! size, mtime and recorded digest xattr) is skipped.

mod claims;
mod path;
mod tarball;

pub use claims::Claims;
pub use path::safe_relative_path;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::confined::{self, ConfinedDir, EntryKind};
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{Descriptor, Manifest};
use crate::media::{self, LayerFormat, LayerType};
use crate::registry::Progress;
use crate::store::Store;

/// The xattr recording which layer a file came from, so re-extracts can skip it.
pub const XATTR_DIGEST: &str = "user.modelpack.digest";

#[derive(Clone)]
pub struct ExtractOptions {
    /// Apply mode and mtime from the metadata annotation / tar headers.
    pub apply_metadata: bool,
    pub concurrency: usize,
    /// Replace files already in the output whose content differs (else such
    /// an extraction is refused before anything is written).
    pub force: bool,
    /// Told of every blob byte read, and of a skipped layer's whole size, so
    /// a bar over the layers' total reaches its end.
    pub progress: Option<Arc<dyn Progress>>,
    /// Whether raw files may share the store's extents (`extract --reflink`).
    pub reflink: crate::kcopy::Reflink,
}

impl std::fmt::Debug for ExtractOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtractOptions")
            .field("apply_metadata", &self.apply_metadata)
            .field("concurrency", &self.concurrency)
            .field("force", &self.force)
            .field("progress", &self.progress.is_some())
            .field("reflink", &self.reflink)
            .finish()
    }
}

/// A blob reader that reports each read to the extraction's progress.
struct Reported<'a, R> {
    inner: R,
    progress: Option<&'a dyn Progress>,
    seen: u64,
}

impl<R: Read> Read for Reported<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if let Some(p) = self.progress {
            p.advance(n as u64);
        }
        Ok(n)
    }
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            apply_metadata: true,
            concurrency: 4,
            force: false,
            progress: None,
            reflink: crate::kcopy::Reflink::Auto,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractStats {
    pub files_written: usize,
    pub files_skipped: usize,
    pub bytes_written: u64,
}

impl ExtractStats {
    pub fn add(&mut self, o: &ExtractStats) {
        self.files_written += o.files_written;
        self.files_skipped += o.files_skipped;
        self.bytes_written += o.bytes_written;
    }
}

/// A short human name for a layer in errors: its path, else its digest.
pub fn layer_name(layer: &Descriptor) -> String {
    match layer.filepath() {
        Some(p) => format!("{} ({})", layer.digest, crate::extract::shown(p)),
        None => layer.digest.to_string(),
    }
}

/// An artifact-supplied string made safe to print: control characters escaped.
pub fn shown(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// How to decode a layer: ModelPack types by suffix; Docker Model Runner's
/// and KitOps' types as [`crate::peer::layer_format`] says; an oras
/// directory layer (unpack annotation) as its tar type; anything else is a
/// raw file.
pub fn layer_format(layer: &Descriptor) -> LayerFormat {
    if let Some(t) = LayerType::parse(&layer.media_type) {
        return t.format;
    }
    if let Some(f) = crate::peer::layer_format(&layer.media_type) {
        return f;
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

/// The cleaned relative path a raw layer's file goes to.
fn raw_rel_path(layer: &Descriptor) -> Result<PathBuf> {
    let name = layer_name(layer);
    let rel = layer.filepath().ok_or_else(|| Error::Artifact(format!(
        "layer {name} ({}) has no org.cncf.model.filepath (or title) annotation and its type names no file, so there is no file name to restore it to",
        shown(&layer.media_type)
    )))?;
    safe_relative_path(&name, rel)
}

/// Refuses, before anything is written, an artifact whose raw layers name
/// one path twice or a path below another's file.
pub fn check_layer_paths(layers: &[Descriptor]) -> Result<()> {
    let claims = Claims::default();
    for l in layers {
        if layer_format(l) == LayerFormat::Raw {
            claims.file(&layer_name(l), &raw_rel_path(l)?)?;
        }
    }
    Ok(())
}

/// An output directory being extracted into: the confined root handle, the
/// paths claimed so far, and a cache of directory handles.
pub struct Target {
    root: ConfinedDir,
    claims: Claims,
    opts: ExtractOptions,
    dirs: Mutex<HashMap<PathBuf, Arc<ConfinedDir>>>,
}

/// Directories created for one layer, removed again (when still empty) if it fails.
#[derive(Default)]
pub(crate) struct Created(Vec<PathBuf>);

impl Target {
    /// Opens (creating) `out` for extraction.
    pub fn open(out: &Path, opts: &ExtractOptions) -> Result<Target> {
        Ok(Target {
            root: ConfinedDir::open_root(out, true)?,
            claims: Claims::default(),
            opts: opts.clone(),
            dirs: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// The directory `rel` below the root, created as needed, never through a symlink.
    pub(crate) fn dir(&self, rel: &Path, created: &mut Created) -> Result<Arc<ConfinedDir>> {
        if rel.as_os_str().is_empty() {
            return Ok(Arc::new(self.root.try_clone()?));
        }
        if let Some(d) = self.dirs.lock().unwrap().get(rel) {
            return Ok(d.clone());
        }
        let d = Arc::new(self.root.subdir(rel, true, Some(&mut created.0))?);
        self.dirs
            .lock()
            .unwrap()
            .insert(rel.to_path_buf(), d.clone());
        Ok(d)
    }

    /// After a finished extraction: removes temp files a killed earlier run
    /// left in the directories this one wrote to.
    pub fn sweep_stale_temps(&self) {
        let _ = self.root.sweep_stale_temps("modelpack");
        for d in self.dirs.lock().unwrap().values() {
            let _ = d.sweep_stale_temps("modelpack");
        }
    }

    /// Removes directories a failed layer created, deepest first, if still empty.
    pub(crate) fn undo(&self, created: Created) {
        let mut dirs = self.dirs.lock().unwrap();
        for rel in created.0.iter().rev() {
            dirs.remove(rel);
            self.root.remove_empty_dir(rel);
        }
    }

    /// Refuses, before anything is written, an extraction that would replace
    /// a file whose content differs from the layer's (or a directory or link
    /// where a file goes), unless [`ExtractOptions::force`]. An identical file
    /// (same bytes) is no conflict. Raw layers are checked; a tar layer's
    /// entries are known only while it is read (its staging rolls back).
    pub fn check_overwrites(&self, layers: &[Descriptor]) -> Result<()> {
        if self.opts.force {
            return Ok(());
        }
        let mut conflicts = Vec::new();
        for layer in layers {
            if layer_format(layer) != LayerFormat::Raw {
                continue;
            }
            let rel = raw_rel_path(layer)?;
            let (parent, fname) = split(&rel);
            let Ok(dir) = self.root.subdir(parent, false, None) else {
                continue;
            };
            let why = match dir.kind(fname)? {
                None => continue,
                Some(EntryKind::Dir) => "is a directory",
                Some(EntryKind::Symlink) | Some(EntryKind::Other) => "is not a regular file",
                Some(EntryKind::File { size }) => {
                    let mtime = layer.file_metadata().and_then(|m| m.mtime_unix());
                    if already_extracted(&dir, fname, &layer.digest, layer.size, mtime) {
                        continue;
                    }
                    if size == layer.size {
                        let f = dir.open_file(fname, false)?;
                        let mut h = HashingReader::new(f);
                        io::copy(&mut h, &mut io::sink()).ctx("read", dir.shown(fname))?;
                        if h.finish().0 == layer.digest {
                            continue;
                        }
                    }
                    "has other content"
                }
            };
            conflicts.push(format!("{} {why}", shown(&rel.display().to_string())));
        }
        if conflicts.is_empty() {
            return Ok(());
        }
        let n = conflicts.len();
        conflicts.truncate(10);
        Err(Error::Invalid(format!(
            "{} would replace {n} existing file{} in {}: {}{}\nhint: pass --force to replace them, or extract into an empty directory",
            "extracting",
            if n == 1 { "" } else { "s" },
            self.path().display(),
            conflicts.join("; "),
            if n > 10 { " …" } else { "" }
        )))
    }

    /// True when the raw layer's file is already in place, unchanged since we wrote it.
    pub fn is_extracted(&self, layer: &Descriptor) -> bool {
        let Ok(rel) = raw_rel_path(layer) else {
            return false;
        };
        let (parent, name) = split(&rel);
        let Ok(dir) = self.root.subdir(parent, false, None) else {
            return false;
        };
        let mtime = layer.file_metadata().and_then(|m| m.mtime_unix());
        already_extracted(&dir, name, &layer.digest, layer.size, mtime)
    }

    /// Extracts one layer whose verified-or-not blob bytes come from `blob`.
    pub fn extract_layer(&self, layer: &Descriptor, blob: File) -> Result<ExtractStats> {
        let progress = self.opts.progress.as_deref();
        let mut reader = Reported {
            inner: blob,
            progress,
            seen: 0,
        };
        let result = match layer_format(layer) {
            LayerFormat::Raw => {
                let r = self.extract_raw(layer, &reader.inner, progress);
                if let Ok(st) = &r {
                    // Reported while copying (a skipped file was not read).
                    reader.seen = st.bytes_written;
                }
                r
            }
            format => tarball::extract_tar(self, layer, &mut reader, format),
        };
        // A skipped layer is read not at all; the bar still covers its bytes.
        if let (Some(p), Ok(_)) = (progress, &result) {
            p.advance(layer.size.saturating_sub(reader.seen));
        }
        result
    }

    fn extract_raw(
        &self,
        layer: &Descriptor,
        blob: &File,
        progress: Option<&dyn Progress>,
    ) -> Result<ExtractStats> {
        let name = layer_name(layer);
        let rel = raw_rel_path(layer)?;
        self.claims.file(&name, &rel)?;
        let (parent, fname) = split(&rel);
        let mut created = Created::default();
        let result = (|| {
            let dir = self.dir(parent, &mut created)?;
            let mtime = layer.file_metadata().and_then(|m| m.mtime_unix());
            if self.opts.apply_metadata
                && already_extracted(&dir, fname, &layer.digest, layer.size, mtime)
            {
                return Ok(ExtractStats {
                    files_skipped: 1,
                    ..Default::default()
                });
            }
            refuse_dir_in_way(&dir, fname, &name)?;
            self.extract_raw_unclaimed(layer, blob, &dir, fname, progress)
        })();
        if result.is_err() {
            self.undo(created);
        }
        result
    }

    /// Places a downloaded, already verified raw blob at its path: renamed
    /// from the private scratch directory when both are on one filesystem,
    /// copied (and re-verified) otherwise; `keep` leaves the scratch file for
    /// another layer with the same digest.
    pub fn place_downloaded(
        &self,
        layer: &Descriptor,
        scratch: &ConfinedDir,
        scratch_name: &OsStr,
        keep: bool,
    ) -> Result<ExtractStats> {
        if layer_format(layer) != LayerFormat::Raw || keep {
            let f = scratch.open_file(scratch_name, false)?;
            return self.extract_layer(layer, f);
        }
        let name = layer_name(layer);
        let rel = raw_rel_path(layer)?;
        self.claims.file(&name, &rel)?;
        let (parent, fname) = split(&rel);
        let mut created = Created::default();
        let result = (|| {
            let dir = self.dir(parent, &mut created)?;
            refuse_dir_in_way(&dir, fname, &name)?;
            let f = scratch.open_file(scratch_name, true)?;
            let len = f.metadata().ctx("stat", scratch.shown(scratch_name))?.len();
            if len != layer.size {
                return Err(Error::SizeMismatch {
                    what: format!("downloaded layer {name}"),
                    expected: layer.size,
                    actual: len,
                });
            }
            self.finish_file(&f, layer, &scratch.shown(scratch_name))?;
            drop(f);
            match scratch.rename(scratch_name, &dir, fname) {
                Ok(()) => Ok(ExtractStats {
                    files_written: 1,
                    bytes_written: layer.size,
                    ..Default::default()
                }),
                Err(Error::Io { source, .. }) if source.raw_os_error() == Some(18) => {
                    // EXDEV: the store and the output are on different filesystems.
                    let f = scratch.open_file(scratch_name, false)?;
                    let r = self.extract_raw_unclaimed(layer, &f, &dir, fname, None);
                    let _ = scratch.remove_file(scratch_name);
                    r
                }
                Err(e) => Err(e),
            }
        })();
        if result.is_err() {
            self.undo(created);
        }
        result
    }

    /// Copies, verifies and renames one raw file into `dir` (its path already claimed).
    fn extract_raw_unclaimed(
        &self,
        layer: &Descriptor,
        blob: &File,
        dir: &ConfinedDir,
        fname: &OsStr,
        progress: Option<&dyn Progress>,
    ) -> Result<ExtractStats> {
        let (tmp, file) = dir.create_temp("modelpack")?;
        let guard = TempGuard::new(dir, &tmp);
        let written = copy_verified(
            blob,
            &file,
            layer,
            &dir.shown(&tmp),
            self.opts.reflink,
            progress,
        )?;
        self.finish_file(&file, layer, &dir.shown(&tmp))?;
        file.sync_all().ctx("fsync", dir.shown(&tmp))?;
        drop(file);
        dir.rename(&tmp, dir, fname)?;
        guard.disarm();
        Ok(ExtractStats {
            files_written: 1,
            bytes_written: written,
            ..Default::default()
        })
    }

    /// Mode, mtime and the digest xattr, applied to the open file before it is renamed into place.
    fn finish_file(&self, f: &File, layer: &Descriptor, shown: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if self.opts.apply_metadata {
            let meta = layer.file_metadata();
            if let Some(mode) = meta.as_ref().map(|m| m.mode & 0o777).filter(|m| *m != 0) {
                f.set_permissions(std::fs::Permissions::from_mode(confined::sanitize_mode(
                    mode, false,
                )))
                .ctx("chmod", shown)?;
            }
            if let Some(t) = meta.as_ref().and_then(|m| m.mtime_time()) {
                f.set_modified(t).ctx("set mtime", shown)?;
            }
        } else {
            f.set_permissions(std::fs::Permissions::from_mode(confined::sanitize_mode(
                0o644, false,
            )))
            .ctx("chmod", shown)?;
        }
        confined::set_xattr(f, XATTR_DIGEST, layer.digest.to_string().as_bytes());
        Ok(())
    }
}

/// Extracts every layer of a stored manifest into `out`.
pub fn extract_from_store(
    store: &Store,
    manifest: &Manifest,
    out: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractStats> {
    check_layer_paths(&manifest.layers)?;
    if opts.reflink == crate::kcopy::Reflink::Always
        && let Some(l) = manifest
            .layers
            .iter()
            .find(|l| layer_format(l) != LayerFormat::Raw)
    {
        // Before the output exists: "always" must not quietly copy a tar's files.
        return Err(Error::Invalid(format!(
            "--reflink always shares raw files' extents, but layer {} is a tar ({}) whose files are unpacked, not cloned; use --reflink auto",
            layer_name(l),
            shown(&l.media_type)
        )));
    }
    let target = Target::open(out, opts)?;
    target.check_overwrites(&manifest.layers)?;
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
                    let r = store
                        .open_blob(&l.digest)
                        .map_err(|e| match e {
                            Error::NotFound { .. } => Error::NotFound {
                                what: format!("blob of layer {}", layer_name(l)),
                                hint: Some("pull the model again".into()),
                            },
                            e => e,
                        })
                        .and_then(|f| target.extract_layer(l, f));
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
    target.sweep_stale_temps();
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
    let target = Target::open(out, opts)?;
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
    target.extract_layer(layer, f)
}

/// Splits a cleaned relative path into its parent and file name.
pub(crate) fn split(rel: &Path) -> (&Path, &OsStr) {
    (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name().expect("cleaned paths end in a name"),
    )
}

fn refuse_dir_in_way(dir: &ConfinedDir, fname: &OsStr, layer: &str) -> Result<()> {
    if dir.kind(fname)? == Some(EntryKind::Dir) {
        return Err(Error::UnsafePath {
            layer: layer.to_string(),
            reason: format!("{} exists and is a directory", dir.shown(fname).display()),
        });
    }
    Ok(())
}

/// Copies `src` into `file` (a fresh temp file of ours) and hashes what
/// landed in `file` (see [`crate::kcopy`]: one copy, in the kernel, where it
/// can); fails unless digest and size match the layer.
fn copy_verified(
    src: &File,
    file: &File,
    layer: &Descriptor,
    shown: &Path,
    reflink: crate::kcopy::Reflink,
    progress: Option<&dyn Progress>,
) -> Result<u64> {
    let mut hasher = crate::digest::Hasher::new();
    let report = |n: usize| {
        if let Some(p) = progress {
            p.advance(n as u64);
        }
    };
    // One byte past the declared size: a longer blob is refused, not cut.
    let want = layer.size.saturating_add(1);
    let blob_shown = PathBuf::from(format!("the stored blob of layer {}", layer_name(layer)));
    let seen =
        crate::kcopy::copy_mapped(src, &blob_shown, file, 0, want, shown, reflink, &mut |b| {
            hasher.update(b);
            report(b.len());
        })?;
    if seen != layer.size {
        return Err(Error::SizeMismatch {
            what: format!("layer {}", layer_name(layer)),
            expected: layer.size,
            actual: seen,
        });
    }
    let actual = hasher.finish();
    if actual != layer.digest {
        return Err(Error::DigestMismatch {
            what: format!("layer {}", layer_name(layer)),
            expected: layer.digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(seen)
}

pub(crate) fn system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64)
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(Duration::from_secs(unix.unsigned_abs()))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

fn already_extracted(
    dir: &ConfinedDir,
    name: &OsStr,
    digest: &Digest,
    size: u64,
    mtime: Option<i64>,
) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(Some(EntryKind::File { size: have })) = dir.kind(name) else {
        return false;
    };
    if have != size {
        return false;
    }
    let Ok(f) = dir.open_file(name, false) else {
        return false;
    };
    if let Some(t) = mtime
        && f.metadata().map(|m| m.mtime()).ok() != Some(t)
    {
        return false;
    }
    matches!(dir.get_xattr(name, XATTR_DIGEST), Some(v) if v == digest.to_string().as_bytes())
}

/// Removes a temp file (through its directory handle) unless disarmed.
pub(crate) struct TempGuard<'a> {
    dir: &'a ConfinedDir,
    name: Option<OsString>,
}

impl<'a> TempGuard<'a> {
    pub(crate) fn new(dir: &'a ConfinedDir, name: &OsStr) -> Self {
        TempGuard {
            dir,
            name: Some(name.to_os_string()),
        }
    }
    pub(crate) fn disarm(mut self) {
        self.name = None;
    }
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.name.take() {
            let _ = self.dir.remove_file(&n);
        }
    }
}

#[cfg(test)]
mod tests;
