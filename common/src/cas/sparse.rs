//! Partial blobs for lazy reads: `sparse/<hex>.sparse` (a sparse file of the
//! blob's full size) plus `sparse/<hex>.bitmap` (which chunks were fetched
//! and verified). [`SparseBlob::read_at`] only ever returns bytes of
//! chunks that hashed to their digest in the chunk index: missing chunks are
//! fetched through the [`BlobSource`] (one fetch per chunk however many
//! readers wait on it), verified, written, and marked present. When the last
//! chunk arrives the whole-blob digest is checked and the file is promoted
//! to `blobs/sha256/<hex>`. That digest is computed as chunks land in
//! order, from the bytes already in memory for verification ([`Prefix`]),
//! so completing a blob does not read it all back.
//!
//! The bitmap is written after the chunk's data but without an fsync per
//! chunk, so after a crash a bit may be set over bytes that never reached
//! the disk. A persisted bit is therefore only a hint: the first read of
//! such a chunk in a process re-hashes it from the file (no network), and a
//! chunk that fails is fetched again. A bitmap never makes us serve a byte
//! we have not verified in this process.

use std::collections::{BTreeSet, HashMap};
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
use super::buffers::POOL;
use super::source::{BlobSource, read_range_into};

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

/// The whole-blob SHA-256 over chunks `0..next`, fed from each verified
/// chunk's bytes while they are still in memory. A chunk that lands out of
/// order is remembered in `landed` and hashed from the file (still in the
/// page cache) once the chunks before it are in.
#[derive(Default)]
pub(super) struct Prefix {
    pub(super) hasher: Hasher,
    pub(super) next: usize,
    landed: BTreeSet<usize>,
}

impl Prefix {
    /// Chunk `i` was verified and written; `bytes` are its bytes when at hand.
    pub(super) fn land(&mut self, i: usize, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) if i == self.next => {
                self.hasher.update(b);
                self.next += 1;
            }
            _ if i >= self.next => {
                self.landed.insert(i);
            }
            _ => {}
        }
    }

    pub(super) fn can_catch_up(&self) -> bool {
        self.landed.first() == Some(&self.next)
    }

    /// Hashes the landed chunks that now follow the prefix, from the file.
    pub(super) fn catch_up(
        &mut self,
        index: &ChunkIndex,
        data: &File,
        shown: &std::path::Path,
    ) -> Result<()> {
        let mut buf = Vec::new();
        while self.landed.remove(&self.next) {
            let (off, len) = index.range(self.next);
            buf.resize(len as usize, 0);
            data.read_exact_at(&mut buf, off).ctx("read", shown)?;
            self.hasher.update(&buf);
            self.next += 1;
        }
        Ok(())
    }
}

/// What became of one chunk of a fetched run.
enum Stored {
    Written,
    /// Did not verify: not written, never served.
    Refused(Error),
}

fn bit(bits: &[u8], i: usize) -> bool {
    bits[i / 8] & (1 << (i % 8)) != 0
}

fn set_bit(bits: &mut [u8], i: usize) {
    bits[i / 8] |= 1 << (i % 8);
}

/// How many of a blob's `size` bytes this node holds: all of them when the
/// blob is in `blobs/`, else the chunks its lazy bitmap marks present (a
/// hint: they are verified again before they are served), 0 when there is
/// neither. For listings; it never opens the blob, so a process serving it
/// keeps its lock. A bitmap that does not fit `size` counts as nothing.
pub fn local_bytes(cas: &Cas, digest: &Digest, size: u64) -> u64 {
    if cas.has(digest) {
        return size;
    }
    let present = || -> Option<u64> {
        let dir = ConfinedDir::open_root(&cas.sparse_dir(), false).ok()?;
        let bm = dir
            .open_file(&OsString::from(format!("{}.bitmap", digest.hex())), false)
            .ok()?;
        let mut header = [0u8; BITMAP_HEADER as usize];
        bm.read_exact_at(&mut header, 0).ok()?;
        if &header[..8] != BITMAP_MAGIC {
            return None;
        }
        let cs = u64::from_le_bytes(header[8..].try_into().ok()?);
        crate::chunk::check_chunk_size(cs).ok()?;
        let chunks = size.div_ceil(cs);
        let words = usize::try_from(chunks.div_ceil(8)).ok()?;
        if bm.metadata().ok()?.len() != BITMAP_HEADER + words as u64 {
            return None;
        }
        let mut bits = vec![0u8; words];
        bm.read_exact_at(&mut bits, BITMAP_HEADER).ok()?;
        Some(
            (0..chunks)
                .filter(|&i| bit(&bits, i as usize))
                .map(|i| cs.min(size - i * cs))
                .sum(),
        )
    };
    present().unwrap_or(0)
}

