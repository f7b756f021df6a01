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
pub use pull::{PullReport, fetch_to_dir, pull_to_dir, pull_to_store};
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
}

/// No progress reporting.
pub struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _bytes: u64) {}
}

impl TransferProgress for NoProgress {}
