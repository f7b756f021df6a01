//! The CSI node service of `modelpack-snapshotter`, driven over its socket
//! exactly as kubelet drives it (there is no kubelet here): Identity probe,
//! NodeGetInfo/Capabilities, NodePublishVolume for two pods of one model
//! pushed to a real docker-registry 2.8 (an inline ephemeral volume by tag,
//! a persistent one by digest-pinned volumeHandle), every file read at both
//! targets and compared by sha256, the model stored once, the repeats and
//! errors the CSI spec asks for (csi-sanity's node cases that apply:
//! idempotency, missing volume id, missing target path), the right codes for
//! a bad reference, a missing model, a wrong credential and a registry that
//! is down, a daemon restart with the volumes still readable, unpublish of
//! both, and GC freeing the model's blobs. Also: a gRPC client that sends the
//! socket path as `:authority` (grpc-go 1.33, Debian's) is answered on both
//! of the daemon's sockets.
//!
//! Needs root and /dev/fuse (mounts); skips with a message otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use modelpack_e2e::services::{Auth, Registry};
use modelpack_e2e::{ok, require_tool};
use modelpack_snapshotter::csi_proto as csi;
use sha2::Digest as _;
use tonic::Code;

const SNAPSHOTTER: &str = env!("CARGO_BIN_EXE_modelpack-snapshotter");
const DRIVER: &str = "modelpack.csi.modelpack.dev";

fn cli() -> PathBuf {
    Path::new(SNAPSHOTTER).with_file_name("docker-modelpack")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

struct Daemon {
    child: Option<Child>,
    t: PathBuf,
}

impl Daemon {
    fn start(t: &Path) -> Daemon {
        let mut d = Daemon {
            child: None,
            t: t.to_path_buf(),
        };
        d.spawn();
        d
    }
    fn csi_sock(&self) -> PathBuf {
        self.t.join("plugins/modelpack/csi.sock")
    }
    fn snap_sock(&self) -> PathBuf {
        self.t.join("snap.sock")
    }
    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.csi_sock());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.t.join("daemon.log"))
            .unwrap();
        let mut cmd = Command::new(SNAPSHOTTER);
        // A test that wants a node config writes it first.
        if self.t.join("node.toml").exists() {
            cmd.arg("--config").arg(self.t.join("node.toml"));
        }
        let child = cmd
            .arg("--root")
            .arg(self.t.join("root"))
            .arg("--address")
            .arg(self.snap_sock())
            .arg("--csi-address")
            .arg(format!("unix://{}", self.csi_sock().display()))
            .arg("--node-id")
            .arg("node-a")
            .env("DOCKER_CONFIG", self.t.join("nodedocker"))
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.csi_sock().exists() {
            assert!(
                Instant::now() < deadline,
                "the CSI socket did not appear: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.t.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        // Leave no mount of ours behind before the temp dir goes.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "awk '{{print $2}}' /proc/mounts | grep '^{}' | sort -r | xargs -r -n1 umount -l",
                self.t.display()
            ))
            .status();
    }
}

struct Clients {
    identity: csi::identity_client::IdentityClient<tonic::transport::Channel>,
    node: csi::node_client::NodeClient<tonic::transport::Channel>,
}

async fn connect(sock: &Path) -> Clients {
    let ch = containerd_client::connect(sock).await.unwrap();
    Clients {
        identity: csi::identity_client::IdentityClient::new(ch.clone()),
        node: csi::node_client::NodeClient::new(ch),
    }
}

fn mount_cap() -> Option<csi::VolumeCapability> {
    use csi::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
    Some(csi::VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::MultiNodeReaderOnly as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    })
}

fn publish_req(id: &str, target: &Path, ctx: &[(&str, &str)]) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.display().to_string(),
        volume_capability: mount_cap(),
        readonly: true,
        volume_context: ctx
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn unpublish_req(id: &str, target: &Path) -> csi::NodeUnpublishVolumeRequest {
    csi::NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.display().to_string(),
    }
}

