//! The parts of `modelpack-snapshotter` other crates use: today the CSI v1
//! bindings generated from the vendored spec (`proto/csi`), so the e2e tests
//! drive the node service with the same types kubelet's client sends.

/// CSI v1.12 (`csi.v1`): Identity, Controller, Node services and messages.
#[allow(clippy::all, missing_docs)]
pub mod csi_proto {
    tonic::include_proto!("csi.v1");
}
