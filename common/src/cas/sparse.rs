//! Partial blobs for lazy reads: `sparse/<hex>.sparse` (a sparse file of the
//! blob's full size) plus `sparse/<hex>.bitmap` (which chunks were fetched
//! and verified). [`SparseBlob::read_at`] only ever returns bytes of
//! chunks that hashed to their digest in the chunk index: missing chunks are
//! fetched through the [`BlobSource`] (one fetch per chunk however many
//! readers wait on it), verified, written, and marked present. When the last
//! chunk arrives the whole-blob digest is checked and the file is promoted
//! to `blobs/sha256/<hex>`.
//!
//! The bitmap is written after the chunk's data but without an fsync per
//! chunk, so after a crash a bit may be set over bytes that never reached
//! the disk. A persisted bit is therefore only a hint: the first read of
//! such a chunk in a process re-hashes it from the file (no network), and a
//! chunk that fails is fetched again. A bitmap never makes us serve a byte
//! we have not verified in this process.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::chunk::ChunkIndex;
use crate::confined::ConfinedDir;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};

use super::Cas;
use super::source::{BlobSource, read_range_to_vec};

const BITMAP_MAGIC: &[u8; 8] = b"MPCHUNK1";
const BITMAP_HEADER: u64 = 16;

struct State {
    /// Persisted: written and verified at some point (a hint after a restart).
    present: Vec<u8>,
    /// Verified by this process: the only bits reads trust.
    verified: Vec<u8>,
    /// Set once promoted; reads then need no bookkeeping.
    complete: bool,
    /// The whole-blob digest did not match: the index lied; nothing more is served.
    poisoned: Option<String>,
}

fn bit(bits: &[u8], i: usize) -> bool {
    bits[i / 8] & (1 << (i % 8)) != 0
}

fn set_bit(bits: &mut [u8], i: usize) {
    bits[i / 8] |= 1 << (i % 8);
}

/// A blob that fills itself on demand. One per blob per process: the data
/// file is `flock`ed for the lifetime of the handle (the lease GC honours).
pub struct SparseBlob {
    cas: Cas,
    index: ChunkIndex,
    source: Arc<dyn BlobSource>,
    data: Arc<File>,
    bitmap: Option<File>,
    name: OsString,
    shown: PathBuf,
    state: Mutex<State>,
    chunk_locks: Mutex<HashMap<usize, Arc<tokio::sync::Mutex<()>>>>,
    /// Ranged reads made for this blob and how long they took.
    pub fetch_stats: FetchStats,
}

/// Upper bounds (ms) of the fetch-latency histogram's buckets; one more
/// bucket counts everything slower.
pub const FETCH_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/// Counters of the ranged reads behind lazy reads (for `stats`).
#[derive(Debug, Default)]
pub struct FetchStats {
    pub fetches: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    /// Chunks that failed verification (never served).
    pub refused: std::sync::atomic::AtomicU64,
    buckets: [std::sync::atomic::AtomicU64; FETCH_BUCKETS_MS.len() + 1],
}

impl FetchStats {
    fn record(&self, took: std::time::Duration, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.fetches.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        let ms = took.as_millis() as u64;
        let b = FETCH_BUCKETS_MS
            .iter()
            .position(|up| ms <= *up)
            .unwrap_or(FETCH_BUCKETS_MS.len());
        self.buckets[b].fetch_add(1, Relaxed);
    }

