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
//! both, and GC freeing every blob of the models. Along the way: prefetch off
//! (reading config fetches no weight) and on (complete with no read), eager
//! layers whole at publish and a left-out raw layer never fetched, the node's
//! credentials, NodeGetVolumeStats' sanity cases, a failed bind leaving no
//! view, a publish stuck on its registry holding up no other model, a
//! secret-published volume read in full after a restart and a republish, and
//! the restart seen inside a stand-in container (HostToContainer). The signing
//! test: a policy tightened across a restart, and a refused publish that
//! stores nothing. Also: a gRPC client that sends the
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

/// Allocated bytes of one file (0 when it is missing).
fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
}

fn blob(root: &Path, hex: &str) -> PathBuf {
    root.join("blobs/sha256").join(hex)
}

/// Names in the node store's blob directory.
fn blob_names(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("blobs/sha256"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// FUSE mounts of model views under `root` (from /proc/self/mounts).
fn view_mounts(root: &Path) -> usize {
    let prefix = root.join("csi/views").display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(1).is_some_and(|m| m.starts_with(&prefix)))
        .count()
}

fn is_mounted_at(p: &Path) -> bool {
    let p = p.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(p.as_str()))
}

/// `dir` bound on itself and made shared, as kubelet makes /var/lib/kubelet:
/// mounts under it then propagate to slave copies (containers' volume
/// mounts with `mountPropagation: HostToContainer`). Undone on drop.
struct SharedMount(PathBuf);

impl SharedMount {
    fn new(dir: &Path) -> SharedMount {
        for args in [&["--bind", "X", "X"][..], &["--make-shared", "X"][..]] {
            let args: Vec<String> = args
                .iter()
                .map(|a| {
                    if *a == "X" {
                        dir.display().to_string()
                    } else {
                        a.to_string()
                    }
                })
                .collect();
            ok(Command::new("mount").args(&args).output().unwrap(), "mount");
        }
        SharedMount(dir.to_path_buf())
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        // Usually already gone with the daemon's mounts.
        let _ = Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A stand-in for a running container: a process in its own mount
/// namespace (every mount a slave of the host's, as a container's with
/// `mountPropagation: HostToContainer`) that has the pod's volume bound at a
/// path of its own, as the runtime binds it into the container's rootfs.
struct Container {
    child: Child,
    volume: PathBuf,
}

impl Container {
    fn start(target: &Path, at: &Path) -> Container {
        std::fs::create_dir_all(at).unwrap();
        let ready = at.with_extension("ready");
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "slave", "sh", "-c"])
            .arg(format!(
                "mount --bind '{}' '{}' && touch '{}' && exec sleep 600",
                target.display(),
                at.display(),
                ready.display()
            ))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "the container did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Container {
            child,
            volume: at.to_path_buf(),
        }
    }

    /// sha256 of `file` of the volume, read inside the container.
    fn sha(&self, file: &str) -> Result<String, String> {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.child.id().to_string())
            .args(["-m", "sha256sum"])
            .arg(self.volume.join(file))
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stats_req(id: &str, path: &str) -> csi::NodeGetVolumeStatsRequest {
    csi::NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: path.into(),
        staging_target_path: String::new(),
    }
}

