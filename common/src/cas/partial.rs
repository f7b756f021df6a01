//! Resumable downloads in the store's private scratch directory.
//!
//! A partial blob is `<store>/tmp/<hex>.partial`, opened through the
//! scratch directory's handle without following symlinks (so nothing planted
//! there can redirect the write) and held under an exclusive `flock` for as
//! long as one writer downloads into it: a second pull of the same blob waits
//! instead of appending to the same file, `prune`/`fsck --repair` and the
//! snapshotter's cleanup skip it, and a crash releases the lock so the next
//! run resumes where the bytes end.

use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use crate::confined::ConfinedDir;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

/// A locked, resumable download of one blob. Unlocked on drop.
pub struct PartialBlob {
    pub file: File,
    pub name: OsString,
    pub shown: PathBuf,
}

impl PartialBlob {
    /// Opens (creating) the partial download of `digest` in `dir`, waiting
    /// for another writer of the same blob to finish first.
    pub async fn open(dir: &ConfinedDir, digest: &Digest) -> Result<PartialBlob> {
        let name = OsString::from(format!("{}.partial", digest.hex()));
        let shown = dir.shown(&name);
        let file = dir.open_or_create(&name)?;
        let mut waited = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !waited {
                        tracing::info!("another download of {digest} is running; waiting for it");
                        waited = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &shown, e)),
            }
        }
        // The file we locked may have been renamed into place by the writer we
        // waited for; then start over on a fresh one.
        let same = dir
            .open_file(&name, false)
            .ok()
            .and_then(|f| Some((f.metadata().ok()?, file.metadata().ok()?)))
            .map(|(a, b)| {
                use std::os::unix::fs::MetadataExt;
                a.ino() == b.ino() && a.dev() == b.dev()
            })
            .unwrap_or(false);
        if !same {
            drop(file);
            return Box::pin(Self::open(dir, digest)).await;
        }
        Ok(PartialBlob { file, name, shown })
    }

    pub fn len(&self) -> Result<u64> {
        Ok(self.file.metadata().ctx("stat", &self.shown)?.len())
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}
