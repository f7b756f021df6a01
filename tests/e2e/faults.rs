//! The fault matrix, at small sizes: the real docker-registry SIGKILLed at
//! random points mid-push and mid-pull and restarted on the same storage,
//! the CLI SIGKILLed mid-build and mid-pull, and a full disk. After every
//! fault the re-run completes, the result is byte-identical, and the store
//! passes `modelpack fsck`.
//!
//! The random points come from a seed printed at the start of each test
//! (`MODELPACK_FAULT_SEED=N` reproduces a run).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use modelpack_e2e::killable::{KillableRegistry, Rng};
use modelpack_e2e::{assert_same_tree, ok};

const BIN: &str = env!("CARGO_BIN_EXE_docker-modelpack");
const TRIALS: usize = 20;
/// Each registry-kill test stops starting trials after this long.
const BUDGET: Duration = Duration::from_secs(80);
/// How long a command may take after the registry restarted before it counts
/// as hung. The client's own schedule may legitimately take ~25 s before it
/// gives up (manifest retries up to ~12 s with jitter, then a download's
/// resume back-offs 0.4 + 0.8 + 1.6 + 3.2 + 6.4 s), so 30 s was within
/// reach of a loaded two-core CI machine; a real hang (a stalled socket waits
/// out the 300 s read timeout) still fails, with the command's log.
const HANG_LIMIT: Duration = Duration::from_secs(60);

