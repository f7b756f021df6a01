//! `cas`: the one content-addressed blob store, shared by the CLI's local
//! store (`store::Store`) and the snapshotter's node store.
//!
//! Layout under a root: `blobs/sha256/<hex>` (complete, verified, 0444),
//! `tmp/` (private 0700 scratch: ingests in flight and resumable
//! downloads), `sparse/` (lazily filled blobs and their presence bitmaps).
//! Invariants every writer keeps:
//! - nothing appears under `blobs/` before its size and digest were checked
//!   over exactly the bytes of the file that is renamed there;
//! - every scratch file is created `O_EXCL|O_NOFOLLOW` through a directory
//!   handle and `flock`ed while written — the lease garbage collection
//!   respects (see [`is_in_use`]);
//! - data is hashed once, as it is written: [`Ingest`] computes the whole
//!   digest and the chunk digests from the same stream.

pub mod buffers;
mod ingest;
mod partial;
pub mod sink;
pub mod source;
pub mod sparse;

pub use ingest::{Ingest, Ingested};
pub use partial::PartialBlob;
pub use source::{BlobSource, ByteStream, LocalBlob, MemoryBlob, copy_source};
pub use sparse::{FETCH_BUCKETS_MS, FetchStats, SparseBlob, fetch_percentile, local_bytes};

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use crate::confined::ConfinedDir;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

/// A content-addressed store rooted at a directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cas {
    root: PathBuf,
}

impl Cas {
    /// Opens (creating) the layout under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Cas> {
        let cas = Cas { root: root.into() };
        let blobs = cas.blobs_dir();
        fs::create_dir_all(&blobs).ctx("create store directory", &blobs)?;
        for private in [cas.tmp_dir(), cas.sparse_dir()] {
            use std::os::unix::fs::PermissionsExt;
            fs::create_dir_all(&private).ctx("create store directory", &private)?;
            fs::set_permissions(&private, fs::Permissions::from_mode(0o700))
                .ctx("chmod", &private)?;
        }
        Ok(cas)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// In-flight writes (same filesystem as `blobs/`, so the final rename is atomic).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Lazily filled blobs (`<hex>.sparse`) and their bitmaps (`<hex>.bitmap`).
    pub fn sparse_dir(&self) -> PathBuf {
        self.root.join("sparse")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn has(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    /// The private scratch directory, as a handle that never follows symlinks.
    pub fn scratch(&self) -> Result<ConfinedDir> {
        ConfinedDir::open_root(&self.tmp_dir(), false)
    }

    fn blobs(&self) -> Result<ConfinedDir> {
        ConfinedDir::open_root(&self.blobs_dir(), false)
    }

    /// A writer for a new blob that hashes (and, with `chunk_size`, chunks)
    /// what it is given; see [`Ingest::commit`].
    pub fn ingest(&self, chunk_size: Option<u64>) -> Result<Ingest> {
        Ingest::create(self, chunk_size)
    }

    /// Moves a finished, verified download into `blobs/` (a blob already
    /// there wins; the partial is then removed). The size is re-checked on
    /// the open handle so a short or overlong file can never be named by `digest`.
    pub fn commit_partial(
        &self,
        scratch: &ConfinedDir,
        partial: &PartialBlob,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let len = partial.len()?;
        if len != size {
            let _ = scratch.remove_file(&partial.name);
            return Err(Error::SizeMismatch {
                what: format!("download of {digest}"),
                expected: size,
                actual: len,
            });
        }
        seal(&partial.file, &partial.shown)?;
        if self.has(digest) {
            return scratch.remove_file(&partial.name);
        }
        scratch.rename(&partial.name, &self.blobs()?, OsStr::new(digest.hex()))
    }

    /// Renames a verified scratch file into `blobs/` under `digest`.
    fn install(&self, scratch: &ConfinedDir, name: &OsStr, digest: &Digest) -> Result<()> {
        if self.has(digest) {
            return scratch.remove_file(name);
        }
        scratch.rename(name, &self.blobs()?, OsStr::new(digest.hex()))
    }
}

/// Makes a finished blob file read-only and durable before it is renamed into place.
fn seal(file: &fs::File, shown: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o444))
        .ctx("chmod", shown)?;
    file.sync_all().ctx("fsync", shown)
}

/// True when a scratch file is held by a live writer (its lock is taken):
/// the lease every GC pass (`prune`, `fsck --repair`, the snapshotter's
/// `Cleanup`) checks before deleting anything in `tmp/` or `sparse/`.
pub fn is_in_use(dir: &ConfinedDir, name: &OsStr) -> bool {
    match dir.open_file(name, false) {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