/// A blob that fills itself on demand. One per blob per process: the data
/// file is `flock`ed for the lifetime of the handle (the lease GC honours).
pub struct SparseBlob {
    cas: Cas,
    index: Arc<ChunkIndex>,
    source: Arc<dyn BlobSource>,
    data: Arc<File>,
    /// The whole-blob digest over the chunks verified so far, in order.
    prefix: Arc<Mutex<Prefix>>,
    /// One promotion at a time (a second caller finds the blob complete).
    promoting: tokio::sync::Mutex<()>,
    /// One chunk write at a time: concurrent buffered writes to one file
    /// contend on its inode lock, and the kernel spins for it (9% of the
    /// serving process's CPU in a cold read); a sleeping lock costs nothing.
    writing: Arc<Mutex<()>>,
    bitmap: Option<File>,
    name: OsString,
    shown: PathBuf,
    state: Mutex<State>,
    chunk_locks: Mutex<HashMap<usize, Arc<tokio::sync::Mutex<()>>>>,
    /// Ranged reads made for this blob and how long they took.
    pub fetch_stats: FetchStats,
    /// Whole-digest feeds still running in the background. They hold the
    /// locked data file, so dropping the blob waits for them: the lock must
    /// be free when it returns, or reopening the blob at once (a view served
    /// again, a restart in-process) would be refused as "in use".
    feeds: Arc<Feeds>,
}

/// Tests slow every feed down by this much, to hold the race open.
#[cfg(test)]
pub(crate) static FEED_DELAY_MS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// A count of running feeds and a signal when one ends.
#[derive(Default)]
struct Feeds {
    running: Mutex<usize>,
    ended: std::sync::Condvar,
}

/// Counts one feed for as long as it lives (a panicking feed still ends).
struct FeedGuard(Arc<Feeds>);

impl FeedGuard {
    fn start(feeds: &Arc<Feeds>) -> FeedGuard {
        *feeds.running.lock().unwrap() += 1;
        FeedGuard(feeds.clone())
    }
}

impl Drop for FeedGuard {
    fn drop(&mut self) {
        let mut n = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        self.0.ended.notify_all();
    }
}

