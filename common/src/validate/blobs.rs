//! What validation may learn from the blobs at hand. The JSON alone cannot
//! say whether a compressed layer's diffId is right or whether a tar layer
//! holds what its annotation names; a stored model can. Every answer is
//! `None` where the blob is not here (a lazily mounted model, a manifest file
//! given on its own), and the lints then say once what they could not check
//! instead of guessing.

use std::io::{self, Read};

use crate::digest::{Digest, Hasher};
use crate::media::LayerFormat;
use crate::store::Store;

/// Blob facts for the lints; see the module header.
pub trait BlobAccess {
    fn size(&self, digest: &Digest) -> Option<u64>;
    /// Regular files an uncompressed tar layer holds, from its headers.
    fn tar_files(&self, _digest: &Digest) -> Option<Vec<String>> {
        None
    }
    /// sha256 of a compressed layer's decompressed bytes — what its diffId
    /// must be.
    fn uncompressed_digest(&self, _digest: &Digest, _format: LayerFormat) -> Option<Decompressed> {
        None
    }
}

/// What decompressing a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decompressed {
    Digest(Digest),
    /// The blob is not valid gzip/zstd: every consumer fails on it.
    Corrupt(String),
    /// Past the bound below; not hashed to the end (may still be fine).
    TooLarge(u64),
}

/// Sizes only (a manifest and a config given as files, tests).
pub(crate) struct SizesOnly<'a>(pub &'a dyn Fn(&Digest) -> Option<u64>);

impl BlobAccess for SizesOnly<'_> {
    fn size(&self, digest: &Digest) -> Option<u64> {
        (self.0)(digest)
    }
}

/// A layer that decompresses to more than this many times its size plus
/// [`SLACK`] is not hashed to the end: a crafted blob must not keep
/// `validate` busy for hours. Real model layers stay far below it (zstd of
/// bf16 weights: ~1.3×; even all-zero tensors hit the bound only past 1024×).
pub(crate) const MAX_RATIO: u64 = 1024;
const SLACK: u64 = 64 << 20;

/// The local store as validation sees it.
pub struct StoreBlobs<'a>(pub &'a Store);

impl BlobAccess for StoreBlobs<'_> {
    fn size(&self, digest: &Digest) -> Option<u64> {
        self.0.blob_size(digest)
    }

    fn tar_files(&self, digest: &Digest) -> Option<Vec<String>> {
        // Header scans seek past file data: a few KiB read per tar layer.
        let size = self.0.blob_size(digest)?;
        let f = self.0.open_blob(digest).ok()?;
        let files = crate::chunkindex::tar::scan_file(&f, size).ok()?;
        Some(files.into_iter().map(|e| e.path).collect())
    }

    fn uncompressed_digest(&self, digest: &Digest, format: LayerFormat) -> Option<Decompressed> {
        let size = self.0.blob_size(digest)?;
        let f = self.0.open_blob(digest).ok()?;
        let limit = size.saturating_mul(MAX_RATIO).saturating_add(SLACK);
        Some(decompressed_digest(f, format, limit))
    }
}

/// sha256 of `blob` decompressed, refusing to go past `limit` bytes.
pub(crate) fn decompressed_digest(
    blob: impl Read,
    format: LayerFormat,
    limit: u64,
) -> Decompressed {
    let buffered = io::BufReader::with_capacity(crate::digest::COPY_BUF, blob);
    let mut decoded: Box<dyn Read> = match format {
        LayerFormat::Raw | LayerFormat::Tar => Box::new(buffered),
        LayerFormat::TarGzip => Box::new(flate2::read::GzDecoder::new(buffered)),
        LayerFormat::TarZstd => match zstd::Decoder::with_buffer(buffered) {
            Ok(d) => Box::new(d),
            Err(e) => return Decompressed::Corrupt(e.to_string()),
        },
    };
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match decoded.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Decompressed::Corrupt(e.to_string()),
        };
        hasher.update(&buf[..n]);
        if hasher.len() > limit {
            return Decompressed::TooLarge(limit);
        }
    }
    Decompressed::Digest(hasher.finish())
}
