//! The snapshotter with real containerd 1.6 + runc, loopback only: an ordinary
//! busybox image pulled and run with `--snapshotter modelpack`; a model pushed to
//! a local registry, `pull --containerd`, `mount`, and `ctr run` with the bind
//! mount checking every file's sha256 inside the container; node-level dedup
//! measured from the store; SIGKILL of the snapshotter and a containerd restart;
//! a registry serving wrong bytes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use modelpack_e2e::services::{Auth, Fault, FaultProxy, Registry};
use modelpack_e2e::{fails, ok, require_tool};

const SNAPSHOTTER: &str = env!("CARGO_BIN_EXE_modelpack-snapshotter");

fn cli() -> PathBuf {
    let p = Path::new(SNAPSHOTTER).with_file_name("docker-modelpack");
    assert!(
        p.exists(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        p.display()
    );
    p
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

struct Node {
    t: PathBuf,
    snap: Option<Proc>,
    ctrd: Option<Proc>,
    ns: String,
}

impl Node {
    fn sock(&self) -> PathBuf {
        self.t.join("ctrd/containerd.sock")
    }
    fn snap_sock(&self) -> PathBuf {
        self.t.join("snap.sock")
    }
    fn start_snapshotter(&mut self) {
        let _ = std::fs::remove_file(self.snap_sock());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.t.join("snap.log"))
            .unwrap();
        let mut cmd = Command::new(SNAPSHOTTER);
        cmd.arg("--root")
            .arg(self.t.join("snaproot"))
            .arg("--address")
            .arg(self.snap_sock());
        // A test that wants a node config writes it first.
        let config = self.t.join("snapshotter.toml");
        if config.exists() {
            cmd.arg("--config").arg(config);
        }
        let child = cmd.stderr(log).spawn().unwrap();
        self.snap = Some(Proc(child));
        wait_for(&self.snap_sock());
    }
    fn start_containerd(&mut self) {
        let d = self.t.join("ctrd");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{d}/containerd.sock\"\n[ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n[proxy_plugins.modelpack]\n  type = \"snapshot\"\n  address = \"{s}\"\n",
                d = d.display(),
                s = self.snap_sock().display()
            ),
        )
        .unwrap();
        let _ = std::fs::remove_file(self.sock());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("log"))
            .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.ctrd = Some(Proc(child));
        wait_for(&self.sock());
        std::thread::sleep(Duration::from_millis(200));
    }
    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(self.sock()).arg("-n").arg(&self.ns);
        c
    }
    fn mp(&self) -> Command {
        let mut c = Command::new(cli());
        c.env("MODELPACK_HOME", self.t.join("store"))
            .env("DOCKER_CONFIG", self.t.join("docker"));
        c
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for m in ["mnt", "mnt2"] {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.t.join(m))
                .status();
        }
        self.ctrd = None;
        self.snap = None;
        // Leave no mounts of the snapshotter behind before the temp dir goes.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "awk '{{print $2}}' /proc/mounts | grep '^{}' | sort -r | xargs -r -n1 umount -l",
                self.t.display()
            ))
            .status();
        let _ = std::fs::remove_dir("/run/containerd");
    }
}

