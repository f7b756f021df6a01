//! Background prefetch of a view's lazily served blobs: small files first
//! (configs, tokenizers, index JSON), then the rest in path order, a few
//! blobs at a time, chunk by chunk — so a read that needs another chunk
//! waits for at most the chunk in flight, never for a whole blob — and
//! paced to a bandwidth limit when one is set. A chunk that cannot be
//! fetched or does not verify is skipped (a read of it fails with EIO and
//! fetches it again); the rest of the blob is still prefetched.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use modelpack_common::cas::SparseBlob;

use crate::{Backing, FsFile};

/// Chunks fetched with one ranged read (fewer, larger requests).
const PREFETCH_GROUP: u64 = 4;

/// Prefetch knobs (Nydus's `prefetch.threads` and `prefetch.bandwidth_limit`).
#[derive(Debug, Clone, Copy)]
pub struct Prefetch {
    /// Blobs fetched at once.
    pub concurrency: usize,
    /// Bytes per second over all blobs; 0 = unlimited.
    pub bytes_per_sec: u64,
}

impl Default for Prefetch {
    fn default() -> Self {
        Prefetch {
            concurrency: 2,
            bytes_per_sec: 0,
        }
    }
}

/// Keeps the average rate since `start` at or under the limit.
struct Pacer {
    start: Instant,
    sent: AtomicU64,
    rate: u64,
}

impl Pacer {
    async fn account(&self, bytes: u64) {
        let sent = self.sent.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(sent as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// Prefetches every lazy file's blob; returns how many blobs are complete.
pub async fn prefetch(files: Vec<FsFile>, opts: Prefetch) -> usize {
    let mut lazy: Vec<(u64, PathBuf, Arc<SparseBlob>)> = files
        .into_iter()
        .filter_map(|f| match f.backing {
            Backing::Lazy(b) => Some((f.size, f.path, b)),
            Backing::Complete(_) => None,
        })
        .collect();
    lazy.sort_by(|a, b| (a.0 > 1 << 20).cmp(&(b.0 > 1 << 20)).then(a.1.cmp(&b.1)));
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let pacer = Arc::new(Pacer {
        start: Instant::now(),
        sent: AtomicU64::new(0),
        rate: opts.bytes_per_sec,
    });
    let mut tasks = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, path, blob) in lazy {
        if !seen.insert(blob.digest().clone()) {
            continue;
        }
        let (sem, pacer) = (sem.clone(), pacer.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            let cs = blob.index().chunk_size;
            let n = blob.index().chunks.len() as u64;
            let mut failed = 0u64;
            let mut i = 0u64;
            while i < n && !blob.is_complete() {
                let group = PREFETCH_GROUP.min(n - i);
                // Only bytes that cross the network count against the limit.
                let fetching: u64 = (i..i + group)
                    .filter(|j| !blob.has_chunk(*j as usize))
                    .map(|j| cs.min(blob.size() - j * cs))
                    .sum();
                if let Err(e) = blob.ensure_chunks(i as usize, group as usize).await {
                    if failed == 0 {
                        tracing::warn!(path = %path.display(), chunk = i, "prefetch skipped a chunk: {e}");
                    }
                    failed += 1;
                }
                pacer.account(fetching).await;
                i += group;
            }
            blob.is_complete()
        }));
    }
    let mut done = 0;
    for t in tasks {
        if t.await.unwrap_or(false) {
            done += 1;
        }
    }
    done
}

/// [`prefetch`] until every lazily served blob is complete: after a round
/// that left some incomplete (registry unreachable, a chunk refused), waits
/// and goes again, backing off from 1 s to 30 s, so a view whose registry
/// comes back completes without anyone reading it. Runs until done or
/// aborted (callers abort it when the view is unmounted).
pub async fn prefetch_until_complete(files: Vec<FsFile>, opts: Prefetch) -> usize {
    let total = crate::attach::progress(&files).1;
    let mut wait = Duration::from_secs(1);
    loop {
        let done = prefetch(files.clone(), opts).await;
        if done >= total {
            return done;
        }
        tracing::info!(
            "prefetch: {done} of {total} blobs complete; trying the rest again in {wait:?}"
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}
