//! Copying a file into another inside the kernel and seeing each byte once,
//! from the destination. `read` + `write` copy every byte twice through this
//! process, into and out of fresh page-cache pages — 55–60% of a build's CPU
//! (perf); `copy_file_range` copies once, as `cp` does, and a read-only map
//! of what landed lets the caller hash exactly the stored bytes without a
//! third copy. Used by the store's ingest (build) and by extraction.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

const SEGMENT: u64 = 8 << 20;

/// What [`copy_mapped`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelCopy {
    /// Bytes copied and seen.
    pub copied: u64,
    /// The kernel refused before `len`: the caller copies the rest itself
    /// (both files' positions are where the kernel stopped).
    pub unsupported: bool,
}

/// Copies up to `len` bytes from `src`'s position to `dst`'s position
/// (`dst_at`, which must be that position) in segments, calling `seen` with
/// each segment as it now is in `dst`. Stops early when `src` ends.
///
/// `dst` must be a file only this process writes (a private temp file):
/// it is mapped while it is read.
pub fn copy_mapped(
    src: &File,
    dst: &File,
    dst_at: u64,
    len: u64,
    shown: &Path,
    seen: &mut dyn FnMut(&[u8]),
) -> Result<KernelCopy> {
    let mut copied = 0u64;
    while copied < len {
        let want = SEGMENT.min(len - copied) as usize;
        let n = match rustix::fs::copy_file_range(src, None, dst, None, want) {
            Ok(0) => break,
            Ok(n) => n as u64,
            Err(e) if copied == 0 || is_unsupported(e) => {
                tracing::debug!("copy_file_range refused ({e}); copying through memory");
                return Ok(KernelCopy {
                    copied,
                    unsupported: true,
                });
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
    Ok(KernelCopy {
        copied,
        unsupported: false,
    })
}

/// Errors after which a plain copy may still work.
fn is_unsupported(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    [Errno::XDEV, Errno::NOSYS, Errno::INVAL, Errno::OPNOTSUPP].contains(&e)
}