fn busybox_image(t: &Path, registry: &str) {
    let script = format!(
        r#"set -e
T={t}
R=$T/img/rootfs; O=$T/img/bb
mkdir -p $R/bin $R/etc $R/tmp $R/proc $R/sys $R/dev $R/root $R/models $O/blobs/sha256
cp /bin/busybox $R/bin/busybox
for a in sh echo cat ls id sha256sum find sort xargs head dd; do ln -sf busybox $R/bin/$a; done
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C $R -cf $T/img/layer.tar .
DIFF=sha256:$(sha256sum $T/img/layer.tar | cut -d' ' -f1)
gzip -n -c $T/img/layer.tar > $T/img/layer.tar.gz
put() {{ d=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" $O/blobs/sha256/$d; echo "sha256:$d $(stat -c %s "$1")"; }}
read LD LS < <(put $T/img/layer.tar.gz)
printf '{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["%s"]}}}}' "$DIFF" > $T/img/config.json
read CD CS < <(put $T/img/config.json)
printf '{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}}]}}' "$CD" "$CS" "$LD" "$LS" > $T/img/manifest.json
read MD MS < <(put $T/img/manifest.json)
echo '{{"imageLayoutVersion":"1.0.0"}}' > $O/oci-layout
printf '{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}' "$MD" "$MS" > $O/index.json
skopeo copy -q --dest-tls-verify=false oci:$O:latest docker://{registry}/busybox:latest
"#,
        t = t.display()
    );
    ok(
        Command::new("bash").arg("-c").arg(script).output().unwrap(),
        "busybox image",
    );
}

/// Pushes the busybox test image to `registry` and pulls it into the node
/// through our snapshotter; returns its reference.
fn pulled_busybox(node: &Node, registry: &str) -> String {
    busybox_image(&node.t, registry);
    let image = format!("{registry}/busybox:latest");
    ok(
        node.ctr()
            .args([
                "image",
                "pull",
                "--plain-http",
                "--snapshotter",
                "modelpack",
                &image,
            ])
            .output()
            .unwrap(),
        "ctr image pull",
    );
    image
}

fn du(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn sha256_of(p: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn containerd_runs_images_and_models_through_the_modelpack_snapshotter() {
    let _one = crate::one_node();
    for t in ["containerd", "ctr", "runc", "skopeo", "docker-registry"] {
        require_tool(t);
    }
    assert!(nix_is_root(), "containerd tests run as root (CI does)");
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().to_path_buf();
    let reg = Registry::start(&t.join("reg"), Auth::None);
    let mut node = Node {
        t: t.clone(),
        snap: None,
        ctrd: None,
        ns: format!("mptest{}", std::process::id()),
    };
    node.start_snapshotter();
    node.start_containerd();
    let plugins = ok(
        node.ctr().args(["plugins", "ls"]).output().unwrap(),
        "ctr plugins ls",
    );
    assert!(
        plugins
            .lines()
            .any(|l| l.contains("modelpack") && l.contains("ok")),
        "{plugins}"
    );

    // An ordinary image: pull and run through our snapshotter.
    let image = pulled_busybox(&node, &reg.host);
    let out = ok(
        node.ctr()
            .args([
                "run",
                "--rm",
                "--snapshotter",
                "modelpack",
                &image,
                &format!("hello-{}", node.ns),
                "/bin/echo",
                "hello from modelpack",
            ])
            .output()
            .unwrap(),
        "ctr run",
    );
    assert!(out.contains("hello from modelpack"), "{out}");

    // Two models sharing 3 of 4 weight files.
    let m1 = t.join("m1");
    modelpack_common::modelfile::write_sample_model(&m1, 4, 2 << 20).unwrap();
    let m2 = t.join("m2");
    modelpack_e2e::copy_tree(&m1, &m2);
    std::fs::write(
        m2.join("model-00004-of-00004.safetensors"),
        vec![42u8; 3 << 20],
    )
    .unwrap();
    let r1 = format!("{}/models/m:v1", reg.host);
    let r2 = format!("{}/models/m:v2", reg.host);
    for (m, r) in [(&m1, &r1), (&m2, &r2)] {
        ok(
            node.mp()
                // No chunk index: this test is about the eager path (the lazy one has its own).
                .args([
                    "build",
                    "-q",
                    "--no-chunk-index",
                    "-t",
                    r,
                    m.to_str().unwrap(),
                ])
                .output()
                .unwrap(),
            "build",
        );
        ok(node.mp().args(["push", "-q", r]).output().unwrap(), "push");
    }
    ok(pull_containerd(&node, &r1), "pull --containerd m1");
    let images = ok(
        node.ctr().args(["images", "ls", "-q"]).output().unwrap(),
        "ctr images ls",
    );
    assert!(images.contains(&r1), "{images}");
    let blobs = t.join("snaproot/blobs/sha256");
    let before = du(&blobs);
    ok(pull_containerd(&node, &r2), "pull --containerd m2");
    let added = du(&blobs) - before;
    let new_file = std::fs::metadata(m2.join("model-00004-of-00004.safetensors"))
        .unwrap()
        .len();
    assert!(
        added >= new_file && added < new_file + (64 << 10),
        "second model added {added} bytes; its only new file has {new_file}"
    );

    // Mount and read every file inside a container.
    let mnt = t.join("mnt");
    let sock = node.sock();
    ok(
        node.mp()
            .args([
                "mount",
                "--containerd",
                "--address",
                sock.to_str().unwrap(),
                "--namespace",
                &node.ns,
                &r1,
                mnt.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "mount",
    );
    check_model(&node, &mnt, &image, &m1, "model-a");

    // SIGKILL the snapshotter (Child::kill) and restart it: snapshots and mounts are still served.
    node.snap = None;
    node.start_snapshotter();
    std::thread::sleep(Duration::from_millis(1500));
    check_model(&node, &mnt, &image, &m1, "model-b");
    // Restart containerd: the same.
    node.ctrd = None;
    node.start_containerd();
    check_model(&node, &mnt, &image, &m1, "model-c");
    ok(
        node.mp()
            .args(["umount", mnt.to_str().unwrap()])
            .output()
            .unwrap(),
        "umount",
    );
    assert!(
        std::fs::read_dir(&mnt).unwrap().next().is_none(),
        "unmounted"
    );

    // A registry path serving wrong bytes: Prepare fails clearly, nothing committed.
    let m3 = t.join("m3");
    std::fs::create_dir_all(&m3).unwrap();
    std::fs::write(m3.join("unique.safetensors"), vec![7u8; 1 << 20]).unwrap();
    let direct = format!("{}/models/bad:v1", reg.host);
    ok(
        node.mp()
            .args([
                "build",
                "-q",
                "--no-chunk-index",
                "-t",
                &direct,
                m3.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "build m3",
    );
    ok(
        node.mp().args(["push", "-q", &direct]).output().unwrap(),
        "push m3",
    );
    let bad = FaultProxy::start(reg.port, Fault::CorruptDownloadsOver(64 << 10));
    let via_bad = format!("127.0.0.1:{}/models/bad:v1", bad.port);
    let err = fails(
        pull_containerd(&node, &via_bad),
        "pull --containerd through a corrupting proxy",
    );
    assert!(err.contains("digest mismatch"), "{err}");
    let images = ok(
        node.ctr().args(["images", "ls", "-q"]).output().unwrap(),
        "images",
    );
    assert!(
        !images.contains("bad:v1"),
        "no image record for the failed pull: {images}"
    );
    let blob_files = std::fs::read_dir(&blobs).unwrap().count();
    assert_eq!(
        std::fs::read_dir(t.join("snaproot/tmp")).unwrap().count(),
        0,
        "no partial left"
    );
    let _ = blob_files;
}

/// Runs `script` in a busybox container with the model bind-mounted at /models.
fn in_container(
    node: &Node,
    mnt: &Path,
    image: &str,
    name: &str,
    script: &str,
) -> std::process::Output {
    node.ctr()
        .args([
            "run",
            "--rm",
            "--snapshotter",
            "modelpack",
            "--mount",
            &format!(
                "type=bind,src={},dst=/models,options=rbind:ro",
                mnt.display()
            ),
            image,
            &format!("{name}-{}", node.ns),
            "/bin/sh",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

#[test]
fn containerd_attaches_an_indexed_model_lazily_and_verifies_every_chunk() {
    let _one = crate::one_node();
    for t in ["containerd", "ctr", "runc", "skopeo", "docker-registry"] {
        require_tool(t);
    }
    if !nix_is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipping: lazy attach needs root and /dev/fuse");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().to_path_buf();
    let reg_dir = t.join("reg");
    let mut reg = Some(Registry::start(&reg_dir, Auth::None));
    let port = reg.as_ref().unwrap().port;
    let host = reg.as_ref().unwrap().host.clone();
    let mut node = Node {
        t: t.clone(),
        snap: None,
        ctrd: None,
        ns: format!("mplazy{}", std::process::id()),
    };
    node.start_snapshotter();
    node.start_containerd();
    let image = pulled_busybox(&node, &host);

    // A model with a bound index (build's default), 1 MiB chunks.
    let m = t.join("m");
    std::fs::create_dir_all(m.join("tok")).unwrap();
    std::fs::write(m.join("config.json"), br#"{"architectures":["X"]}"#).unwrap();
    std::fs::write(m.join("tok/tokenizer.json"), br#"{"v":1}"#).unwrap();
    let weights: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(m.join("model.safetensors"), &weights).unwrap();
    let r = format!("{host}/models/lazy:v1");
    ok(
        node.mp()
            .args([
                "build",
                "-q",
                "--chunk-size",
                "1MiB",
                "-t",
                &r,
                m.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "build",
    );
    ok(node.mp().args(["push", "-q", &r]).output().unwrap(), "push");
    let weight_hex = sha256_of(&m.join("model.safetensors"));

    // pull --containerd commits every layer without fetching a weight byte.
    ok(pull_containerd(&node, &r), "pull --containerd (lazy)");
    let blobs = t.join("snaproot/blobs/sha256");
    assert!(
        !blobs.join(&weight_hex).exists(),
        "the weights were fetched at Prepare"
    );

    // A chunk corrupted in the registry's storage before anything read it.
    let stored = reg
        .as_ref()
        .unwrap()
        .blob_path(&format!("sha256:{weight_hex}"));
    let good = std::fs::read(&stored).unwrap();
    let mut bad = good.clone();
    bad[(5 << 20) + 7] ^= 0x55;
    std::fs::write(&stored, &bad).unwrap();

    let mnt = t.join("mnt");
    let sock = node.sock();
    let mount = |node: &Node| {
        let run = || {
            node.mp()
                .args([
                    "mount",
                    "--containerd",
                    "--address",
                    sock.to_str().unwrap(),
                    "--namespace",
                    &node.ns,
                    &r,
                    mnt.to_str().unwrap(),
                ])
                .output()
                .unwrap()
        };
        let mut out = run();
        // containerd's connection to a restarted proxy snapshotter comes back
        // after gRPC's reconnect backoff; until then calls are "unavailable".
        for _ in 0..20 {
            if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("unavailable")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            out = run();
        }
        let log = std::fs::read_to_string(node.t.join("snap.log")).unwrap_or_default();
        ok(
            out,
            &format!("mount --containerd (snapshotter log:\n{log})"),
        )
    };
    mount(&node);
    let dd = |skip: u32| {
        format!("dd if=/models/model.safetensors of=/dev/null bs=1048576 skip={skip} count=1")
    };
    let out = in_container(&node, &mnt, &image, "bad", &dd(5));
    assert!(!out.status.success(), "the corrupt chunk was served");
    let out = in_container(&node, &mnt, &image, "good", &dd(3));
    assert!(
        out.status.success(),
        "chunk 3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&stored, &good).unwrap();
    let out = in_container(&node, &mnt, &image, "fixed", &dd(5));
    assert!(
        out.status.success(),
        "a refused chunk is fetched again once the registry serves good bytes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_model(&node, &mnt, &image, &m, "lazy-all");
    let log = std::fs::read_to_string(t.join("snap.log")).unwrap();
    assert!(log.contains("committed lazily"), "{log}");
    assert!(log.contains("lazy view mounted"), "{log}");
    // `stats` shows what the running snapshotter published (every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ok(
            Command::new(SNAPSHOTTER)
                .args(["--root", t.join("snaproot").to_str().unwrap(), "stats"])
                .output()
                .unwrap(),
            "stats",
        );
        let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
        let counted = stats["views"].as_array().unwrap().iter().any(|v| {
            // Reads of complete files go through FUSE passthrough and are not
            // counted here; the refused read and the prefetch's progress are.
            v["readErrors"].as_u64() >= Some(1)
                && v["chunksRefused"].as_u64() >= Some(1)
                && v["fetches"].as_u64() >= Some(1)
                && v["bytesFetched"].as_u64() >= Some(12 << 20)
                && v["fetchP50Ms"].is_u64()
                && v["presentChunks"] == v["chunks"]
                && v["completeBlobs"] == v["lazyBlobs"]
        });
        if counted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stats count the refused read and every chunk present: {stats}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGKILL the snapshotter with the registry gone: after the restart the
    // view is served again from what is on the node, nothing refetched.
    drop(reg.take());
    node.snap = None;
    node.start_snapshotter();
    ok(
        Command::new("umount").arg("-l").arg(&mnt).output().unwrap(),
        "umount the dead bind",
    );
    mount(&node);
    check_model(&node, &mnt, &image, &m, "lazy-restarted");
    let _ = port;
}

fn pull_containerd(node: &Node, r: &str) -> std::process::Output {
    let sock = node.sock();
    node.mp()
        .args([
            "pull",
            "--containerd",
            "--address",
            sock.to_str().unwrap(),
            "--namespace",
            &node.ns,
            r,
        ])
        .output()
        .unwrap()
}

fn check_model(node: &Node, mnt: &Path, image: &str, src: &Path, name: &str) {
    let out = ok(
        in_container(
            node,
            mnt,
            image,
            name,
            "cd /models && find . -type f | sort | xargs sha256sum",
        ),
        "ctr run with the model",
    );
    let mut n = 0;
    for line in out.lines() {
        let (sum, path) = line.split_once("  ").unwrap();
        assert_eq!(
            sum,
            sha256_of(&src.join(path.trim_start_matches("./"))),
            "{path}"
        );
        n += 1;
    }
    assert_eq!(n, modelpack_e2e::files_under(src).len(), "{out}");
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn containerd_attaches_only_models_the_node_signing_policy_accepts() {
    let _one = crate::one_node();
    for t in ["containerd", "ctr", "runc", "docker-registry", "openssl"] {
        require_tool(t);
    }
    if !nix_is_root() {
        eprintln!("skipping: containerd needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().to_path_buf();
    let reg = Registry::start(&t.join("reg"), Auth::None);
    let key = |name: &str| modelpack_e2e::ec_keypair(&t, name, "prime256v1", false);
    let (release, release_pub) = key("release");
    let (other, _) = key("other");
    std::fs::write(
        t.join("snapshotter.toml"),
        format!(
            "[registry]\nplain_http = true\n[signing]\n\"{}\" = [\"{}\"]\n",
            reg.host,
            release_pub.display()
        ),
    )
    .unwrap();
    let mut node = Node {
        t: t.clone(),
        snap: None,
        ctrd: None,
        ns: format!("mpsign{}", std::process::id()),
    };
    node.start_snapshotter();
    node.start_containerd();
    let model = |name: &str| {
        let m = t.join(name);
        modelpack_common::modelfile::write_sample_model(&m, 1, 100_000).unwrap();
        std::fs::write(
            m.join("config.json"),
            format!(r#"{{"model_type":"{name}"}}"#),
        )
        .unwrap();
        let r = format!("{}/models/{name}:v1", reg.host);
        ok(
            node.mp()
                .args(["build", "-q", "-t", &r, m.to_str().unwrap()])
                .output()
                .unwrap(),
            "build",
        );
        r
    };
    // Unsigned: refused at Prepare, nothing committed.
    let unsigned = model("unsigned");
    ok(
        node.mp().args(["push", "-q", &unsigned]).output().unwrap(),
        "push",
    );
    let out = pull_containerd(&node, &unsigned);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "an unsigned model was attached");
    assert!(
        err.contains("signing policy") && err.contains("has no signature"),
        "{err}"
    );
    // Signed with another key: refused, saying so.
    let stranger = model("stranger");
    ok(
        node.mp()
            .args(["sign", &stranger, "--key", other.to_str().unwrap()])
            .output()
            .unwrap(),
        "sign (other key)",
    );
    ok(
        node.mp().args(["push", "-q", &stranger]).output().unwrap(),
        "push",
    );
    let out = pull_containerd(&node, &stranger);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("does not verify"),
        "{err}"
    );
    // Signed with the release key (pushed, not attached yet).
    let signed = model("signed");
    let sig = t.join("signed.sig");
    ok(
        node.mp()
            .args([
                "sign",
                &signed,
                "--key",
                release.to_str().unwrap(),
                "--output",
                sig.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "sign",
    );
    ok(
        node.mp().args(["push", "-q", &signed]).output().unwrap(),
        "push",
    );
    let attach_and_push = |r: &str, bundle: &Path| {
        ok(
            node.mp()
                .args(["sign", r, "--attach", bundle.to_str().unwrap()])
                .output()
                .unwrap(),
            "sign --attach",
        );
        ok(node.mp().args(["push", "-q", r]).output().unwrap(), "push");
    };
    // A tampered bundle: the statement changed under the release key's signature.
    let tampered_sig = t.join("tampered.sig");
    std::fs::write(
        &tampered_sig,
        modelpack_e2e::tampered_bundle(&std::fs::read(&sig).unwrap()),
    )
    .unwrap();
    let tampered = model("tampered");
    attach_and_push(&tampered, &tampered_sig);
    let out = pull_containerd(&node, &tampered);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("signing policy") && err.contains("does not verify"),
        "{err}"
    );
    // Another model's (valid, release-key) signature attached to this one.
    let borrowed = model("borrowed");
    attach_and_push(&borrowed, &sig);
    let out = pull_containerd(&node, &borrowed);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success()
            && err.contains("signing policy")
            && err.contains("does not match the model")
            && err.contains("config.json"),
        "{err}"
    );
    // Nothing of the refused models was committed or fetched onto the node:
    // no snapshot at all (this namespace has no image), and none of their
    // files' blobs (a raw layer's digest is its file's sha256) in the node store.
    let snaps = ok(
        node.ctr()
            .args(["snapshots", "--snapshotter", "modelpack", "ls"])
            .output()
            .unwrap(),
        "ctr snapshots ls",
    );
    assert_eq!(snaps.lines().skip(1).count(), 0, "committed: {snaps}");
    let blobs = t.join("snaproot/blobs/sha256");
    for name in ["unsigned", "stranger", "tampered", "borrowed"] {
        for f in modelpack_e2e::files_under(&t.join(name)) {
            let hex = sha256_of(&t.join(name).join(&f));
            assert!(
                !blobs.join(&hex).exists(),
                "{name}/{}: its blob is in the node store",
                f.display()
            );
        }
    }
    // Signed with the release key: attached (checked by the CLI's
    // --verify-key before containerd is asked, then by the node's policy).
    let sock = node.sock();
    ok(
        node.mp()
            .args([
                "pull",
                "--containerd",
                "--address",
                sock.to_str().unwrap(),
                "--namespace",
                &node.ns,
                "--verify-key",
                release_pub.to_str().unwrap(),
                &signed,
            ])
            .output()
            .unwrap(),
        "pull --containerd --verify-key of a signed model",
    );
    // And served: one file read through a mount of the attached model
    // (lazily, where the node has /dev/fuse).
    let mnt = t.join("mnt");
    ok(
        node.mp()
            .args([
                "mount",
                "--containerd",
                "--address",
                sock.to_str().unwrap(),
                "--namespace",
                &node.ns,
                &signed,
                mnt.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "mount --containerd of the signed model",
    );
    assert_eq!(
        std::fs::read(mnt.join("config.json")).unwrap(),
        std::fs::read(t.join("signed/config.json")).unwrap()
    );
}
