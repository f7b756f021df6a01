//! The node agent's end-to-end tests (containerd, CSI, containerd's own
//! snapshotter conformance suite), linked into one test binary.

mod csi_node;
mod snapshotter_conformance;
mod snapshotter_containerd;
