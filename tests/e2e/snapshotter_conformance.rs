//! containerd 1.6's own snapshotter conformance suite
//! (`github.com/containerd/containerd/snapshots/testsuite`) against
//! modelpack-snapshotter, through the same proxy client and gRPC dial that
//! containerd's `proxy_plugins` use. The Go side is
//! `integration/conformance/conformance_test.go`, built here offline in GOPATH
//! mode from Debian's `golang-go` and `golang-github-containerd-containerd-dev`
//! (installed by integration/setup.sh); it starts one snapshotter per case on
//! the fresh root the suite hands it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use modelpack_e2e::require_tool;
use modelpack_e2e::services::{Auth, Registry};

const SNAPSHOTTER: &str = env!("CARGO_BIN_EXE_modelpack-snapshotter");
/// Where Debian's golang-*-dev packages put their sources (a GOPATH).
const DEBIAN_GOPATH: &str = "/usr/share/gocode";
/// Cases of containerd 1.6.20's SnapshotterSuite that run (21, of which `Rename`
/// is skipped upstream by an unconditional `t.Skip`).
const MIN_PASSED: usize = 20;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Unmounts anything left under the scratch dir (a failing case may leave a
/// mount behind) before the temp dir is removed.
struct Scratch(tempfile::TempDir);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "awk '{{print $2}}' /proc/mounts | grep '^{}/' | sort -r | xargs -r -n1 umount -l",
                self.0.path().display()
            ))
            .status();
    }
}

/// `target/` of this build (the snapshotter binary is `target/<profile>/…`).
/// Builds and pushes a small model with a bound chunk index to a registry
/// that lives as long as the returned guard, and describes the Prepares
/// `pull --containerd` would send for it (as JSON for the Go harness).
fn lazy_model_seed(t: &Path) -> (serde_json::Value, Registry) {
    use modelpack_common::config::ModelConfig;
    use modelpack_common::manifest::Manifest;
    use modelpack_common::view::ModelView;
    let reg = Registry::start(&t.join("registry"), Auth::None);
    let cli = Path::new(SNAPSHOTTER).with_file_name("docker-modelpack");
    let model = t.join("model");
    modelpack_common::modelfile::write_sample_model(&model, 2, 3 << 20).unwrap();
    let r = format!("{}/models/seed:v1", reg.host);
    let mp = |args: &[&str]| {
        let out = Command::new(&cli)
            .env("MODELPACK_HOME", t.join("store"))
            .env("DOCKER_CONFIG", t.join("docker"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let built: serde_json::Value = serde_json::from_slice(&mp(&[
        "--json",
        "build",
        "--chunk-size",
        "1MiB",
        "-t",
        &r,
        model.to_str().unwrap(),
    ]))
    .unwrap();
    mp(&["push", "--plain-http", &r]);
    let manifest = Manifest::parse(&mp(&["inspect", "--manifest", &r]), "manifest").unwrap();
    let config = ModelConfig::parse(&mp(&["inspect", "--config", &r]), "config").unwrap();
    let digest = built["digest"].as_str().unwrap().parse().unwrap();
    let view = ModelView::new(r.parse().unwrap(), digest, &manifest, &config).unwrap();
    let prepares: Vec<serde_json::Value> = (0..view.layers.len())
        .map(
            |i| serde_json::json!({"parent": view.parent(i), "labels": view.labels(i).to_labels()}),
        )
        .collect();
    let file = view.files().next().expect("a raw layer").path.clone();
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(model.join(&file)).unwrap(),
        ))
    };
    (
        serde_json::json!({
            "prepares": prepares,
            "top": view.top_chain_id().to_string(),
            "file": file,
            "sha256": sha,
        }),
        reg,
    )
}

fn target_dir() -> PathBuf {
    Path::new(SNAPSHOTTER)
        .parent()
        .and_then(Path::parent)
        .expect("binary under target/<profile>/")
        .to_path_buf()
}

#[test]
fn containerd_snapshotter_testsuite_passes() {
    let _one = crate::one_node();
    if !is_root() {
        eprintln!(
            "skipping containerd_snapshotter_testsuite_passes: containerd's snapshotter testsuite mounts overlay and bind mounts itself, which needs root"
        );
        return;
    }
    require_tool("go");
    let testsuite =
        Path::new(DEBIAN_GOPATH).join("src/github.com/containerd/containerd/snapshots/testsuite");
    assert!(
        testsuite.is_dir(),
        "{} is missing: run integration/setup.sh (golang-github-containerd-containerd-dev)",
        testsuite.display()
    );

    let scratch = Scratch(tempfile::tempdir().unwrap());
    let t = scratch.0.path();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration/conformance");
    let pkg = t.join("gopath/src/modelpack/conformance");
    std::fs::create_dir_all(&pkg).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "go") {
            std::fs::copy(&p, pkg.join(p.file_name().unwrap())).unwrap();
        }
    }

    // GOPATH mode, offline: only our package and Debian's sources, no modules.
    // Every case runs with lazy model snapshots present: a model with a bound
    // chunk index, its layers committed lazily and a FUSE view mounted.
    let seed = lazy_model_seed(t);
    std::fs::write(
        t.join("snapshotter.toml"),
        "[registry]\nplain_http = true\n",
    )
    .unwrap();

    let bin = t.join("conformance.test");
    let started = Instant::now();
    let build = Command::new("go")
        .args(["test", "-c", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&pkg)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env(
            "GOPATH",
            format!("{}:{DEBIAN_GOPATH}", t.join("gopath").display()),
        )
        // Kept in target/ so a second run reuses the compiled containerd packages.
        .env("GOCACHE", target_dir().join("go-build-cache"))
        .output()
        .unwrap();
    let built = started.elapsed();
    assert!(
        build.status.success(),
        "go test -c failed ({}):\n{}{}",
        build.status,
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );

    let started = Instant::now();
    let run = Command::new(&bin)
        .args(["-test.v", "-test.timeout", "5m"])
        .current_dir(t)
        .env("MODELPACK_SNAPSHOTTER", SNAPSHOTTER)
        .env("MODELPACK_SNAPSHOTTER_CONFIG", t.join("snapshotter.toml"))
        .env("MODELPACK_LAZY_MODEL", seed.0.to_string())
        // The suite's per-case dirs (snapshotter roots, work dirs) go in our scratch dir.
        .env("TMPDIR", t)
        .output()
        .unwrap();
    let ran = started.elapsed();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let subtest = |verdict: &str| {
        out.lines()
            .filter(|l| {
                l.trim_start().starts_with(&format!(
                    "--- {verdict}: TestModelpackSnapshotterConformance/"
                ))
            })
            .count()
    };
    let (passed, failed, skipped) = (subtest("PASS"), subtest("FAIL"), subtest("SKIP"));
    eprintln!(
        "containerd snapshotter testsuite: {passed} passed, {failed} failed, {skipped} skipped (go build {:.1}s, run {:.1}s)",
        built.as_secs_f64(),
        ran.as_secs_f64()
    );
    assert!(
        run.status.success() && failed == 0,
        "the containerd snapshotter testsuite failed ({}):\n{out}",
        run.status
    );
    assert!(
        passed >= MIN_PASSED,
        "only {passed} testsuite cases passed, expected at least {MIN_PASSED}:\n{out}"
    );
}
