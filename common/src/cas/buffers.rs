//! Reusable fetch buffers for lazy reads. A fresh multi-MiB `Vec` per
//! ranged read is a fresh mapping (big allocations are mmapped), so every
//! 4 KiB of it costs a page fault and a page clear before the first byte
//! lands: a quarter of the serving process's CPU in a cold read (perf,
//! `do_anonymous_page` + `clear_page_erms`). Buffers of finished fetches
//! are kept — at most [`POOL_BYTES`] of capacity in all, so an idle server
//! holds little — and handed to the next fetch.

use std::sync::Mutex;

/// Capacity kept between fetches: four readahead groups of 4 × 4 MiB.
pub const POOL_BYTES: usize = 64 << 20;

/// Buffers larger than this are not kept (one odd request must not pin memory).
const MAX_KEPT: usize = 16 << 20;

/// A bounded set of free buffers; the process shares [`POOL`].
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    limit: usize,
}

pub static POOL: BufferPool = BufferPool::new(POOL_BYTES);

impl BufferPool {
    pub const fn new(limit: usize) -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::new()),
            limit,
        }
    }

    /// An empty buffer with room for `len` bytes, reused when one is free.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        // The smallest kept buffer that fits, so large ones stay for large runs.
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => free.swap_remove(i),
            None => Vec::with_capacity(len),
        }
    }

    /// Returns a buffer for reuse (dropped when the pool is full or it is too big).
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() > MAX_KEPT || buf.capacity() == 0 {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let kept: usize = free.iter().map(Vec::capacity).sum();
        if kept + buf.capacity() <= self.limit {
            free.push(buf);
        }
    }

    /// Capacity currently kept.
    pub fn kept_bytes(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(Vec::capacity)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_the_pool_stays_bounded() {
        let pool = BufferPool::new(32 << 20);
        let a = pool.take(1 << 20);
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(1 << 20);
        assert_eq!(b.as_ptr(), ptr, "a returned buffer is handed out again");
        assert!(b.is_empty() && b.capacity() >= 1 << 20);
        pool.give(b);
        // A small request takes the smallest buffer that fits, not a big one.
        pool.give(Vec::with_capacity(8 << 20));
        assert_eq!(pool.take(4096).capacity(), 1 << 20);
        // Oversized buffers are dropped; the total kept never exceeds the bound.
        pool.give(Vec::with_capacity(MAX_KEPT + 1));
        for _ in 0..8 {
            pool.give(Vec::with_capacity(8 << 20));
        }
        assert!(pool.kept_bytes() <= 32 << 20);
        assert!(pool.kept_bytes() >= 24 << 20, "it keeps what fits");
    }
}
