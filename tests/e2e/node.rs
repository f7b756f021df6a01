//! The node agent's end-to-end tests (containerd, CSI, containerd's own
//! snapshotter conformance suite), linked into one test binary.

mod csi_node;
mod snapshotter_conformance;
mod snapshotter_containerd;

/// These tests mount FUSE and overlay filesystems, run containerd and runc,
/// and share `/run/containerd` and the kernel's mount table: in one process
/// they take turns, as they did when each was its own binary.
pub(crate) fn one_node() -> std::sync::MutexGuard<'static, ()> {
    static NODE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    NODE.lock().unwrap_or_else(|e| e.into_inner())
}
