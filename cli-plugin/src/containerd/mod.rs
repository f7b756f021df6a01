//! Driving containerd for models: `pull --containerd` records the manifest and
//! config in containerd's content store, prepares the layer chain through the
//! `modelpack` proxy snapshotter with our labels (the snapshotter fetches and
//! verifies each layer itself and answers ALREADY_EXISTS), and creates the
//! image record — all under a lease, with the GC labels that keep the chain
//! alive while the image exists. `mount`/`umount` attach a read-only View of a
//! model at a directory for `ctr run --mount` or `nerdctl run -v`.

mod client;
mod mount;
mod pull;

use std::path::PathBuf;

pub use mount::{is_containerd_mount, mount, umount};
pub use pull::pull;

/// Where and how to talk to containerd.
#[derive(Debug, Clone, clap::Args)]
pub struct ContainerdArgs {
    /// containerd socket
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub address: PathBuf,
    /// containerd namespace
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Snapshotter that materialises model layers
    #[arg(long, default_value = "modelpack")]
    pub snapshotter: String,
}
