//! Copying a file into another inside the kernel and seeing each byte once,
//! from the destination. `read` + `write` copy every byte twice through this
//! process, into and out of fresh page-cache pages — 55–60% of a build's CPU
//! (perf); `copy_file_range` copies once, as `cp` does, and a read-only map
//! of what landed lets the caller hash exactly the stored bytes without a
//! third copy. Where the kernel refuses, the same call copies through
//! memory. Used by the store's ingest (build) and by extraction.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

const SEGMENT: u64 = 8 << 20;

/// Copies up to `len` bytes from `src`'s position to `dst`'s position
/// (`dst_at`, which must be that position), calling `seen` with every byte
/// once, in order, as it now is in `dst`; returns the bytes copied (fewer
/// than `len` when `src` ends). Errors name `src_shown` (reads) or `shown`.
///
/// `dst` must be a file only this process writes (a private temp file):
/// it is mapped while it is read.
pub fn copy_mapped(
    src: &File,
    src_shown: &Path,
    dst: &File,
    dst_at: u64,
    len: u64,
    shown: &Path,
    seen: &mut dyn FnMut(&[u8]),
) -> Result<u64> {
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
        // memmap2 aligns the offset to a page itself.
        // SAFETY: `dst` is the caller's private temp file (see above):
        // nothing truncates it while the read-only map lives, and the map
        // is dropped before the next copy.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(dst_at + copied)
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
                dst.read_exact_at(&mut buf, dst_at + copied)
                    .ctx("read back", shown)?;
                seen(&buf);
            }
        }
        copied += n;
    }
    Ok(copied)
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
