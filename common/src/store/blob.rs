//! Atomic blob ingestion: write to a temp file while hashing, fsync, verify,
//! rename into `blobs/sha256/<hex>`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};

use super::Store;

/// A blob being written. Dropping it without [`BlobWriter::commit`] removes the temp file.
pub struct BlobWriter {
    store: Store,
    temp: PathBuf,
    file: Option<io::BufWriter<File>>,
    hasher: Hasher,
}

impl BlobWriter {
    pub(super) fn create(store: &Store) -> Result<BlobWriter> {
        let (temp, file) = super::tempfile_in(&store.tmp_dir())?;
        Ok(BlobWriter {
            store: store.clone(),
            temp,
            file: Some(io::BufWriter::with_capacity(crate::digest::COPY_BUF, file)),
            hasher: Hasher::new(),
        })
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// Flushes, fsyncs, checks the digest against `expected` (when given) and
    /// renames the blob into place. Returns the digest and size. On mismatch
    /// the temp file is removed and nothing appears in the store.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let file = self.file.take().expect("commit called once");
        let file = file
            .into_inner()
            .map_err(|e| Error::io("flush", &self.temp, e.into_error()))?;
        file.sync_all().ctx("fsync", &self.temp)?;
        drop(file);
        let hasher = std::mem::take(&mut self.hasher);
        let size = hasher.len();
        let digest = hasher.finish();
        if let Some(want) = expected
            && want != &digest
        {
            let _ = fs::remove_file(&self.temp);
            return Err(Error::DigestMismatch {
                what: "blob written to the local store".into(),
                expected: want.to_string(),
                actual: digest.to_string(),
            });
        }
        let dest = self.store.blob_path(&digest);
        if dest.exists() {
            let _ = fs::remove_file(&self.temp);
        } else {
            fs::rename(&self.temp, &dest).ctx("rename into place", &dest)?;
        }
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("not committed").write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}
