//! Fixed-size chunk digests of blobs (Nydus-style, default 4 MiB): the
//! snapshotter records them per blob so the lazy-fetch path can verify each
//! chunk it fetches with a Range request on its own, before the whole file is
//! there to check against the layer digest.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};

pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkIndex {
    pub chunk_size: u64,
    pub size: u64,
    pub chunks: Vec<Digest>,
}

/// Reads `path` once, returning its whole digest and its chunk digests.
pub fn index_file(path: &Path, chunk_size: u64) -> Result<(Digest, ChunkIndex)> {
    let chunk_size = chunk_size.max(4096);
    let mut f = std::fs::File::open(path).ctx("open", path)?;
    let mut whole = Hasher::new();
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; chunk_size.min(1 << 20) as usize];
    let mut cur = Hasher::new();
    loop {
        let want = ((chunk_size - cur.len()) as usize).min(buf.len());
        let n = f.read(&mut buf[..want]).ctx("read", path)?;
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        cur.update(&buf[..n]);
        if cur.len() == chunk_size {
            chunks.push(std::mem::take(&mut cur).finish());
        }
    }
    if !cur.is_empty() {
        chunks.push(cur.finish());
    }
    let size = whole.len();
    Ok((
        whole.finish(),
        ChunkIndex {
            chunk_size,
            size,
            chunks,
        },
    ))
}

impl ChunkIndex {
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
                what: format!("chunk {i}"),
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
}
