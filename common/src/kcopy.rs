//! Copying a file into another inside the kernel and seeing each byte once,
//! from the destination. `read` + `write` copy every byte twice through this
//! process, into and out of fresh page-cache pages — 55–60% of a build's CPU
//! (perf); `copy_file_range` copies once, as `cp` does, and a read-only map
//! of what landed lets the caller hash exactly the stored bytes without a
//! third copy. Where the kernel refuses, the same call copies through
//! memory. Used by the store's ingest (build) and by extraction.
//!
//! On a filesystem with reflinks (XFS with `reflink=1`, btrfs) the kernel's
//! `copy_file_range` within one filesystem shares the source's extents
//! instead of copying them, so a build or an extract there writes no data
//! and needs no second copy's disk space — only the hash reads each byte.
//! [`Reflink`] lets a caller insist on that (`Always`: a whole-file
//! `FICLONE`, refused where the filesystem cannot) or forbid it (`Never`).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

const SEGMENT: u64 = 8 << 20;

/// Whether a copy may share storage with its source (`cp --reflink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reflink {
    /// Whatever the kernel does with `copy_file_range`: shared extents on
    /// XFS/btrfs within one filesystem, a copy elsewhere.
    #[default]
    Auto,
    /// Share the source's extents (`FICLONE`) or fail, naming both files:
    /// for a model too large to have on disk twice.
    Always,
    /// Always write a separate copy of the bytes.
    Never,
}

impl std::str::FromStr for Reflink {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Reflink::Auto),
            "always" => Ok(Reflink::Always),
            "never" => Ok(Reflink::Never),
            other => Err(format!(
                "{other:?} is not a reflink mode (auto, always or never)"
            )),
        }
    }
}

/// Copies up to `len` bytes from `src`'s position to `dst`'s position
/// (`dst_at`, which must be that position), calling `seen` with every byte
/// once, in order, as it now is in `dst`; returns the bytes copied (fewer
/// than `len` when `src` ends). Errors name `src_shown` (reads) or `shown`.
///
/// `dst` must be a file only this process writes (a private temp file):
/// it is mapped while it is read.
///
/// With [`Reflink::Always`] the whole of `src` (which must be read from its
/// start into an empty `dst`) is cloned and then cut to `len`.
#[allow(clippy::too_many_arguments)]
pub fn copy_mapped(
    src: &File,
    src_shown: &Path,
    dst: &File,
    dst_at: u64,
    len: u64,
    shown: &Path,
    reflink: Reflink,
    seen: &mut dyn FnMut(&[u8]),
) -> Result<u64> {
    match reflink {
        Reflink::Never => return through_memory(src, src_shown, dst, len, 0, shown, seen),
        Reflink::Always => return clone_whole(src, src_shown, dst, dst_at, len, shown, seen),
        Reflink::Auto => {}
    }
    let mut copied = 0u64;
    while copied < len {
        let want = SEGMENT.min(len - copied) as usize;
        let n = match rustix::fs::copy_file_range(src, None, dst, None, want) {
            Ok(0) => break,
            Ok(n) => n as u64,
            Err(e) if copied == 0 || is_unsupported(e) => {
                tracing::debug!("copy_file_range refused ({e}); copying through memory");
                // Both positions are where the kernel stopped.
                return through_memory(src, src_shown, dst, len, copied, shown, seen);
            }
            Err(e) => return Err(Error::io("copy into", shown, e.into())),
        };
        show_landed(dst, dst_at + copied, n, shown, seen)?;
        copied += n;
    }
    Ok(copied)
}

/// Shows `seen` the `n` bytes now at `at` in `dst`, from a read-only map.
fn show_landed(
    dst: &File,
    at: u64,
    n: u64,
    shown: &Path,
    seen: &mut dyn FnMut(&[u8]),
) -> Result<()> {
    // memmap2 aligns the offset to a page itself.
    // SAFETY: `dst` is the caller's private temp file (see copy_mapped):
    // nothing truncates it while the read-only map lives, and the map is
    // dropped before the next copy.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(at)
            .len(n as usize)
            .map(dst)
    };
    match map {
        Ok(map) => seen(&map),
        Err(e) => {
            // A filesystem that cannot map: read the segment back instead.
            tracing::debug!("cannot map {} ({e}); reading it back", shown.display());
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; n as usize];
            dst.read_exact_at(&mut buf, at).ctx("read back", shown)?;
            seen(&buf);
        }
    }
    Ok(())
}

/// [`Reflink::Always`]: one `FICLONE` of the whole source, cut to `len`
/// (a source that grew past it is then seen as `len` bytes, as a copy of
/// `len` would be), and every byte shown from the clone in segments.
fn clone_whole(
    src: &File,
    src_shown: &Path,
    dst: &File,
    dst_at: u64,
    len: u64,
    shown: &Path,
    seen: &mut dyn FnMut(&[u8]),
) -> Result<u64> {
    let refuse = |reason: String| Error::Reflink {
        src: src_shown.to_path_buf(),
        dst: shown.to_path_buf(),
        reason,
    };
    if dst_at != 0 {
        return Err(refuse(format!(
            "a clone replaces the whole destination, which already holds {dst_at} bytes"
        )));
    }
    rustix::fs::ioctl_ficlone(dst, src).map_err(|e| {
        refuse(match e {
            rustix::io::Errno::XDEV => "they are on different filesystems".into(),
            rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::INVAL | rustix::io::Errno::NOTTY => {
                "the filesystem cannot share extents".into()
            }
            other => std::io::Error::from(other).to_string(),
        })
    })?;
    let mut size = dst.metadata().ctx("stat", shown)?.len();
    if size > len {
        dst.set_len(len).ctx("truncate", shown)?;
        size = len;
    }
    let mut at = 0;
    while at < size {
        let n = SEGMENT.min(size - at);
        show_landed(dst, at, n, shown, seen)?;
        at += n;
    }
    // Callers append after what was copied: leave the position at its end.
    use std::io::Seek;
    let mut pos = dst;
    pos.seek(std::io::SeekFrom::Start(size))
        .ctx("seek", shown)?;
    Ok(size)
}

/// The plain copy: read into a buffer, write it out, show it.
fn through_memory(
    mut src: &File,
    src_shown: &Path,
    mut dst: &File,
    len: u64,
    mut copied: u64,
    shown: &Path,
    seen: &mut dyn FnMut(&[u8]),
) -> Result<u64> {
    let mut buf = vec![0u8; crate::digest::COPY_BUF];
    while copied < len {
        let want = (buf.len() as u64).min(len - copied) as usize;
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", src_shown, e)),
        };
        dst.write_all(&buf[..n]).ctx("write", shown)?;
        seen(&buf[..n]);
        copied += n as u64;
    }
    Ok(copied)
}

/// Errors after which a plain copy may still work.
fn is_unsupported(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    [Errno::XDEV, Errno::NOSYS, Errno::INVAL, Errno::OPNOTSUPP].contains(&e)
}