    /// The histogram's counts, bucket by bucket.
    pub fn histogram(&self) -> [u64; FETCH_BUCKETS_MS.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The `p`-th percentile (0..=1) of a fetch-latency histogram, as the upper
/// bound of its bucket in ms (`None` without fetches; `u64::MAX` past the last bound).
pub fn fetch_percentile(hist: &[u64; FETCH_BUCKETS_MS.len() + 1], p: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let want = ((total as f64) * p).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= want {
            return Some(FETCH_BUCKETS_MS.get(i).copied().unwrap_or(u64::MAX));
        }
    }
    Some(u64::MAX)
}

impl SparseBlob {
    /// Opens the partial blob for `source` (creating it), or the complete
    /// blob when the store already has it. `index` must describe the same
    /// size as the source; it is checked.
    pub fn open(cas: &Cas, index: ChunkIndex, source: Arc<dyn BlobSource>) -> Result<SparseBlob> {
        index.check()?;
        let digest = source.digest().clone();
        if index.size != source.size() {
            return Err(Error::SizeMismatch {
                what: format!("chunk index of {digest}"),
                expected: source.size(),
                actual: index.size,
            });
        }
        let n = index.chunks.len();
        let words = n.div_ceil(8);
        let dir = ConfinedDir::open_root(&cas.sparse_dir(), false)?;
        let name = OsString::from(format!("{}.sparse", digest.hex()));
        let shown = dir.shown(&name);
        if cas.has(&digest) {
            let path = cas.blob_path(&digest);
            let data = File::open(&path).ctx("open", &path)?;
            return Ok(SparseBlob {
                cas: cas.clone(),
                index,
                source,
                data: Arc::new(data),
                bitmap: None,
                name,
                shown: path,
                state: Mutex::new(State {
                    present: vec![0xff; words],
                    verified: vec![0xff; words],
                    complete: true,
                    poisoned: None,
                }),
                chunk_locks: Mutex::new(HashMap::new()),
                fetch_stats: FetchStats::default(),
            });
        }
        let data = dir.open_or_create(&name)?;
        data.try_lock().map_err(|_| Error::Store {
            path: shown.clone(),
            message: "in use by another process (one lazy reader per blob and node)".into(),
        })?;
        if data.metadata().ctx("stat", &shown)?.len() != index.size {
            data.set_len(index.size).ctx("truncate", &shown)?;
        }
        let bm_name = OsString::from(format!("{}.bitmap", digest.hex()));
        let bm_shown = dir.shown(&bm_name);
        let bitmap = dir.open_or_create(&bm_name)?;
        let mut header = [0u8; BITMAP_HEADER as usize];
        header[..8].copy_from_slice(BITMAP_MAGIC);
        header[8..].copy_from_slice(&index.chunk_size.to_le_bytes());
        let mut present = vec![0u8; words];
        let mut old_header = [0u8; BITMAP_HEADER as usize];
        let valid = bitmap.metadata().ctx("stat", &bm_shown)?.len() == BITMAP_HEADER + words as u64
            && bitmap.read_exact_at(&mut old_header, 0).is_ok()
            && old_header == header
            && bitmap.read_exact_at(&mut present, BITMAP_HEADER).is_ok();
        if !valid {
            present = vec![0u8; words];
            bitmap.set_len(0).ctx("truncate", &bm_shown)?;
            bitmap.write_all_at(&header, 0).ctx("write", &bm_shown)?;
            bitmap
                .write_all_at(&present, BITMAP_HEADER)
                .ctx("write", &bm_shown)?;
        }
        Ok(SparseBlob {
            cas: cas.clone(),
            index,
            source,
            data: Arc::new(data),
            bitmap: Some(bitmap),
            name,
            shown,
            state: Mutex::new(State {
                present,
                verified: vec![0u8; words],
                complete: false,
                poisoned: None,
            }),
            chunk_locks: Mutex::new(HashMap::new()),
            fetch_stats: FetchStats::default(),
        })
    }

    pub fn digest(&self) -> &Digest {
        self.source.digest()
    }

    pub fn size(&self) -> u64 {
        self.index.size
    }

    pub fn index(&self) -> &ChunkIndex {
        &self.index
    }

    pub fn is_complete(&self) -> bool {
        self.state.lock().unwrap().complete
    }

    /// The verified whole blob, once complete (a FUSE server hands it to the
    /// kernel for passthrough reads).
    pub fn complete_file(&self) -> Option<Arc<File>> {
        let s = self.state.lock().unwrap();
        (s.complete && s.poisoned.is_none()).then(|| self.data.clone())
    }

    /// Chunks recorded present (verified now or in an earlier process).
    pub fn present_chunks(&self) -> usize {
        let s = self.state.lock().unwrap();
        (0..self.index.chunks.len())
            .filter(|i| bit(&s.present, *i))
            .count()
    }