fn seed() -> u64 {
    let s = std::env::var("MODELPACK_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("fault seed: MODELPACK_FAULT_SEED={s}");
    s
}

fn mp(root: &Path, store: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("MODELPACK_HOME", store)
        .env("DOCKER_CONFIG", root.join("docker"))
        .env("HOME", root.join("home"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DOCKER_AUTH_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `files` files of `size` bytes whose content depends on `seed`.
fn write_model(dir: &Path, seed: u64, files: usize, size: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for i in 0..files {
        let data: Vec<u8> = (0..size / 8)
            .flat_map(|_| rng.next_u64().to_le_bytes())
            .collect();
        std::fs::write(dir.join(format!("weights-{i:05}.bin")), data).unwrap();
    }
    std::fs::write(
        dir.join("config.json"),
        format!("{{\"seed\":{seed},\"model_type\":\"test\"}}"),
    )
    .unwrap();
}

/// Waits for a child with a deadline (then SIGKILLs it); returns its output.
/// Its pipes are drained while it runs, so a chatty child never blocks on a
/// full pipe and looks hung.
fn wait_bounded(mut child: Child, limit: Duration) -> (Output, bool) {
    fn drain(
        pipe: Option<impl std::io::Read + Send + 'static>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let mut hung = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            hung = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    (output, hung)
}

/// `fsck` must pass on `store`.
fn assert_fsck(root: &Path, store: &Path, what: &str) {
    let o = mp(root, store)
        .arg("--storage-dir")
        .arg(store)
        .arg("fsck")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fsck of {} after {what} failed ({}):\n{}{}",
        store.display(),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn run_ok(root: &Path, store: &Path, args: &[&str], what: &str) -> String {
    ok(mp(root, store).args(args).output().unwrap(), what)
}

fn json_ok(root: &Path, store: &Path, args: &[&str], what: &str) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&run_ok(root, store, &a, what)).unwrap()
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

fn delay(rng: &mut Rng, around: Duration) -> Duration {
    let max = (around.as_micros() as u64 * 3 / 2).max(2_000);
    Duration::from_micros(rng.below(max))
}

#[test]
fn registry_killed_mid_push_then_restarted() {
    let mut rng = Rng::new(seed());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut reg = KillableRegistry::start(&root.join("reg"));
    let store = root.join("store");
    // Baseline: how long a push of this size takes here.
    let base = root.join("m-base");
    write_model(&base, 0, 3, 512 << 10);
    let r0 = format!("{}/faults/base:v1", reg.host);
    run_ok(
        root,
        &store,
        &["build", "-q", "-t", &r0, base.to_str().unwrap()],
        "build",
    );
    let (_, t_push) = timed(|| run_ok(root, &store, &["push", &r0, "--chunk-mib", "1"], "push"));
    let started = Instant::now();
    let (mut interrupted, mut trials) = (0, 0);
    for i in 0..TRIALS {
        if started.elapsed() > BUDGET {
            eprintln!("time budget reached after {i} trials");
            break;
        }
        trials += 1;
        let model = root.join(format!("m{i}"));
        write_model(&model, i as u64 + 1, 3, 512 << 10);
        let r = format!("{}/faults/push{i}:v1", reg.host);
        let digest = run_ok(
            root,
            &store,
            &["build", "-q", "-t", &r, model.to_str().unwrap()],
            "build",
        )
        .trim()
        .to_string();
        let child = mp(root, &store)
            .args(["push", "-v", &r, "--chunk-mib", "1"])
            .spawn()
            .unwrap();
        std::thread::sleep(delay(&mut rng, t_push));
        reg.kill9();
        if reg.repair_torn_writes() > 0 {
            eprintln!("trial {i}: the registry tore its own storage (see repair_torn_writes)");
        }
        reg.restart();
        let (first, hung) = wait_bounded(child, HANG_LIMIT);
        assert!(
            !hung,
            "push did not finish within {HANG_LIMIT:?} after the registry restarted (trial {i}); its stderr:\n{}",
            String::from_utf8_lossy(&first.stderr)
        );
        if !first.status.success() {
            interrupted += 1;
        }
        // The re-run completes and the registry holds exactly what was built.
        let again = json_ok(root, &store, &["push", &r, "--chunk-mib", "1"], "re-push");
        assert_eq!(again["digest"], digest.as_str(), "trial {i}");
        let check = root.join(format!("check{i}"));
        let pulled = json_ok(
            root,
            &root.join(format!("store-check{i}")),
            &["pull", &r, "--extract-dir", check.to_str().unwrap()],
            "pull of the re-pushed model",
        );
        assert_eq!(pulled["digest"], digest.as_str());
        assert_same_tree(&model, &check);
        assert_fsck(root, &store, &format!("registry kill mid-push, trial {i}"));
        let _ = std::fs::remove_dir_all(&check);
        let _ = std::fs::remove_dir_all(root.join(format!("store-check{i}")));
    }
    eprintln!("registry killed mid-push: {interrupted} of {trials} first pushes failed");
    assert!(trials >= 10, "only {trials} trials ran");
}

#[test]
fn registry_killed_mid_pull_then_restarted() {
    let mut rng = Rng::new(seed());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut reg = KillableRegistry::start(&root.join("reg"));
    let model = root.join("model");
    write_model(&model, 7, 4, 1 << 20);
    let r = format!("{}/faults/pull:v1", reg.host);
    let src = root.join("src-store");
    let digest = run_ok(
        root,
        &src,
        &["build", "-q", "-t", &r, model.to_str().unwrap()],
        "build",
    )
    .trim()
    .to_string();
    run_ok(root, &src, &["push", &r], "push");
    let (_, t_pull) = timed(|| run_ok(root, &root.join("store-base"), &["pull", &r], "pull"));
    let started = Instant::now();
    let (mut interrupted, mut trials) = (0, 0);
    for i in 0..TRIALS {
        if started.elapsed() > BUDGET {
            eprintln!("time budget reached after {i} trials");
            break;
        }
        trials += 1;
        let store = root.join(format!("store{i}"));
        let out = root.join(format!("out{i}"));
        let child = mp(root, &store)
            .args(["pull", "-v", &r, "--extract-dir", out.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(delay(&mut rng, t_pull));
        reg.kill9();
        reg.restart();
        let (first, hung) = wait_bounded(child, HANG_LIMIT);
        assert!(
            !hung,
            "pull did not finish within {HANG_LIMIT:?} after the registry restarted (trial {i}); its stderr:\n{}",
            String::from_utf8_lossy(&first.stderr)
        );
        if !first.status.success() {
            interrupted += 1;
        }
        assert_fsck(root, &store, &format!("registry kill mid-pull, trial {i}"));
        let again = json_ok(
            root,
            &store,
            &["pull", &r, "--extract-dir", out.to_str().unwrap()],
            "re-pull",
        );
        assert_eq!(again["digest"], digest.as_str());
        assert_same_tree(&model, &out);
        assert_fsck(root, &store, &format!("re-pull, trial {i}"));
        let _ = std::fs::remove_dir_all(&store);
        let _ = std::fs::remove_dir_all(&out);
    }
    eprintln!("registry killed mid-pull: {interrupted} of {trials} first pulls failed");
    assert!(trials >= 10, "only {trials} trials ran");
}

#[test]
fn cli_killed_mid_build_and_mid_pull() {
    let mut rng = Rng::new(seed());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = root.join("model");
    write_model(&model, 11, 6, 2 << 20);
    let store = root.join("store");
    let r = "local/faults/build:v1";
    // Baseline build in a scratch store: the digest every completed build must give.
    let (want, t_build) = timed(|| {
        run_ok(
            root,
            &root.join("store-base"),
            &["build", "-q", "-t", r, model.to_str().unwrap()],
            "build",
        )
        .trim()
        .to_string()
    });
    for i in 0..8 {
        // A fresh store each time: an unchanged rebuild in a complete store reads nothing.
        let bstore = root.join(format!("store-b{i}"));
        let child = mp(root, &bstore)
            .args(["build", "-q", "-t", r, model.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(delay(&mut rng, t_build));
        let (_, _) = wait_bounded(child, Duration::ZERO);
        if bstore.join("index.json").exists() {
            assert_fsck(root, &bstore, &format!("kill -9 mid-build, trial {i}"));
        }
        let got = run_ok(
            root,
            &bstore,
            &["build", "-q", "-t", r, model.to_str().unwrap()],
            "re-build",
        );
        assert_eq!(
            got.trim(),
            want,
            "a re-run after a kill builds the same artifact (trial {i})"
        );
        assert_fsck(root, &bstore, &format!("re-build, trial {i}"));
        let _ = std::fs::remove_dir_all(&bstore);
    }
    run_ok(
        root,
        &store,
        &["build", "-q", "-t", r, model.to_str().unwrap()],
        "build",
    );

    // Mid-pull: the CLI killed while downloading from a healthy registry.
    let reg = KillableRegistry::start(&root.join("reg"));
    let remote = format!("{}/faults/cli:v1", reg.host);
    run_ok(root, &store, &["tag", r, &remote], "tag");
    run_ok(root, &store, &["push", &remote], "push");
    let (_, t_pull) = timed(|| run_ok(root, &root.join("store-pb"), &["pull", &remote], "pull"));
    let pstore = root.join("pull-store");
    let out = root.join("out");
    for i in 0..8 {
        let child = mp(root, &pstore)
            .args(["pull", &remote, "--extract-dir", out.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(delay(&mut rng, t_pull));
        let (_, _) = wait_bounded(child, Duration::ZERO);
        if !pstore.join("index.json").exists() {
            // Killed before the store existed: there is nothing to check, and
            // fsck rightly says "no store" (its layout files are each atomic).
            eprintln!("kill -9 mid-pull, trial {i}: before the store was created");
            continue;
        }
        assert_fsck(root, &pstore, &format!("kill -9 mid-pull, trial {i}"));
    }
    let again = json_ok(
        root,
        &pstore,
        &["pull", &remote, "--extract-dir", out.to_str().unwrap()],
        "re-pull",
    );
    assert_eq!(again["digest"], want.as_str());
    assert_same_tree(&model, &out);
    assert_fsck(root, &pstore, "re-pull");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_is_a_clear_error_and_nothing_corrupt() {
    if !is_root() {
        eprintln!(
            "skipping full_disk_is_a_clear_error_and_nothing_corrupt: needs root to mount a small tmpfs"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let full = root.join("full");
    std::fs::create_dir_all(&full).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&full)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let _guard = Unmount(full.clone());
    let model = root.join("model");
    write_model(&model, 3, 2, 2 << 20);
    let store = full.join("store");
    let o = mp(root, &store)
        .args(["build", "-t", "local/full:v1", model.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "build into a full disk succeeded");
    assert!(
        err.to_lowercase().contains("no space left") && err.contains(full.to_str().unwrap()),
        "the error says the disk is full and names the path: {err}"
    );
    assert_fsck(root, &store, "build into a full disk");
    // Pull into a full disk: the same, and extraction into a full directory too.
    let reg = KillableRegistry::start(&root.join("reg"));
    let remote = format!("{}/faults/full:v1", reg.host);
    let ok_store = root.join("store");
    run_ok(
        root,
        &ok_store,
        &["build", "-q", "-t", &remote, model.to_str().unwrap()],
        "build",
    );
    run_ok(root, &ok_store, &["push", &remote], "push");
    let o = mp(root, &store).args(["pull", &remote]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "pull into a full disk succeeded");
    assert!(
        err.to_lowercase().contains("no space left") && err.contains(full.to_str().unwrap()),
        "pull: the error says the disk is full and names the path: {err}"
    );
    assert_fsck(root, &store, "pull into a full disk");
    let out = full.join("out");
    let o = mp(root, &ok_store)
        .args(["extract", &remote, "--output", out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "extract into a full disk succeeded");
    assert!(
        err.to_lowercase().contains("no space left") && err.contains(full.to_str().unwrap()),
        "extract: the error says the disk is full and names the path: {err}"
    );
    assert_fsck(root, &ok_store, "extract into a full disk");
}