fn sha(p: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// Relative path → sha256 of every file under `dir`.
fn hashes(dir: &Path) -> HashMap<String, String> {
    modelpack_e2e::files_under(dir)
        .into_iter()
        .map(|f| (f.display().to_string(), sha(&dir.join(&f))))
        .collect()
}

fn store_bytes(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for sub in ["blobs/sha256", "sparse"] {
        if let Ok(rd) = std::fs::read_dir(root.join(sub)) {
            for e in rd.flatten() {
                total += e.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
            }
        }
    }
    total
}

#[test]
fn kubelet_publishes_a_model_to_two_pods_lazily_stored_once_and_unpublishes_it() {
    let _one = crate::one_node();
    for t in ["docker-registry", "htpasswd"] {
        require_tool(t);
    }
    if !is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!(
            "skipping: the CSI node service mounts (FUSE views, bind mounts), which needs root and /dev/fuse"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().to_path_buf();
    let reg = Registry::start(&t.join("reg"), Auth::None);
    let secure = Registry::start(
        &t.join("reg2"),
        Auth::Htpasswd {
            user: "kube".into(),
            password: "right-password".into(),
        },
    );
    let mp = || {
        let mut c = Command::new(cli());
        c.env("MODELPACK_HOME", t.join("store"))
            .env("DOCKER_CONFIG", t.join("clidocker"));
        c
    };
    // A model with a bound chunk index (lazy) and one without (eager).
    let model = t.join("model");
    std::fs::create_dir_all(model.join("tokenizer")).unwrap();
    std::fs::write(model.join("config.json"), br#"{"architectures":["X"]}"#).unwrap();
    std::fs::write(model.join("tokenizer/tokenizer.json"), br#"{"v":1}"#).unwrap();
    let weights: Vec<u8> = (0..6u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(model.join("model.safetensors"), &weights).unwrap();
    let lazy_ref = format!("{}/models/tiny:v1", reg.host);
    let eager_ref = format!("{}/models/eager:v1", reg.host);
    let digest = ok(
        mp().args([
            "build",
            "-q",
            "--chunk-size",
            "1MiB",
            "-t",
            &lazy_ref,
            model.to_str().unwrap(),
        ])
        .output()
        .unwrap(),
        "build",
    )
    .trim()
    .to_string();
    ok(
        mp().args(["push", "-q", &lazy_ref]).output().unwrap(),
        "push",
    );
    ok(
        mp().args([
            "build",
            "-q",
            "--no-chunk-index",
            "-t",
            &eager_ref,
            model.to_str().unwrap(),
        ])
        .output()
        .unwrap(),
        "build eager",
    );
    ok(
        mp().args(["push", "-q", &eager_ref]).output().unwrap(),
        "push eager",
    );
    let secret_ref = format!("{}/private/tiny:v1", secure.host);
    ok(
        mp().args(["tag", &lazy_ref, &secret_ref]).output().unwrap(),
        "tag",
    );
    ok(
        mp().args([
            "push",
            "-q",
            "-u",
            "kube",
            "-p",
            "right-password",
            &secret_ref,
        ])
        .output()
        .unwrap(),
        "push to the authenticated registry",
    );
    let source = hashes(&model);
    let model_bytes: u64 = weights.len() as u64;

    let mut daemon = Daemon::start(&t);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(connect(&daemon.csi_sock()));

    // Identity and node info, as kubelet's plugin registration asks.
    let info = rt
        .block_on(c.identity.get_plugin_info(csi::GetPluginInfoRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(info.name, DRIVER);
    let probe = rt
        .block_on(c.identity.probe(csi::ProbeRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));
    let ni = rt
        .block_on(c.node.node_get_info(csi::NodeGetInfoRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(ni.node_id, "node-a");
    let caps = rt
        .block_on(
            c.node
                .node_get_capabilities(csi::NodeGetCapabilitiesRequest {}),
        )
        .unwrap()
        .into_inner();
    let has_stats = caps.capabilities.iter().any(|cap| {
        matches!(&cap.r#type, Some(csi::node_service_capability::Type::Rpc(r))
            if r.r#type == csi::node_service_capability::rpc::Type::GetVolumeStats as i32)
    });
    assert!(has_stats, "{caps:?}");

    // Two pods: an inline ephemeral volume by tag, a persistent one by digest.
    let pods = t.join("pods");
    let p1 = pods.join("p1/volumes/kubernetes.io~csi/model/mount");
    let p2 = pods.join("p2/volumes/kubernetes.io~csi/model/mount");
    let pinned = format!("{}/models/tiny@{digest}", reg.host);
    let ephemeral = [
        ("csi.storage.k8s.io/ephemeral", "true"),
        ("reference", lazy_ref.as_str()),
    ];
    let started = Instant::now();
    rt.block_on(
        c.node
            .node_publish_volume(publish_req("csi-pod1", &p1, &ephemeral)),
    )
    .unwrap_or_else(|e| panic!("publish p1: {e}\n{}", daemon.log()));
    let first_publish = started.elapsed();
    rt.block_on(c.node.node_publish_volume(publish_req(&pinned, &p2, &[])))
        .unwrap_or_else(|e| panic!("publish p2: {e}\n{}", daemon.log()));
    // Published lazily: the weights are not on the node yet.
    let root = t.join("root");
    let weight_hex = sha(&model.join("model.safetensors"));
    assert!(
        !root.join("blobs/sha256").join(&weight_hex).exists(),
        "the weights were fetched before any read"
    );
    assert_eq!(hashes(&p1), source, "pod 1 sees other files");
    assert_eq!(hashes(&p2), source, "pod 2 sees other files");
    // One view for both pods, the model stored once.
    let views = std::fs::read_dir(root.join("csi/views")).unwrap().count();
    assert_eq!(views, 1, "two pods of one model got two views");
    let stored = store_bytes(&root);
    assert!(
        stored < model_bytes + model_bytes / 2,
        "the node store holds {stored} bytes for a {model_bytes}-byte model"
    );
    // Read-only for the pods.
    assert!(std::fs::write(p1.join("config.json"), b"x").is_err());
    // Repeats are fine (kubelet retries); stats describe the volume.
    rt.block_on(
        c.node
            .node_publish_volume(publish_req("csi-pod1", &p1, &ephemeral)),
    )
    .expect("a repeated publish succeeds");
    let stats = rt
        .block_on(
            c.node
                .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                    volume_id: pinned.clone(),
                    volume_path: p2.display().to_string(),
                    staging_target_path: String::new(),
                }),
        )
        .unwrap()
        .into_inner();
    let bytes_used = stats
        .usage
        .iter()
        .find(|u| u.unit == csi::volume_usage::Unit::Bytes as i32)
        .unwrap()
        .used as u64;
    let total: u64 = modelpack_e2e::files_under(&model)
        .iter()
        .map(|f| std::fs::metadata(model.join(f)).unwrap().len())
        .sum();
    assert_eq!(bytes_used, total);
    assert_eq!(stats.volume_condition.map(|c| c.abnormal), Some(false));

    // Errors, with the codes kubelet acts on.
    let code = |r: Result<tonic::Response<csi::NodePublishVolumeResponse>, tonic::Status>| {
        r.map(|_| ()).unwrap_err()
    };
    let other = pods.join("p3/mount");
    let cases: Vec<(&str, csi::NodePublishVolumeRequest, Code)> = vec![
        (
            "no volume id",
            publish_req("", &other, &ephemeral),
            Code::InvalidArgument,
        ),
        (
            "no target path",
            {
                let mut r = publish_req("v", &other, &ephemeral);
                r.target_path.clear();
                r
            },
            Code::InvalidArgument,
        ),
        (
            "no capability",
            {
                let mut r = publish_req("v", &other, &ephemeral);
                r.volume_capability = None;
                r
            },
            Code::InvalidArgument,
        ),
        (
            "bad reference",
            publish_req(
                "v",
                &other,
                &[
                    ("csi.storage.k8s.io/ephemeral", "true"),
                    ("reference", "Not//A Ref"),
                ],
            ),
            Code::InvalidArgument,
        ),
        (
            "persistent by tag",
            publish_req(&lazy_ref, &other, &[]),
            Code::InvalidArgument,
        ),
        (
            "missing model",
            publish_req(
                "v",
                &other,
                &[
                    ("csi.storage.k8s.io/ephemeral", "true"),
                    ("reference", &format!("{}/models/nope:v1", reg.host)),
                ],
            ),
            Code::NotFound,
        ),
    ];
    for (what, req, want) in cases {
        let st = code(rt.block_on(c.node.node_publish_volume(req)));
        assert_eq!(st.code(), want, "{what}: {st}");
    }
    // Pull secrets: the right one works, a wrong one is PermissionDenied.
    let secret = |password: &str| {
        let mut r = publish_req(
            "csi-secret",
            &other,
            &[
                ("csi.storage.k8s.io/ephemeral", "true"),
                ("reference", &secret_ref),
            ],
        );
        r.secrets = [("username", "kube"), ("password", password)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r
    };
    let st = code(rt.block_on(c.node.node_publish_volume(secret("wrong-password"))));
    assert_eq!(st.code(), Code::PermissionDenied, "{st}");
    assert!(
        !st.message().contains("wrong-password"),
        "the secret leaked: {st}"
    );
    rt.block_on(c.node.node_publish_volume(secret("right-password")))
        .unwrap_or_else(|e| panic!("publish with the pull secret: {e}"));
    assert_eq!(hashes(&other), source);
    rt.block_on(
        c.node
            .node_unpublish_volume(unpublish_req("csi-secret", &other)),
    )
    .unwrap();
    assert!(
        !daemon.log().contains("right-password"),
        "a secret reached the log"
    );
    // A registry that is down: Unavailable, so kubelet tries again.
    let down = format!("127.0.0.1:{}/models/x:v1", modelpack_e2e::free_port());
    let st = code(rt.block_on(c.node.node_publish_volume(publish_req(
        "v",
        &other,
        &[
            ("csi.storage.k8s.io/ephemeral", "true"),
            ("reference", &down),
        ],
    ))));
    assert_eq!(st.code(), Code::Unavailable, "{st}");
    assert!(!other.exists() || modelpack_e2e::files_under(&other).is_empty());

    // An eager model (no chunk index): fetched whole, then served.
    let p4 = pods.join("p4/mount");
    rt.block_on(c.node.node_publish_volume(publish_req(
        "csi-eager",
        &p4,
        &[
            ("csi.storage.k8s.io/ephemeral", "true"),
            ("reference", &eager_ref),
            ("include", "*.json,tokenizer/**"),
        ],
    )))
    .unwrap_or_else(|e| panic!("publish eager: {e}\n{}", daemon.log()));
    let shown = hashes(&p4);
    assert_eq!(shown.len(), 2, "include filters the files: {shown:?}");
    assert_eq!(shown["config.json"], source["config.json"]);
    rt.block_on(
        c.node
            .node_unpublish_volume(unpublish_req("csi-eager", &p4)),
    )
    .unwrap();
    // A sub-path of the model; one that is not a directory of it is refused.
    let p5 = pods.join("p5/mount");
    let sub_req = |path: &str| {
        publish_req(
            "csi-sub",
            &p5,
            &[
                ("csi.storage.k8s.io/ephemeral", "true"),
                ("reference", lazy_ref.as_str()),
                ("path", path),
            ],
        )
    };
    rt.block_on(c.node.node_publish_volume(sub_req("tokenizer")))
        .unwrap_or_else(|e| panic!("publish a sub-path: {e}\n{}", daemon.log()));
    let sub = hashes(&p5);
    assert_eq!(
        sub.keys().collect::<Vec<_>>(),
        ["tokenizer.json"],
        "{sub:?}"
    );
    assert_eq!(sub["tokenizer.json"], source["tokenizer/tokenizer.json"]);
    rt.block_on(c.node.node_unpublish_volume(unpublish_req("csi-sub", &p5)))
        .unwrap();
    let st = code(rt.block_on(c.node.node_publish_volume(sub_req("config.json"))));
    assert_eq!(st.code(), Code::InvalidArgument, "{st}");

    // A restart: the volumes stay readable, present chunks are not fetched again.
    daemon.kill();
    daemon.spawn();
    let mut c = rt.block_on(connect(&daemon.csi_sock()));
    assert_eq!(hashes(&p2), source, "pod 2's volume after a restart");
    assert_eq!(hashes(&p1), source, "pod 1's volume after a restart");

    // Unpublish both (and again: idempotent); the blobs go with the last.
    rt.block_on(c.node.node_unpublish_volume(unpublish_req("csi-pod1", &p1)))
        .unwrap();
    assert!(!p1.exists(), "the target directory is removed");
    assert_eq!(hashes(&p2), source, "pod 2 still reads after pod 1 left");
    rt.block_on(c.node.node_unpublish_volume(unpublish_req(&pinned, &p2)))
        .unwrap();
    rt.block_on(c.node.node_unpublish_volume(unpublish_req(&pinned, &p2)))
        .expect("a repeated unpublish succeeds");
    let st = rt
        .block_on(c.node.node_unpublish_volume(unpublish_req("", &p2)))
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    let st = rt
        .block_on(
            c.node
                .node_unpublish_volume(unpublish_req("v", Path::new(""))),
        )
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    assert!(
        !root.join("blobs/sha256").join(&weight_hex).exists()
            && !root
                .join("sparse")
                .join(format!("{weight_hex}.sparse"))
                .exists(),
        "GC kept the weights of a model no volume uses"
    );
    assert_eq!(
        std::fs::read_dir(root.join("csi/views")).unwrap().count(),
        0
    );
    eprintln!("first publish (lazy, {model_bytes} bytes of weights): {first_publish:?}");
}

/// Builds `integration/rawpath-client` (grpc-go 1.33 from Debian's sources, GOPATH mode).
fn rawpath_client(t: &Path) -> Option<PathBuf> {
    if Command::new("go").arg("version").output().is_err()
        || !Path::new("/usr/share/gocode/src/google.golang.org/grpc").exists()
    {
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration/rawpath-client/main.go");
    let pkg = t.join("gopath/src/modelpack/rawpath");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::copy(&src, pkg.join("main.go")).unwrap();
    let bin = t.join("rawpath-client");
    let target = Path::new(SNAPSHOTTER)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    ok(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(&pkg)
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env(
                "GOPATH",
                format!("{}:/usr/share/gocode", t.join("gopath").display()),
            )
            .env("GOCACHE", target.join("go-build-cache"))
            .output()
            .unwrap(),
        "go build rawpath-client",
    );
    Some(bin)
}

#[test]
fn a_client_sending_the_socket_path_as_authority_is_answered_on_both_sockets() {
    let _one = crate::one_node();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().to_path_buf();
    let Some(client) = rawpath_client(&t) else {
        eprintln!("skipping: needs go and Debian's grpc-go sources (integration/setup.sh)");
        return;
    };
    if !is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipping: the daemon's startup mounts, which needs root and /dev/fuse");
        return;
    }
    let daemon = Daemon::start(&t);
    let call = |sock: &Path, method: &str| {
        let out = Command::new(&client)
            .arg(sock)
            .arg(method)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let probe = call(&daemon.csi_sock(), "/csi.v1.Identity/Probe");
    assert!(probe.starts_with("OK"), "CSI socket: {probe}");
    // An empty Stat request is answered by the snapshotter itself (a bad key), not reset.
    let stat = call(
        &daemon.snap_sock(),
        "/containerd.services.snapshots.v1.Snapshots/Stat",
    );
    assert!(
        !stat.contains("PROTOCOL_ERROR")
            && !stat.starts_with("Unavailable")
            && !stat.starts_with("DialError"),
        "snapshots socket: {stat}"
    );
    assert!(
        stat.starts_with("NotFound") || stat.starts_with("InvalidArgument"),
        "snapshots socket: {stat}"
    );
}

#[test]
fn publish_refuses_models_the_node_signing_policy_does_not_accept() {
    let _one = crate::one_node();
    for t in ["docker-registry", "openssl"] {
        require_tool(t);
    }
    if !is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipping: the CSI node service mounts, which needs root and /dev/fuse");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().to_path_buf();
    let reg = Registry::start(&t.join("reg"), Auth::None);
    let (key, public) = modelpack_e2e::ec_keypair(&t, "release", "prime256v1", false);
    std::fs::write(
        t.join("node.toml"),
        format!("[signing]\n\"{}\" = [\"{}\"]\n", reg.host, public.display()),
    )
    .unwrap();
    let mp = |args: &[&str]| {
        ok(
            Command::new(cli())
                .env("MODELPACK_HOME", t.join("store"))
                .env("DOCKER_CONFIG", t.join("clidocker"))
                .args(args)
                .output()
                .unwrap(),
            &args.join(" "),
        )
    };
    let model = |name: &str| {
        let m = t.join(name);
        modelpack_common::modelfile::write_sample_model(&m, 1, 50_000).unwrap();
        std::fs::write(
            m.join("config.json"),
            format!(r#"{{"model_type":"{name}"}}"#),
        )
        .unwrap();
        let r = format!("{}/models/{name}:v1", reg.host);
        mp(&["build", "-q", "-t", &r, m.to_str().unwrap()]);
        r
    };
    let unsigned = model("unsigned");
    mp(&["push", "-q", &unsigned]);
    let signed = model("signed");
    mp(&["sign", &signed, "--key", key.to_str().unwrap()]);
    mp(&["push", "-q", &signed]);
    let daemon = Daemon::start(&t);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(connect(&daemon.csi_sock()));
    let target = t.join("pods/p/mount");
    let inline = |r: &str| {
        publish_req(
            "v",
            &target,
            &[("csi.storage.k8s.io/ephemeral", "true"), ("reference", r)],
        )
    };
    let st = rt
        .block_on(c.node.node_publish_volume(inline(&unsigned)))
        .unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition, "{st}");
    assert!(
        st.message().contains("signing policy") && st.message().contains("has no signature"),
        "{st}"
    );
    assert!(!target.exists() || modelpack_e2e::files_under(&target).is_empty());
    rt.block_on(c.node.node_publish_volume(inline(&signed)))
        .unwrap_or_else(|e| panic!("publish a signed model: {e}\n{}", daemon.log()));
    assert!(target.join("config.json").exists());
    rt.block_on(c.node.node_unpublish_volume(unpublish_req("v", &target)))
        .unwrap();
}