    /// Reads up to `len` bytes at `offset` (fewer at the end of the blob),
    /// fetching and verifying whatever chunks of the range are missing. An
    /// error means no byte of the range could be vouched for (EIO to a
    /// FUSE reader); nothing unverified is ever returned.
    pub async fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let size = self.index.size;
        if offset >= size || len == 0 {
            return Ok(Vec::new());
        }
        let end = offset.saturating_add(len).min(size);
        let first = (offset / self.index.chunk_size) as usize;
        let last = ((end - 1) / self.index.chunk_size) as usize;
        for i in first..=last {
            self.ensure_chunk(i).await?;
        }
        let data = self.data.clone();
        let shown = self.shown.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; (end - offset) as usize];
            data.read_exact_at(&mut buf, offset).ctx("read", &shown)?;
            Ok(buf)
        })
        .await
        .map_err(|e| Error::Invalid(format!("read task failed: {e}")))?
    }

    fn check_usable(&self) -> Result<bool> {
        let s = self.state.lock().unwrap();
        if let Some(why) = &s.poisoned {
            return Err(Error::DigestMismatch {
                what: format!("blob {} assembled from its chunk index", self.digest()),
                expected: self.digest().to_string(),
                actual: why.clone(),
            });
        }
        Ok(s.complete)
    }

    /// Is chunk `i` verified in this process (a read of it needs no fetch)?
    pub fn has_chunk(&self, i: usize) -> bool {
        self.is_verified(i)
    }

    fn is_verified(&self, i: usize) -> bool {
        let s = self.state.lock().unwrap();
        s.complete || bit(&s.verified, i)
    }

    async fn ensure_chunk(&self, i: usize) -> Result<()> {
        if self.check_usable()? || self.is_verified(i) {
            return Ok(());
        }
        let lock = {
            let mut m = self.chunk_locks.lock().unwrap();
            m.entry(i).or_default().clone()
        };
        let result = {
            let _g = lock.lock().await;
            if self.check_usable()? || self.is_verified(i) {
                Ok(())
            } else {
                self.load_chunk(i).await
            }
        };
        {
            let mut m = self.chunk_locks.lock().unwrap();
            if m.get(&i).is_some_and(|l| Arc::strong_count(l) <= 2) {
                m.remove(&i);
            }
        }
        result
    }

    /// Makes chunks `first..first + count` present with as few requests as
    /// possible: each run of missing chunks is fetched with one ranged read
    /// (at most `count` chunks in memory), and every chunk is verified before
    /// it is written. Chunk locks are taken in ascending order (single-chunk
    /// fetches take one), so concurrent callers cannot deadlock. A chunk that
    /// fails verification is left missing; the others of its run are kept.
    pub async fn ensure_chunks(&self, first: usize, count: usize) -> Result<()> {
        let end = first.saturating_add(count).min(self.index.chunks.len());
        if self.check_usable()? {
            return Ok(());
        }
        let mut held = Vec::new();
        let mut missing = Vec::new();
        for i in first..end {
            if self.is_verified(i) {
                continue;
            }
            let lock = {
                let mut m = self.chunk_locks.lock().unwrap();
                m.entry(i).or_default().clone()
            };
            let guard = lock.clone().lock_owned().await;
            held.push((i, lock, guard));
            if self.is_verified(i) {
                continue;
            }
            if bit(&self.state.lock().unwrap().present, i) {
                // Stored by an earlier process: re-hash from disk (it fetches if that fails).
                self.load_chunk(i).await?;
            } else {
                missing.push(i);
            }
        }
        let mut result = Ok(());
        let mut at = 0;
        while at < missing.len() {
            let mut stop = at + 1;
            while stop < missing.len() && missing[stop] == missing[stop - 1] + 1 {
                stop += 1;
            }
            if let Err(e) = self.fetch_run(&missing[at..stop]).await
                && result.is_ok()
            {
                result = Err(e);
            }
            at = stop;
        }
        // Release the chunk locks (the guards), keeping the Arcs to tidy the map.
        let locks: Vec<(usize, Arc<tokio::sync::Mutex<()>>)> =
            held.into_iter().map(|(i, l, _guard)| (i, l)).collect();
        {
            let mut m = self.chunk_locks.lock().unwrap();
            for (i, l) in locks {
                // Ours plus the map's: nobody else waits on it.
                if Arc::strong_count(&l) <= 2 {
                    m.remove(&i);
                }
            }
        }
        result?;
        self.maybe_promote().await
    }

    /// With the locks of `run` (consecutive chunks) held: one ranged read,
    /// then verify, write and mark each chunk.
    async fn fetch_run(&self, run: &[usize]) -> Result<()> {
        let (off, _) = self.index.range(run[0]);
        let (last_off, last_len) = self.index.range(*run.last().expect("a run has chunks"));
        let want = last_off + last_len - off;
        let started = std::time::Instant::now();
        let bytes = bytes::Bytes::from(read_range_to_vec(self.source.as_ref(), off, want).await?);
        self.fetch_stats.record(started.elapsed(), want);
        let mut first_err = None;
        for &i in run {
            let (c_off, c_len) = self.index.range(i);
            let at = (c_off - off) as usize;
            // A view into the run's buffer, not a copy: memory stays one run.
            let chunk = bytes.slice(at..at + c_len as usize);
            if let Err(e) = self.index.verify_chunk(i, &chunk) {
                tracing::error!(
                    digest = %self.digest(),
                    offset = c_off,
                    source = %self.source.describe(),
                    "chunk {i} failed verification; not served: {e}"
                );
                self.fetch_stats
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                first_err.get_or_insert(e);
                continue;
            }
            self.store_chunk(i, chunk).await?;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes a verified chunk and marks it present (and verified here).
    async fn store_chunk(&self, i: usize, bytes: impl AsRef<[u8]> + Send + 'static) -> Result<()> {
        let (off, _) = self.index.range(i);
        let data = self.data.clone();
        let shown = self.shown.clone();
        tokio::task::spawn_blocking(move || {
            data.write_all_at(bytes.as_ref(), off).ctx("write", &shown)
        })
        .await
        .map_err(|e| Error::Invalid(format!("write task failed: {e}")))??;
        let byte = {
            let mut s = self.state.lock().unwrap();
            set_bit(&mut s.present, i);
            set_bit(&mut s.verified, i);
            s.present[i / 8]
        };
        if let Some(bm) = &self.bitmap {
            // Best effort: a lost bit only costs a refetch.
            let _ = bm.write_all_at(&[byte], BITMAP_HEADER + (i / 8) as u64);
        }
        Ok(())
    }

    /// With the chunk's lock held: reuse what a previous process stored if it
    /// still verifies, else fetch, verify, write, mark.
    async fn load_chunk(&self, i: usize) -> Result<()> {
        let (off, len) = self.index.range(i);
        let persisted = bit(&self.state.lock().unwrap().present, i);
        if persisted {
            let data = self.data.clone();
            let shown = self.shown.clone();
            let on_disk = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; len as usize];
                data.read_exact_at(&mut buf, off)
                    .ctx("read", &shown)
                    .map(|_| buf)
            })
            .await
            .map_err(|e| Error::Invalid(format!("read task failed: {e}")))??;
            if self.index.verify_chunk(i, &on_disk).is_ok() {
                self.state.lock().unwrap().verified[i / 8] |= 1 << (i % 8);
                return self.maybe_promote().await;
            }
            tracing::warn!(digest = %self.digest(), offset = off, "stored chunk {i} no longer verifies; fetching it again");
        }
        self.fetch_run(&[i]).await?;
        self.maybe_promote().await
    }

    /// When every chunk is verified: check the whole digest over the file and
    /// rename it into `blobs/`.
    async fn maybe_promote(&self) -> Result<()> {
        {
            let s = self.state.lock().unwrap();
            if s.complete || (0..self.index.chunks.len()).any(|i| !bit(&s.verified, i)) {
                return Ok(());
            }
        }
        let data = self.data.clone();
        let shown = self.shown.clone();
        let size = self.index.size;
        let whole = tokio::task::spawn_blocking(move || -> Result<Digest> {
            let mut h = Hasher::new();
            let mut buf = vec![0u8; crate::digest::COPY_BUF];
            let mut off = 0u64;
            while off < size {
                let n = buf.len().min((size - off) as usize);
                data.read_exact_at(&mut buf[..n], off).ctx("read", &shown)?;
                h.update(&buf[..n]);
                off += n as u64;
            }
            data.sync_all().ctx("fsync", &shown)?;
            Ok(h.finish())
        })
        .await
        .map_err(|e| Error::Invalid(format!("hash task failed: {e}")))??;
        let dir = ConfinedDir::open_root(&self.cas.sparse_dir(), false)?;
        let bm_name = OsString::from(format!("{}.bitmap", self.digest().hex()));
        if &whole != self.digest() {
            tracing::error!(
                digest = %self.digest(),
                actual = %whole,
                "every chunk matched the index but the blob does not match its digest: the index is wrong; discarding"
            );
            let _ = dir.remove_file(&self.name);
            let _ = dir.remove_file(&bm_name);
            self.state.lock().unwrap().poisoned = Some(whole.to_string());
            return self.check_usable().map(|_| ());
        }
        super::seal(&self.data, &self.shown)?;
        self.cas.install(&dir, &self.name, self.digest())?;
        let _ = dir.remove_file(&bm_name);
        self.state.lock().unwrap().complete = true;
        tracing::info!(digest = %self.digest(), "all chunks present; blob verified and complete");
        Ok(())
    }
}
