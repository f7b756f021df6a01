//! Generates the server side of `containerd.services.snapshots.v1.Snapshots`
//! with tonic's manual service builder. The message types are the ones
//! containerd-client already generates, so no containerd .proto file is copied
//! into this repository and there is a single tonic/prost stack.
//!
//! And the CSI v1 bindings (server and client; the client drives the e2e
//! tests as kubelet does) from the vendored `proto/csi/csi.proto`.

use tonic_prost_build::manual::{Builder, Method, Service};

fn method(name: &str, route: &str, input: &str, output: &str) -> Method {
    Method::builder()
        .name(name)
        .route_name(route)
        .input_type(format!(
            "containerd_client::services::v1::snapshots::{input}"
        ))
        .output_type(output)
        .codec_path("tonic_prost::ProstCodec")
        .build()
}

fn main() {
    let snap = |t: &str| format!("containerd_client::services::v1::snapshots::{t}");
    // google.protobuf.Empty is () in prost; the builder needs a path, so an alias.
    let empty = "crate::service::Empty".to_string();
    let list = Method::builder()
        .name("list")
        .route_name("List")
        .input_type(snap("ListSnapshotsRequest"))
        .output_type(snap("ListSnapshotsResponse"))
        .codec_path("tonic_prost::ProstCodec")
        .server_streaming()
        .build();
    let service = Service::builder()
        .name("Snapshots")
        .package("containerd.services.snapshots.v1")
        .method(method(
            "prepare",
            "Prepare",
            "PrepareSnapshotRequest",
            &snap("PrepareSnapshotResponse"),
        ))
        .method(method(
            "view",
            "View",
            "ViewSnapshotRequest",
            &snap("ViewSnapshotResponse"),
        ))
        .method(method(
            "mounts",
            "Mounts",
            "MountsRequest",
            &snap("MountsResponse"),
        ))
        .method(method("commit", "Commit", "CommitSnapshotRequest", &empty))
        .method(method("remove", "Remove", "RemoveSnapshotRequest", &empty))
        .method(method(
            "stat",
            "Stat",
            "StatSnapshotRequest",
            &snap("StatSnapshotResponse"),
        ))
        .method(method(
            "update",
            "Update",
            "UpdateSnapshotRequest",
            &snap("UpdateSnapshotResponse"),
        ))
        .method(list)
        .method(method(
            "usage",
            "Usage",
            "UsageRequest",
            &snap("UsageResponse"),
        ))
        .method(method("cleanup", "Cleanup", "CleanupRequest", &empty))
        .build();
    Builder::new()
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        .compile(&[service]);

    println!("cargo:rerun-if-changed=proto/csi/csi.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/csi/csi.proto"], &["proto/csi"])
        .expect(
            "compile proto/csi/csi.proto (needs protoc and libprotobuf-dev: integration/setup.sh)",
        );
}
