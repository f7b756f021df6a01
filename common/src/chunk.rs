//! Fixed-size chunk digests of blobs (Nydus-style, default 4 MiB). A chunk
//! digest lets the lazy path verify each range it fetches on its own, long
//! before the whole blob is there to check against the layer digest.
//!
//! [`ChunkHasher`] is fed the same bytes as the whole-blob hasher while a
//! blob is written (build, pull, node ingest), so an index never costs a
//! second read of the data.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};

pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Smallest and largest chunk sizes we accept, from a flag or from an index
/// someone else wrote: below 64 KiB the index outgrows its use, above
/// 64 MiB one lazy read would fetch too much.
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkIndex {
    pub chunk_size: u64,
    pub size: u64,
    pub chunks: Vec<Digest>,
}

/// Checks a chunk size from outside: a power of two within the bounds.
pub fn check_chunk_size(chunk_size: u64) -> Result<u64> {
    if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(Error::Invalid(format!(
            "chunk size {chunk_size} must be a power of two between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"
        )));
    }
    Ok(chunk_size)
}

/// Computes chunk digests from a byte stream fed in any slicing. It does not
/// hash the whole blob: callers already do, and hashing every byte twice is
/// the one cost an index has.
pub struct ChunkHasher {
    chunk_size: u64,
    cur: Hasher,
    chunks: Vec<Digest>,
    size: u64,
}

impl std::fmt::Debug for ChunkHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkHasher")
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.chunks.len())
            .field("size", &self.size)
            .finish()
    }
}

impl ChunkHasher {
    /// `chunk_size` must have passed [`check_chunk_size`] (or be a test's small power of two).
    pub fn new(chunk_size: u64) -> ChunkHasher {
        assert!(
            chunk_size.is_power_of_two(),
            "chunk size must be a power of two"
        );
        ChunkHasher {
            chunk_size,
            cur: Hasher::new(),
            chunks: Vec::new(),
            size: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.size += data.len() as u64;
        while !data.is_empty() {
            let room = (self.chunk_size - self.cur.len()) as usize;
            let n = room.min(data.len());
            self.cur.update(&data[..n]);
            data = &data[n..];
            if self.cur.len() == self.chunk_size {
                self.chunks.push(std::mem::take(&mut self.cur).finish());
            }
        }
    }

    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn finish(mut self) -> ChunkIndex {
        if !self.cur.is_empty() {
            self.chunks.push(std::mem::take(&mut self.cur).finish());
        }
        ChunkIndex {
            chunk_size: self.chunk_size,
            size: self.size,
            chunks: self.chunks,
        }
    }
}

/// Reads `path` once, returning its whole digest and its chunk digests.
pub fn index_file(path: &Path, chunk_size: u64) -> Result<(Digest, ChunkIndex)> {
    let mut f = std::fs::File::open(path).ctx("open", path)?;
    let mut whole = Hasher::new();
    let mut chunks = ChunkHasher::new(chunk_size);
    let mut buf = vec![0u8; crate::digest::COPY_BUF];
    loop {
        let n = f.read(&mut buf).ctx("read", path)?;
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        chunks.update(&buf[..n]);
    }
    Ok((whole.finish(), chunks.finish()))
}

impl ChunkIndex {
    /// Number of chunks a blob of `size` has at `chunk_size`.
    pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
        size.div_ceil(chunk_size)
    }

    /// Checks that the index is self-consistent (from outside it is untrusted).
    pub fn check(&self) -> Result<()> {
        check_chunk_size(self.chunk_size)?;
        let want = Self::chunk_count(self.size, self.chunk_size);
        if self.chunks.len() as u64 != want {
            return Err(Error::Invalid(format!(
                "chunk index has {} chunks; a blob of {} bytes in chunks of {} has {want}",
                self.chunks.len(),
                self.size,
                self.chunk_size
            )));
        }
        Ok(())
    }

    /// Byte range `(offset, len)` of chunk `i`.
    pub fn range(&self, i: usize) -> (u64, u64) {
        let off = i as u64 * self.chunk_size;
        (off, self.chunk_size.min(self.size - off))
    }

    /// Checks one fetched chunk against its recorded digest.
    pub fn verify_chunk(&self, i: usize, bytes: &[u8]) -> Result<()> {
        let want = self.chunks.get(i).ok_or_else(|| {
            Error::Invalid(format!(
                "chunk {i} is past the end ({} chunks)",
                self.chunks.len()
            ))
        })?;
        let got = Digest::of(bytes);
        if &got != want {
            return Err(Error::DigestMismatch {
                what: format!("chunk {i} (offset {})", i as u64 * self.chunk_size),
                expected: want.to_string(),
                actual: got.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_file_and_verify() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("blob");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let (whole, idx) = index_file(&p, 4096).unwrap();
        assert_eq!(whole, Digest::of(&data));
        assert_eq!(idx.chunks.len(), 3);
        assert_eq!(idx.range(2), (8192, 10_000 - 8192));
        idx.verify_chunk(1, &data[4096..8192]).unwrap();
        assert!(idx.verify_chunk(1, &data[0..4096]).is_err());
    }

    #[test]
    fn any_slicing_gives_the_same_chunks() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let mut one = ChunkHasher::new(4096);
        one.update(&data);
        let mut many = ChunkHasher::new(4096);
        for piece in data.chunks(777) {
            many.update(piece);
        }
        let (a, b) = (one.finish(), many.finish());
        assert_eq!(a, b);
        assert_eq!(a.chunks[0], Digest::of(&data[..4096]));
        assert_eq!(a.chunks[4], Digest::of(&data[16384..]));
    }

    #[test]
    fn hostile_chunk_sizes_and_counts_are_refused() {
        assert!(check_chunk_size(3 << 20).is_err());
        assert!(check_chunk_size(1 << 40).is_err());
        assert!(check_chunk_size(4096).is_err());
        assert!(check_chunk_size(DEFAULT_CHUNK_SIZE).is_ok());
        let idx = ChunkIndex {
            chunk_size: DEFAULT_CHUNK_SIZE,
            size: DEFAULT_CHUNK_SIZE * 2 + 1,
            chunks: vec![Digest::of(b"")],
        };
        assert!(idx.check().is_err());
    }
}
