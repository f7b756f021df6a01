//! Background prefetch of a view's lazily served blobs: small files first
//! (configs, tokenizers, index JSON), then the rest in path order, a few
//! blobs at a time, chunk by chunk — so a read that needs another chunk
//! waits for at most the chunk in flight, never for a whole blob — and
//! paced to a bandwidth limit when one is set. A chunk that cannot be
//! Within a blob, the next group's ranged read is on the wire while the
//! last one is verified and written (`depth`), and the reads over all blobs
//! are capped (`in_flight`), which bounds the buffers held. A chunk that cannot be
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
    /// Chunks fetched with one ranged read.
    pub group: usize,
    /// Ranged reads in flight per blob.
    pub depth: usize,
    /// Ranged reads in flight over all blobs: with `group` this bounds the
    /// memory prefetch holds (each read is one pooled buffer).
    pub in_flight: usize,
}

impl Default for Prefetch {
    fn default() -> Self {
        Prefetch {
            concurrency: 2,
            bytes_per_sec: 0,
            group: PREFETCH_GROUP as usize,
            depth: 2,
            // As many reads as blobs: the second read of a blob starts only
            // once another blob is done (the tail of a prefetch, a
            // one-shard model), so the memory held stays what two blobs
            // with one read each hold (measured: 84 MiB peak at 1 GiB; three
            // reads took it to 122–132 MiB and were not faster at 4 GiB).
            in_flight: 2,
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
    let reads = Arc::new(tokio::sync::Semaphore::new(opts.in_flight.max(1)));
    let mut tasks = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, path, blob) in lazy {
        if !seen.insert(blob.digest().clone()) {
            continue;
        }
        let (sem, pacer, reads) = (sem.clone(), pacer.clone(), reads.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            let cs = blob.index().chunk_size;
            let n = blob.index().chunks.len() as u64;
            let (group_len, depth) = (opts.group.max(1) as u64, opts.depth.max(1));
            let mut failed = 0u64;
            let mut next = 0u64;
            // Up to `depth` groups of one blob in flight: the next group's
            // request is on the wire while this one is verified and written.
            let mut inflight = tokio::task::JoinSet::new();
            loop {
                while inflight.len() < depth && next < n && !blob.is_complete() {
                    let (i, group) = (next, group_len.min(n - next));
                    next += group;
                    // Only bytes that cross the network count against the limit.
                    let fetching: u64 = (i..i + group)
                        .filter(|j| !blob.has_chunk(*j as usize))
                        .map(|j| cs.min(blob.size() - j * cs))
                        .sum();
                    if fetching == 0 {
                        continue;
                    }
                    let (blob, pacer) = (blob.clone(), pacer.clone());
                    let permit = reads.clone().acquire_owned().await;
                    inflight.spawn(async move {
                        let _read = permit;
                        let r = blob.ensure_chunks(i as usize, group as usize).await;
                        pacer.account(fetching).await;
                        (i, r)
                    });
                }
                let Some(joined) = inflight.join_next().await else {
                    break;
                };
                if let Ok((i, Err(e))) = joined {
                    if failed == 0 {
                        tracing::warn!(path = %path.display(), chunk = i, "prefetch skipped a chunk: {e}");
                    }
                    failed += 1;
                }
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
