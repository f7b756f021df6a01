//! The store's blob writer: a [`crate::cas::Ingest`] without chunking, with
//! the `commit(expected)` shape build and attach use.

use std::io::{self, Write};
use std::path::Path;

use crate::cas::Ingest;
use crate::digest::Digest;
use crate::error::Result;

use super::Store;

/// A blob being written. Dropping it without [`BlobWriter::commit`] removes the temp file.
pub struct BlobWriter(Ingest);

impl BlobWriter {
    pub(super) fn create(store: &Store) -> Result<BlobWriter> {
        Ok(BlobWriter(store.cas().ingest(None)?))
    }

    pub fn temp_path(&self) -> &Path {
        self.0.temp_path()
    }

    pub fn written(&self) -> u64 {
        self.0.written()
    }

    /// See [`Ingest::copy_from_file`].
    pub fn copy_from_file(
        &mut self,
        src: &std::fs::File,
        src_shown: &Path,
        len: u64,
        reflink: crate::kcopy::Reflink,
        observe: &mut dyn FnMut(&[u8]),
    ) -> Result<u64> {
        self.0.copy_from_file(src, src_shown, len, reflink, observe)
    }

    /// Fsyncs, checks the digest against `expected` (when given) and renames
    /// the blob into place. Returns the digest and size. On mismatch the temp
    /// file is removed and nothing appears in the store.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let done = self.0.commit(expected, None)?;
        Ok((done.digest, done.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
