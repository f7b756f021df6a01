//! Writing a new blob: one pass over the bytes computes the whole digest and
//! (optionally) the chunk digests, into a private locked temp file that is
//! fsynced, verified and only then renamed to its digest.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::chunk::{ChunkHasher, ChunkIndex};
use crate::confined::ConfinedDir;
use crate::digest::{COPY_BUF, Digest, Hasher};
use crate::error::{Error, IoContext, Result};

use super::Cas;

/// What a committed ingest produced.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub digest: Digest,
    pub size: u64,
    /// Present when the ingest was asked to chunk.
    pub chunks: Option<ChunkIndex>,
}

/// A blob being written. Dropping it without [`Ingest::commit`] removes the
/// temp file; while it lives its file is `flock`ed, so GC leaves it alone.
pub struct Ingest {
    cas: Cas,
    scratch: ConfinedDir,
    name: OsString,
    shown: PathBuf,
    file: Option<io::BufWriter<File>>,
    hasher: Hasher,
    chunker: Option<ChunkHasher>,
}

impl Ingest {
    pub(super) fn create(cas: &Cas, chunk_size: Option<u64>) -> Result<Ingest> {
        let scratch = cas.scratch()?;
        let (name, file) = scratch.create_temp("ingest")?;
        let shown = scratch.shown(&name);
        file.try_lock()
            .map_err(|e| Error::io("lock", &shown, io::Error::other(e.to_string())))?;
        Ok(Ingest {
            cas: cas.clone(),
            scratch,
            name,
            shown,
            file: Some(io::BufWriter::with_capacity(COPY_BUF, file)),
            hasher: Hasher::new(),
            chunker: chunk_size.map(ChunkHasher::new),
        })
    }

    /// Where the bytes go until commit (for error messages).
    pub fn temp_path(&self) -> &std::path::Path {
        &self.shown
    }

    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// Fills the blob from `src` (see [`super::source::copy_source`]) with
    /// the writes and the hash on threads of their own, so a download is
    /// not bound by one core. Ingests that also chunk copy on this task.
    pub async fn fill_from(
        &mut self,
        src: &dyn super::source::BlobSource,
        retries: u32,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64> {
        if self.chunker.is_some() {
            return super::source::copy_source(src, self, retries, progress).await;
        }
        let w = self.file.as_mut().expect("not committed");
        w.flush().ctx("write", &self.shown)?;
        // A second handle on the same open file: it shares the offset, and
        // `self.file` stays for commit and for the temp file's removal on drop.
        let file = w.get_ref().try_clone().ctx("open", &self.shown)?;
        let mut sink = super::sink::FileSink::start(
            file,
            std::mem::take(&mut self.hasher),
            self.shown.clone(),
        )?;
        let copied = super::source::copy_source_into(src, &mut sink, retries, progress).await;
        // Always wait: every queued byte is in the file before anyone looks at it.
        self.hasher = sink.finish().await?;
        copied
    }

    /// Appends up to `len` bytes of `src` (from its current position,
    /// `src_shown` in errors) with [`crate::kcopy::copy_mapped`]: one copy
    /// inside the kernel, as `cp` makes, hashed from a map of the temp file,
    /// so the digest is of exactly the bytes stored. `observe` sees the same
    /// bytes (a chunk indexer, progress). Returns the bytes copied (fewer
    /// than `len` when `src` ended early).
    pub fn copy_from_file(
        &mut self,
        src: &File,
        src_shown: &std::path::Path,
        len: u64,
        reflink: crate::kcopy::Reflink,
        observe: &mut dyn FnMut(&[u8]),
    ) -> Result<u64> {
        let w = self.file.as_mut().expect("not committed");
        w.flush().ctx("write", &self.shown)?;
        let (hasher, chunker) = (&mut self.hasher, &mut self.chunker);
        let at = hasher.len();
        crate::kcopy::copy_mapped(
            src,
            src_shown,
            w.get_ref(),
            at,
            len,
            &self.shown,
            reflink,
            &mut |b| {
                hasher.update(b);
                if let Some(c) = chunker.as_mut() {
                    c.update(b);
                }
                observe(b);
            },
        )
    }

    /// Flushes, fsyncs, checks the size and digest against what the caller
    /// expects (when given) and renames the blob into place. On a mismatch
    /// the temp file is removed and nothing appears in the store.
    pub fn commit(mut self, expected: Option<&Digest>, size: Option<u64>) -> Result<Ingested> {
        let file = self.file.take().expect("commit is called once");
        let file = file
            .into_inner()
            .map_err(|e| Error::io("flush", &self.shown, e.into_error()))?;
        let hasher = std::mem::take(&mut self.hasher);
        let written = hasher.len();
        let digest = hasher.finish();
        let on_disk = file.metadata().ctx("stat", &self.shown)?.len();
        let fail = |e: Error| {
            let _ = self.scratch.remove_file(&self.name);
            Err(e)
        };
        // The file must hold exactly the bytes that were hashed.
        if on_disk != written || size.is_some_and(|s| s != written) {
            return fail(Error::SizeMismatch {
                what: format!("blob written to {}", self.cas.root().display()),
                expected: size.unwrap_or(written),
                actual: if on_disk != written { on_disk } else { written },
            });
        }
        if let Some(want) = expected
            && want != &digest
        {
            return fail(Error::DigestMismatch {
                what: format!("blob written to {}", self.cas.root().display()),
                expected: want.to_string(),
                actual: digest.to_string(),
            });
        }
        if let Err(e) = super::seal(&file, &self.shown) {
            return fail(e);
        }
        drop(file);
        if let Err(e) = self.cas.install(&self.scratch, &self.name, &digest) {
            return fail(e);
        }
        Ok(Ingested {
            digest,
            size: written,
            chunks: self.chunker.take().map(ChunkHasher::finish),
        })
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("not committed").write(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(c) = self.chunker.as_mut() {
            c.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = self.scratch.remove_file(&self.name);
        }
    }
}