impl Drop for SparseBlob {
    fn drop(&mut self) {
        // Feeds hash at most one run (a few MiB) from memory or the page
        // cache: milliseconds. The bound only keeps a wedged disk from
        // hanging the dropper forever.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut n = self.feeds.running.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "{}: a whole-digest feed is still running; its lock goes when it ends",
                    self.shown.display()
                );
                break;
            }
            n = self
                .feeds
                .ended
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
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
        let index = Arc::new(index);
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
                prefix: Default::default(),
                promoting: Default::default(),
                writing: Default::default(),
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
                feeds: Default::default(),
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
            prefix: Default::default(),
            promoting: Default::default(),
            writing: Default::default(),
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
            feeds: Default::default(),
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

    /// Reads `offset..offset+len` (clipped to the blob) into `buf` without
    /// waiting, when every chunk of the range is verified in this process;
    /// `None` when a chunk is missing (then [`SparseBlob::read_at`] fetches).
    /// A FUSE server answers most sequential reads this way, on its own
    /// thread, because readahead has already fetched them.
    pub fn read_verified_at(&self, offset: u64, len: u64, buf: &mut Vec<u8>) -> Option<Result<()>> {
        let size = self.index.size;
        buf.clear();
        if offset >= size || len == 0 {
            return Some(Ok(()));
        }
        let end = offset.saturating_add(len).min(size);
        {
            let s = self.state.lock().unwrap();
            if s.poisoned.is_some() {
                return None;
            }
            if !s.complete {
                let first = (offset / self.index.chunk_size) as usize;
                let last = ((end - 1) / self.index.chunk_size) as usize;
                if (first..=last).any(|i| !bit(&s.verified, i)) {
                    return None;
                }
            }
        }
        buf.resize((end - offset) as usize, 0);
        Some(
            self.data
                .read_exact_at(buf, offset)
                .ctx("read", &self.shown),
        )
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

    /// With the locks of `run` (consecutive chunks) held: one ranged read
    /// into a pooled buffer, then — on a blocking thread, since hashing
    /// 16 MiB takes milliseconds — verify and write each chunk, mark the
    /// written ones present, and feed them to the whole-blob digest in the
    /// background.
    async fn fetch_run(&self, run: &[usize]) -> Result<()> {
        let (off, _) = self.index.range(run[0]);
        let (last_off, last_len) = self.index.range(*run.last().expect("a run has chunks"));
        let want = last_off + last_len - off;
        let started = std::time::Instant::now();
        let mut buf = POOL.take(want as usize);
        if let Err(e) = read_range_into(self.source.as_ref(), off, want, &mut buf).await {
            POOL.give(buf);
            return Err(e);
        }
        self.fetch_stats.record(started.elapsed(), want);
        let (index, data, shown) = (self.index.clone(), self.data.clone(), self.shown.clone());
        let chunks = run.to_vec();
        let writing = self.writing.clone();
        let (buf, stored, written) = tokio::task::spawn_blocking(move || {
            let mut stored = Vec::with_capacity(chunks.len());
            let mut written = Ok(());
            for &i in &chunks {
                let (c_off, c_len) = index.range(i);
                let at = (c_off - off) as usize;
                let chunk = &buf[at..at + c_len as usize];
                if let Err(e) = index.verify_chunk(i, chunk) {
                    stored.push((i, Stored::Refused(e)));
                    continue;
                }
                let wrote = {
                    let _one = writing.lock().unwrap_or_else(|p| p.into_inner());
                    data.write_all_at(chunk, c_off).ctx("write", &shown)
                };
                if let Err(e) = wrote {
                    written = Err(e);
                    break;
                }
                stored.push((i, Stored::Written));
            }
            (buf, stored, written)
        })
        .await
        .map_err(|e| Error::Invalid(format!("write task failed: {e}")))?;
        let mut first_err = None;
        let mut landed = Vec::with_capacity(stored.len());
        for (i, outcome) in stored {
            match outcome {
                Stored::Written => {
                    self.mark_present(i);
                    landed.push(i);
                }
                Stored::Refused(e) => {
                    let (c_off, _) = self.index.range(i);
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
                }
            }
        }
        // Readers of these chunks go on now; the whole-blob digest takes
        // their bytes afterwards, off their path.
        self.spawn_feed(buf, off, landed);
        written?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Marks a verified, written chunk present (and verified here).
    fn mark_present(&self, i: usize) {
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
    }

    /// Feeds the verified, written chunks `landed` of a fetched run (`buf`
    /// starts at blob offset `off`) to the whole-blob digest, catches up on
    /// chunks that had landed out of order, and returns the buffer to the pool.
    fn spawn_feed(&self, buf: Vec<u8>, off: u64, landed: Vec<usize>) {
        let (index, data, shown, prefix) = (
            self.index.clone(),
            self.data.clone(),
            self.shown.clone(),
            self.prefix.clone(),
        );
        let running = FeedGuard::start(&self.feeds);
        tokio::task::spawn_blocking(move || {
            // Ends after `data` is dropped (declared first, dropped last).
            let _running = running;
            let data = data;
            #[cfg(test)]
            std::thread::sleep(std::time::Duration::from_millis(
                FEED_DELAY_MS.load(std::sync::atomic::Ordering::Relaxed),
            ));
            {
                let mut p = prefix.lock().unwrap();
                for i in landed {
                    let (c_off, c_len) = index.range(i);
                    let at = (c_off - off) as usize;
                    p.land(i, Some(&buf[at..at + c_len as usize]));
                }
                if let Err(e) = p.catch_up(&index, &data, &shown) {
                    // Promotion hashes whatever is left from the file and reports it.
                    tracing::debug!("whole-blob digest catch-up deferred: {e}");
                }
            }
            POOL.give(buf);
        });
    }

    /// When chunks that landed out of order now follow the digest's prefix,
    /// hashes them in the background (the reader that completed the gap
    /// does not wait for it).
    fn spawn_catch_up(&self) {
        if self.prefix.lock().unwrap().can_catch_up() {
            self.spawn_feed(Vec::new(), 0, Vec::new());
        }
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
                self.prefix.lock().unwrap().land(i, Some(&on_disk));
                self.spawn_catch_up();
                return self.maybe_promote().await;
            }
            tracing::warn!(digest = %self.digest(), offset = off, "stored chunk {i} no longer verifies; fetching it again");
        }
        self.fetch_run(&[i]).await?;
        self.maybe_promote().await
    }

    /// When every chunk is verified: finish the whole digest (the prefix
    /// hashed as chunks landed, plus whatever is left, read from the file),
    /// fsync, and rename the file into `blobs/`.
    async fn maybe_promote(&self) -> Result<()> {
        let all_verified = |s: &State| (0..self.index.chunks.len()).all(|i| bit(&s.verified, i));
        {
            let s = self.state.lock().unwrap();
            if s.complete || !all_verified(&s) {
                return Ok(());
            }
        }
        let _one = self.promoting.lock().await;
        if self.check_usable()? {
            return Ok(());
        }
        let (index, data, shown, prefix) = (
            self.index.clone(),
            self.data.clone(),
            self.shown.clone(),
            self.prefix.clone(),
        );
        let whole = tokio::task::spawn_blocking(move || -> Result<Digest> {
            let mut p = prefix.lock().unwrap();
            p.catch_up(&index, &data, &shown)?;
            // Take the state: a retry after a failed promotion starts over from the file.
            let Prefix {
                mut hasher, next, ..
            } = std::mem::take(&mut *p);
            let mut buf = vec![0u8; crate::digest::COPY_BUF];
            let mut off = (next as u64)
                .saturating_mul(index.chunk_size)
                .min(index.size);
            while off < index.size {
                let n = buf.len().min((index.size - off) as usize);
                data.read_exact_at(&mut buf[..n], off).ctx("read", &shown)?;
                hasher.update(&buf[..n]);
                off += n as u64;
            }
            data.sync_all().ctx("fsync", &shown)?;
            Ok(hasher.finish())
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