fn write_model(dir: &Path, tag: &str, weight_bytes: u32, seed: u32) -> HashMap<String, String> {
    std::fs::create_dir_all(dir.join("tokenizer")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"architectures":["{tag}"]}}"#),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer/tokenizer.json"),
        format!(r#"{{"v":"{tag}"}}"#),
    )
    .unwrap();
    let weights: Vec<u8> = (0..weight_bytes)
        .map(|i| ((i ^ seed).wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(dir.join("model.safetensors"), &weights).unwrap();
    hashes(dir)
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
    let _shared = SharedMount::new(&t);
    let reg = Registry::start(&t.join("reg"), Auth::None);
    let secure = Registry::start(
        &t.join("reg2"),
        Auth::Htpasswd {
            user: "kube".into(),
            password: "right-password".into(),
        },
    );
    // A registry only a pod's secret opens (the node has no login for it).
    let pod_only = Registry::start(
        &t.join("reg3"),
        Auth::Htpasswd {
            user: "pod".into(),
            password: "pod-password".into(),
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
    // The eager model shares no blob with the lazy one, so what the node
    // store holds of it is what its publish fetched.
    let eager_model = t.join("eager-model");
    let eager_source = write_model(&eager_model, "Eager", 3 << 20, 7);
    ok(
        mp().args([
            "build",
            "-q",
            "--no-chunk-index",
            "-t",
            &eager_ref,
            eager_model.to_str().unwrap(),
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
    // A second lazy model, for a volume that prefetches.
    let pre_model = t.join("pre-model");
    let pre_source = write_model(&pre_model, "Pre", 3 << 20, 11);
    let pre_ref = format!("{}/models/pre:v1", reg.host);
    ok(
        mp().args([
            "build",
            "-q",
            "--chunk-size",
            "1MiB",
            "-t",
            &pre_ref,
            pre_model.to_str().unwrap(),
        ])
        .output()
        .unwrap(),
        "build pre",
    );
    ok(
        mp().args(["push", "-q", &pre_ref]).output().unwrap(),
        "push pre",
    );
    let sec_model = t.join("sec-model");
    let sec_source = write_model(&sec_model, "Sec", 3 << 20, 13);
    let sec_ref = format!("{}/models/sec:v1", pod_only.host);
    ok(
        mp().args([
            "build",
            "-q",
            "--chunk-size",
            "1MiB",
            "-t",
            &sec_ref,
            sec_model.to_str().unwrap(),
        ])
        .output()
        .unwrap(),
        "build sec",
    );
    ok(
        mp().args(["push", "-q", "-u", "pod", "-p", "pod-password", &sec_ref])
            .output()
            .unwrap(),
        "push sec",
    );
    let source = hashes(&model);
    let model_bytes: u64 = weights.len() as u64;
    // The node's own credentials: a docker config with the authenticated
    // registry's login, for volumes without a pull secret.
    std::fs::create_dir_all(t.join("nodedocker")).unwrap();
    std::fs::write(
        t.join("nodedocker/config.json"),
        // base64 of kube:right-password
        format!(
            r#"{{"auths":{{"{}":{{"auth":"a3ViZTpyaWdodC1wYXNzd29yZA=="}}}}}}"#,
            secure.host
        ),
    )
    .unwrap();

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
    // A node-only plugin: no controller service, no topology constraints.
    let plugin_caps = rt
        .block_on(
            c.identity
                .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {}),
        )
        .unwrap()
        .into_inner();
    assert!(plugin_caps.capabilities.is_empty(), "{plugin_caps:?}");

    // Two pods: an inline ephemeral volume by tag, a persistent one by digest.
    let pods = t.join("pods");
    let p1 = pods.join("p1/volumes/kubernetes.io~csi/model/mount");
    let p2 = pods.join("p2/volumes/kubernetes.io~csi/model/mount");
    let pinned = format!("{}/models/tiny@{digest}", reg.host);
    // No prefetch for this view: what is fetched is what is read.
    let ephemeral = [
        ("csi.storage.k8s.io/ephemeral", "true"),
        ("reference", lazy_ref.as_str()),
        ("prefetch", "false"),
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
    // Published lazily: the weights are not on the node yet, and reading
    // the config fetches none of them.
    let root = t.join("root");
    let weight_hex = sha(&model.join("model.safetensors"));
    let weight_sparse = root.join("sparse").join(format!("{weight_hex}.sparse"));
    assert_eq!(
        sha(&p1.join("config.json")),
        source["config.json"],
        "pod 1's config"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !blob(&root, &weight_hex).exists(),
        "the weights were fetched before any read of them"
    );
    assert!(
        allocated(&weight_sparse) < 1 << 20,
        "a chunk of the weights was fetched by reading config.json only ({} bytes)",
        allocated(&weight_sparse)
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
    // csi-sanity's NodeGetVolumeStats cases.
    let p2s = p2.display().to_string();
    for (what, req, want) in [
        ("no volume id", stats_req("", &p2s), Code::InvalidArgument),
        (
            "no volume path",
            stats_req(&pinned, ""),
            Code::InvalidArgument,
        ),
        (
            "unknown volume",
            stats_req("csi-nope", &p2s),
            Code::NotFound,
        ),
        (
            "not published there",
            stats_req(&pinned, &pods.join("elsewhere").display().to_string()),
            Code::NotFound,
        ),
    ] {
        let st = rt
            .block_on(c.node.node_get_volume_stats(req))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(st.code(), want, "stats, {what}: {st}");
    }

    // A publish stuck on its registry (it accepts connections and never
    // answers) holds up neither a publish of another model nor an unpublish.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_ref = format!("{}/models/stuck:v1", stuck.local_addr().unwrap());
    let stuck_req = publish_req(
        "csi-stuck",
        &pods.join("stuck/mount"),
        &[
            ("csi.storage.k8s.io/ephemeral", "true"),
            ("reference", stuck_ref.as_str()),
        ],
    );
    let mut stuck_client = c.node.clone();
    let stuck_publish = rt.spawn(async move { stuck_client.node_publish_volume(stuck_req).await });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !stuck_publish.is_finished(),
        "the stuck publish ended early"
    );
    let pb = pods.join("pb/mount");
    rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(30),
            c.node.node_publish_volume(publish_req(
                "csi-beside",
                &pb,
                &[
                    ("csi.storage.k8s.io/ephemeral", "true"),
                    ("reference", eager_ref.as_str()),
                    ("include", "*.json"),
                ],
            )),
        )
        .await
    })
    .expect("a publish beside a stuck one timed out")
    .unwrap_or_else(|e| panic!("publish beside a stuck one: {e}\n{}", daemon.log()));
    assert_eq!(hashes(&pb)["config.json"], eager_source["config.json"]);
    rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(30),
            c.node
                .node_unpublish_volume(unpublish_req("csi-beside", &pb)),
        )
        .await
    })
    .expect("an unpublish beside a stuck publish timed out")
    .unwrap();
    assert!(
        !stuck_publish.is_finished(),
        "the stuck publish ended before the other model's publish and unpublish: they waited for it"
    );
    drop(stuck);
    let st = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), stuck_publish).await })
        .expect("the stuck publish did not end once its registry went")
        .unwrap()
        .map(|_| ())
        .unwrap_err();
    assert_eq!(st.code(), Code::Unavailable, "{st}");

    // A bind that fails (the target's parent is a file) leaves no view and
    // no mount behind.
    std::fs::write(pods.join("a-file"), b"").unwrap();
    let bad_target = pods.join("a-file/mount");
    let views_before = view_mounts(&root);
    let st = rt
        .block_on(c.node.node_publish_volume(publish_req(
            "csi-badtarget",
            &bad_target,
            &[
                ("csi.storage.k8s.io/ephemeral", "true"),
                ("reference", lazy_ref.as_str()),
                ("include", "*.json"),
            ],
        )))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(st.code(), Code::Internal, "{st}");
    assert_eq!(
        view_mounts(&root),
        views_before,
        "the view of a failed publish stays mounted"
    );
    assert_eq!(
        std::fs::read_dir(root.join("csi/views")).unwrap().count(),
        1,
        "the view directory of a failed publish stays"
    );

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
    // The model is on the node now; asking for it by digest with a wrong
    // secret still goes to its registry and is refused: a cached copy is no
    // way around the registry's access control.
    let by_digest_target = pods.join("p-digest/mount");
    let mut by_digest = secret("wrong-password");
    by_digest.target_path = by_digest_target.display().to_string();
    by_digest.volume_id = "csi-secret-digest".into();
    by_digest.volume_context.insert(
        "reference".into(),
        format!("{}/private/tiny@{digest}", secure.host),
    );
    let st = match rt.block_on(c.node.node_publish_volume(by_digest)) {
        Ok(_) => panic!(
            "a wrong secret was served the node's copy by digest\n{}",
            daemon.log()
        ),
        Err(st) => st,
    };
    assert_eq!(st.code(), Code::PermissionDenied, "{st}");
    assert!(
        !by_digest_target.exists() || modelpack_e2e::files_under(&by_digest_target).is_empty(),
        "a refused publish bound something"
    );
    rt.block_on(
        c.node
            .node_unpublish_volume(unpublish_req("csi-secret", &other)),
    )
    .unwrap();
    assert!(
        !daemon.log().contains("right-password"),
        "a secret reached the log"
    );
    // No pull secret: the node's own docker config logs in.
    let mut node_creds = secret("unused");
    node_creds.secrets.clear();
    node_creds.volume_id = "csi-nodecreds".into();
    rt.block_on(c.node.node_publish_volume(node_creds))
        .unwrap_or_else(|e| panic!("publish with the node's credentials: {e}\n{}", daemon.log()));
    assert_eq!(hashes(&other), source);
    rt.block_on(
        c.node
            .node_unpublish_volume(unpublish_req("csi-nodecreds", &other)),
    )
    .unwrap();
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

    // An eager model (no chunk index): fetched whole, verified, then served —
    // before any read; a raw layer the filter leaves out is never fetched.
    let eager_hex = |f: &str| sha(&eager_model.join(f));
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
    for f in ["config.json", "tokenizer/tokenizer.json"] {
        assert!(
            blob(&root, &eager_hex(f)).exists(),
            "{f} was not fetched whole at publish"
        );
    }
    let eager_weights = eager_hex("model.safetensors");
    let eager_weights_absent = || {
        !blob(&root, &eager_weights).exists()
            && !root
                .join("sparse")
                .join(format!("{eager_weights}.sparse"))
                .exists()
    };
    assert!(
        eager_weights_absent(),
        "the layer include leaves out was fetched"
    );
    let shown = hashes(&p4);
    assert_eq!(shown.len(), 2, "include filters the files: {shown:?}");
    assert_eq!(shown["config.json"], eager_source["config.json"]);
    assert!(eager_weights_absent(), "reading fetched the left-out layer");
    // Without a filter every layer is whole before a byte is read.
    let p6 = pods.join("p6/mount");
    rt.block_on(c.node.node_publish_volume(publish_req(
        "csi-eager-all",
        &p6,
        &[
            ("csi.storage.k8s.io/ephemeral", "true"),
            ("reference", &eager_ref),
        ],
    )))
    .unwrap_or_else(|e| panic!("publish eager: {e}\n{}", daemon.log()));
    assert_eq!(
        sha(&blob(&root, &eager_weights)),
        eager_weights,
        "the eager weights are not whole after publish"
    );
    assert_eq!(hashes(&p6), eager_source);
    for (id, p) in [("csi-eager", &p4), ("csi-eager-all", &p6)] {
        rt.block_on(c.node.node_unpublish_volume(unpublish_req(id, p)))
            .unwrap();
    }
    assert!(
        !blob(&root, &eager_weights).exists(),
        "GC kept the eager model's weights"
    );
    // A volume that prefetches: the model completes with no read at all.
    let p7 = pods.join("p7/mount");
    rt.block_on(c.node.node_publish_volume(publish_req(
        "csi-prefetch",
        &p7,
        &[
            ("csi.storage.k8s.io/ephemeral", "true"),
            ("reference", &pre_ref),
            ("prefetch", "true"),
        ],
    )))
    .unwrap_or_else(|e| panic!("publish with prefetch: {e}\n{}", daemon.log()));
    let pre_weights = sha(&pre_model.join("model.safetensors"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !blob(&root, &pre_weights).exists() {
        assert!(
            Instant::now() < deadline,
            "prefetch did not complete the weights in 60 s\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sha(&blob(&root, &pre_weights)), pre_weights);
    assert_eq!(hashes(&p7), pre_source);
    rt.block_on(
        c.node
            .node_unpublish_volume(unpublish_req("csi-prefetch", &p7)),
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

    // A restart: the volumes stay readable, present chunks are not fetched
    // again — also inside a running container that holds a copy of pod 1's
    // mount (HostToContainer): the new view is bound on top of the dead one.
    // A lazy volume from the pod-only registry, published with its secret;
    // only its config is read before the restart.
    let p8 = pods.join("p8/mount");
    let sec_req = || {
        let mut r = publish_req(
            "csi-sec",
            &p8,
            &[
                ("csi.storage.k8s.io/ephemeral", "true"),
                ("reference", &sec_ref),
                ("prefetch", "false"),
            ],
        );
        r.secrets = [("username", "pod"), ("password", "pod-password")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r
    };
    rt.block_on(c.node.node_publish_volume(sec_req()))
        .unwrap_or_else(|e| panic!("publish with a secret: {e}\n{}", daemon.log()));
    assert_eq!(sha(&p8.join("config.json")), sec_source["config.json"]);
    let container = Container::start(&p1, &t.join("ctr/models"));
    assert_eq!(
        container.sha("config.json").as_deref(),
        Ok(source["config.json"].as_str())
    );
    daemon.kill();
    daemon.spawn();
    let mut c = rt.block_on(connect(&daemon.csi_sock()));
    if let Err(e) = std::fs::read_dir(&p2) {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let t_s = t.display().to_string();
        let mine: Vec<&str> = info.lines().filter(|l| l.contains(&t_s)).collect();
        panic!(
            "pod 2's volume is not served again: {e}\n{}",
            mine.join("\n")
        );
    }
    assert_eq!(hashes(&p2), source, "pod 2's volume after a restart");
    assert_eq!(hashes(&p1), source, "pod 1's volume after a restart");
    for (f, want) in &source {
        assert_eq!(
            container.sha(f).as_ref(),
            Ok(want),
            "{f} in the running container after a restart\n{}",
            daemon.log()
        );
    }
    drop(container);
    // The secret is not kept across the restart; kubelet's republish
    // (requiresRepublish) brings it back, and the rest is fetched with it.
    rt.block_on(c.node.node_publish_volume(sec_req()))
        .unwrap_or_else(|e| panic!("republish with the secret: {e}\n{}", daemon.log()));
    assert_eq!(
        hashes(&p8),
        sec_source,
        "the secret-published volume after a restart"
    );
    assert!(
        !daemon.log().contains("pod-password")
            && !std::fs::read_to_string(root.join("csi/volumes.json"))
                .unwrap()
                .contains("pod-password"),
        "a secret was written to the log or the state"
    );
    rt.block_on(c.node.node_unpublish_volume(unpublish_req("csi-sec", &p8)))
        .unwrap();

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
    // Nothing of any model stays: manifests, configs, chunk indexes and
    // their referrers, layers, partial blobs, index entries.
    assert_eq!(
        blob_names(&root),
        Vec::<String>::new(),
        "GC kept blobs of models no volume uses"
    );
    assert!(
        std::fs::read_dir(root.join("sparse"))
            .map(|rd| rd.count() == 0)
            .unwrap_or(true),
        "GC kept partial blobs"
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "the node store still records models: {index}"
    );
    assert_eq!(
        std::fs::read_dir(root.join("csi/views")).unwrap().count(),
        0
    );
    assert_eq!(view_mounts(&root), 0, "a view stays mounted");
    // And nothing fetches them again behind our back.
    assert!(std::fs::read(p2.join("model.safetensors")).is_err());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(blob_names(&root), Vec::<String>::new(), "blobs came back");
    // Unpublishing a path we never published: success when nothing is
    // mounted there, and a mount that is not ours is left alone.
    let foreign = pods.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    rt.block_on(
        c.node
            .node_unpublish_volume(unpublish_req("csi-foreign", &foreign)),
    )
    .expect("unpublish of an unknown target");
    ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "foreign"])
            .arg(&foreign)
            .output()
            .unwrap(),
        "mount tmpfs",
    );
    let st = rt
        .block_on(
            c.node
                .node_unpublish_volume(unpublish_req("csi-foreign", &foreign)),
        )
        .unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition, "{st}");
    assert!(is_mounted_at(&foreign), "a mount not ours was unmounted");
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
    let policy = format!("[signing]\n\"{}\" = [\"{}\"]\n", reg.host, public.display());
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
    let early = model("early");
    mp(&["push", "-q", &early]);
    let signed = model("signed");
    mp(&["sign", &signed, "--key", key.to_str().unwrap()]);
    mp(&["push", "-q", &signed]);
    let target = t.join("pods/p/mount");
    let inline = |id: &str, target: &Path, r: &str| {
        publish_req(
            id,
            target,
            &[("csi.storage.k8s.io/ephemeral", "true"), ("reference", r)],
        )
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Published while the node had no policy; the policy then comes with a
    // restart: the unsigned model is not served again.
    let mut daemon = Daemon::start(&t);
    let mut c = rt.block_on(connect(&daemon.csi_sock()));
    let before = t.join("pods/before/mount");
    rt.block_on(c.node.node_publish_volume(inline("v0", &before, &early)))
        .unwrap_or_else(|e| panic!("publish without a policy: {e}\n{}", daemon.log()));
    assert!(before.join("config.json").exists());
    daemon.kill();
    std::fs::write(t.join("node.toml"), &policy).unwrap();
    daemon.spawn();
    let mut c = rt.block_on(connect(&daemon.csi_sock()));
    let log = daemon.log();
    assert!(
        log.contains("not served again after the restart") && log.contains("signing policy"),
        "{log}"
    );
    assert!(
        std::fs::read(before.join("config.json")).is_err(),
        "a model the tightened policy refuses is still served"
    );
    // A refused publish stores nothing: not its manifest, config or chunk
    // index, not a record of the model.
    let root = t.join("root");
    let store_state = || {
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
        (
            blob_names(&root),
            read("index.json"),
            read("lazy-refs.json"),
        )
    };
    let stored = store_state();
    let st = rt
        .block_on(c.node.node_publish_volume(inline("v", &target, &unsigned)))
        .unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition, "{st}");
    assert!(
        st.message().contains("signing policy") && st.message().contains("has no signature"),
        "{st}"
    );
    assert!(!target.exists() || modelpack_e2e::files_under(&target).is_empty());
    assert_eq!(
        store_state(),
        stored,
        "a refused publish changed the node store"
    );
    rt.block_on(c.node.node_publish_volume(inline("v", &target, &signed)))
        .unwrap_or_else(|e| panic!("publish a signed model: {e}\n{}", daemon.log()));
    assert!(target.join("config.json").exists());
    for (id, t) in [("v", &target), ("v0", &before)] {
        rt.block_on(c.node.node_unpublish_volume(unpublish_req(id, t)))
            .unwrap_or_else(|e| panic!("unpublish {id}: {e}"));
    }
    assert!(!before.exists(), "the refused volume's target stays");
}
