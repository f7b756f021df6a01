//! The CSI node plugin: Kubernetes pods get models as volumes from the same
//! node agent, the same verified chunked store and the same lazy FUSE views
//! containerd's snapshots use.
//!
//! `service.rs` holds the gRPC surface (Identity and Node, CSI v1.12) and
//! the mapping of our errors to CSI status codes; `volumes.rs` owns what a
//! published volume is — one shared view per model (and file filter), bind
//! mounted read-only at each pod's target path, recorded on disk so a
//! restart serves them again, released (and its blobs left to GC) when the
//! last volume of it goes.

mod request;
mod service;
mod volumes;

pub use service::{CsiService, identity_server, node_server};
pub use volumes::{CsiOptions, Volumes};

/// The driver name unless configured (the `CSIDriver` object's name).
pub const DEFAULT_DRIVER_NAME: &str = "modelpack.csi.modelpack.dev";
