//! Moving models between the local store, directories and registries: push,
//! pull (into the store, or straight into a directory), fetch by pattern,
//! build straight to a registry, attach, and single-blob upload.
//!
//! Blobs move concurrently (each streamed; memory stays flat), blobs the
//! destination already has are skipped, cross-repo mounts are tried for
//! blobs known in another repository of the same registry, and manifests go
//! last so a reader never sees a manifest whose blobs are missing. A model's
//! chunk index referrers travel with it (after its manifest: a referrer
//! names its subject).

mod attach;
mod known;
pub(crate) mod pull;
mod push;
pub mod referrers;
mod relabel;
mod remote_build;
mod small;

pub use attach::{attach_layer, attach_local, attach_remote};
pub use known::KnownBlobs;
pub use pull::{
    BeforeKeep, OpenBlob, PullReport, PulledBlob, fetch_to_dir, pull_to_dir, pull_to_store,
    pull_to_store_checked,
};
pub use push::{BlobAction, BlobReport, PushReport, push_from_store, upload_file};
pub use relabel::store_in_family;
pub use remote_build::pack_to_registry;
pub use small::fetch_small_blob;

use crate::registry::Progress;

/// Progress for a whole transfer: one callback per blob start/finish and byte counts.
pub trait TransferProgress: Progress {
    /// A blob transfer starts (`size` bytes, `name` = file path or digest).
    fn blob_started(&self, _name: &str, _size: u64) {}
    /// A blob is done; `action` says whether bytes moved.
    fn blob_finished(&self, _name: &str, _size: u64, _action: &str) {}
    /// Bytes of the blob `name` moved (its own bar; `advance` counts them for the total).
    fn blob_advanced(&self, _name: &str, _bytes: u64) {}
    /// The bytes the whole transfer will move, once the manifest says (the total bar).
    fn total(&self, _bytes: u64) {}
}

/// One blob's progress: every byte counts for the transfer's total and for
/// that blob's own bar, however many blobs move at once.
pub(crate) struct BlobProgress<'a> {
    pub parent: &'a dyn TransferProgress,
    pub name: &'a str,
}

impl Progress for BlobProgress<'_> {
    fn advance(&self, bytes: u64) {
        self.parent.advance(bytes);
        self.parent.blob_advanced(self.name, bytes);
    }
}

impl TransferProgress for BlobProgress<'_> {
    fn blob_started(&self, name: &str, size: u64) {
        self.parent.blob_started(name, size)
    }
    fn blob_finished(&self, name: &str, size: u64, action: &str) {
        self.parent.blob_finished(name, size, action)
    }
    fn blob_advanced(&self, name: &str, bytes: u64) {
        self.parent.blob_advanced(name, bytes)
    }
    fn total(&self, bytes: u64) {
        self.parent.total(bytes)
    }
}

/// No progress reporting.
pub struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _bytes: u64) {}
}

impl TransferProgress for NoProgress {}

#[cfg(test)]
mod progress_tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, u64)>>, std::sync::atomic::AtomicU64);

    impl Progress for Recorder {
        fn advance(&self, bytes: u64) {
            self.1
                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }
    impl TransferProgress for Recorder {
        fn blob_advanced(&self, name: &str, bytes: u64) {
            self.0.lock().unwrap().push((name.to_string(), bytes));
        }
    }

    #[test]
    fn a_blobs_bytes_reach_its_bar_and_the_total() {
        let r = Recorder::default();
        let p = BlobProgress {
            parent: &r,
            name: "weights.safetensors",
        };
        p.advance(10);
        p.advance(5);
        assert_eq!(
            *r.0.lock().unwrap(),
            vec![
                ("weights.safetensors".to_string(), 10),
                ("weights.safetensors".to_string(), 5)
            ]
        );
        assert_eq!(r.1.load(std::sync::atomic::Ordering::Relaxed), 15);
    }
}
