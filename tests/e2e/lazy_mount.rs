//! `modelpack mount REF DIR` without containerd, against a real
//! docker-registry 2.8 and the kernel's FUSE: the view is up before the
//! weights are fetched; every file reads back with its sha256; a chunk
//! corrupted in the registry's storage fails exactly the reads of that chunk
//! with EIO (and recovers once the registry serves good bytes); with the
//! registry stopped, present chunks keep reading and missing ones fail
//! after the configured wait, then recover when it returns; after an
//! unmount and remount nothing present is fetched again (the registry is
//! down meanwhile); prefetch completes the model into the store; `resolve`
//! prints a ready directory. Root with /dev/fuse only; skips otherwise.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use modelpack_e2e::ok;
use modelpack_e2e::services::{Auth, Registry};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_docker-modelpack");
const MIB: u64 = 1 << 20;
/// Chunks of the weight file (1 MiB each). Readahead fetches groups of 4
/// chunks up to 8 chunks ahead of a sequential read; the chunks this test
/// reads (0, 2, 3 and the last) never pull chunk `NEVER_READ` in.
const CHUNKS: u64 = 24;
const NEVER_READ: u64 = 16;

fn can_fuse() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root || !Path::new("/dev/fuse").exists() {
        eprintln!("skipping: FUSE mounts need root and /dev/fuse");
        return false;
    }
    true
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn cmd(&self, store: &str, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .env("MODELPACK_HOME", self.path(store))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("HOME", self.path("home"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_AUTH_CONFIG")
            .args(args)
            .output()
            .unwrap()
    }
    fn run(&self, store: &str, args: &[&str]) -> String {
        ok(self.cmd(store, args), &args.join(" "))
    }
}

/// Unmounts on drop so a failing test leaves no mount behind.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn sha(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// Reads 4 KiB at the start of chunk `i` through a fresh handle, with the
/// kernel's readahead off for it (so the filesystem sees one small read).
fn read_chunk(file: &Path, i: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(file)?;
    nix::fcntl::posix_fadvise(&f, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM)?;
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, i * MIB)?;
    Ok(buf)
}

fn expect_eio(r: std::io::Result<Vec<u8>>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc_eio()), "{what}: {e}"),
        Ok(_) => panic!("{what}: read succeeded"),
    }
}

const fn libc_eio() -> i32 {
    5
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_model(dir: &Path) -> Vec<u8> {
    std::fs::create_dir_all(dir.join("tok")).unwrap();
    std::fs::write(dir.join("config.json"), br#"{"architectures":["X"]}"#).unwrap();
    std::fs::write(dir.join("tok/tokenizer.json"), br#"{"version":"1.0"}"#).unwrap();
    let mut state = 0x9e3779b97f4a7c15u64;
    let weights: Vec<u8> = (0..CHUNKS * MIB)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(dir.join("model.safetensors"), &weights).unwrap();
    std::fs::write(
        dir.join("Modelfile"),
        "NAME lazy\nCONFIG config.json\nMODEL model.safetensors\nDOC tok/tokenizer.json\n",
    )
    .unwrap();
    weights
}

#[test]
fn a_lazily_mounted_model_reads_verified_chunks_survives_faults_and_completes() {
    if !can_fuse() {
        return;
    }
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    let model = env.path("model");
    let weights = write_model(&model);
    let reg_dir = env.path("registry");
    let mut registry = Some(Registry::start(&reg_dir, Auth::None));
    let port = registry.as_ref().unwrap().port;
    let r = format!("127.0.0.1:{port}/models/lazy:v1");
    let built: Value = serde_json::from_str(&env.run(
        "pub",
        &[
            "--json",
            "build",
            "--chunk-size",
            "1MiB",
            "-t",
            &r,
            model.to_str().unwrap(),
        ],
    ))
    .unwrap();
    assert!(
        built["chunkIndex"].is_string(),
        "build binds an index: {built}"
    );
    env.run("pub", &["push", "--plain-http", &r]);
    let weight_digest = format!("sha256:{}", sha(&model.join("model.safetensors")));

    // Mount from an empty store: up before the weights are fetched.
    let mnt = env.path("mnt");
    let _guard = MountGuard(mnt.clone());
    let mount_args = [
        "--json",
        "mount",
        "--plain-http",
        "--no-prefetch",
        "--read-timeout",
        "3",
        &r,
        mnt.to_str().unwrap(),
    ];
    let m: Value = serde_json::from_str(&env.run("node", &mount_args)).unwrap();
    assert_eq!(m["lazyLayers"], 3, "{m}");
    assert_eq!(m["files"], 3, "{m}");
    let stored_weight = env
        .path("node/blobs/sha256")
        .join(weight_digest.trim_start_matches("sha256:"));
    assert!(!stored_weight.exists(), "weights fetched before any read");
    let w = mnt.join("model.safetensors");
    assert_eq!(
        std::fs::metadata(&w).unwrap().len(),
        weights.len() as u64,
        "sizes are known without fetching"
    );
    assert_eq!(
        sha(&mnt.join("config.json")),
        sha(&model.join("config.json"))
    );
    assert_eq!(
        sha(&mnt.join("tok/tokenizer.json")),
        sha(&model.join("tok/tokenizer.json"))
    );
    let at = |i: u64| weights[(i * MIB) as usize..(i * MIB + 4096) as usize].to_vec();
    assert_eq!(read_chunk(&w, 3).unwrap(), at(3));
    // `ls` lists it under the tag it will get, partial, with what is here;
    // it is not tagged yet, so verbs that need every byte do not find it.
    let ls: Value = serde_json::from_str(&env.run("node", &["--json", "ls"])).unwrap();
    let row = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["repository"].as_str().unwrap().ends_with("models/lazy"))
        .unwrap_or_else(|| panic!("the mounted model is listed: {ls}"))
        .clone();
    assert_eq!(row["tag"], Value::Null, "{row}");
    assert_eq!(row["pendingTag"], "v1", "{row}");
    assert_eq!(row["complete"], false, "{row}");
    let (local, size) = (
        row["localBytes"].as_u64().unwrap(),
        row["size"].as_u64().unwrap(),
    );
    assert!(local > 0 && local < size, "part of it is here: {row}");
    let table = env.run("node", &["ls"]);
    assert!(
        table.contains(" v1 ") && table.contains("% here)"),
        "the table shows the pending tag and how much is here:\n{table}"
    );

    // Corrupt chunk 2 in the registry's own storage: exactly its reads fail.
    let blob = registry.as_ref().unwrap().blob_path(&weight_digest);
    let good = std::fs::read(&blob).unwrap();
    let mut bad = good.clone();
    bad[(2 * MIB + 100) as usize] ^= 0xff;
    std::fs::write(&blob, &bad).unwrap();
    expect_eio(read_chunk(&w, 2), "corrupt chunk 2");
    expect_eio(
        read_chunk(&w, 2),
        "corrupt chunk 2, read again (refetched, still bad)",
    );
    assert_eq!(read_chunk(&w, 0).unwrap(), at(0), "chunk 0 unaffected");
    assert_eq!(read_chunk(&w, 3).unwrap(), at(3), "chunk 3 unaffected");
    std::fs::write(&blob, &good).unwrap();
    assert_eq!(
        read_chunk(&w, 2).unwrap(),
        at(2),
        "a refused chunk is refetched on the next read"
    );

    // Registry down: present chunks read, missing ones fail within the wait.
    drop(registry.take());
    assert_eq!(read_chunk(&w, 3).unwrap(), at(3));
    let t = Instant::now();
    expect_eio(
        read_chunk(&w, CHUNKS - 1),
        "last chunk with the registry down",
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "a missing chunk fails after a bounded wait ({:?})",
        t.elapsed()
    );
    let _ = registry.insert(Registry::start_on(&reg_dir, Auth::None, port));
    assert_eq!(
        read_chunk(&w, CHUNKS - 1).unwrap(),
        at(CHUNKS - 1),
        "reads recover when the registry returns"
    );

    // Unmount: the serving process ends and the directory is empty again.
    env.run("node", &["umount", mnt.to_str().unwrap()]);
    wait_until("the unmount", 10, || {
        std::fs::read_dir(&mnt).unwrap().next().is_none()
    });
    let again = env.cmd("node", &["umount", mnt.to_str().unwrap()]);
    assert!(!again.status.success(), "umount of a plain directory fails");

    // Remount with the registry down: what was present is served from the
    // node store (nothing refetched), what was not fails with EIO.
    drop(registry.take());
    env.run("node", &mount_args);
    for i in [0, 2, 3, CHUNKS - 1] {
        assert_eq!(
            read_chunk(&w, i).unwrap(),
            at(i),
            "present chunk {i} after remount"
        );
    }
    expect_eio(
        read_chunk(&w, NEVER_READ),
        "a never-fetched chunk with the registry down",
    );
    env.run("node", &["umount", mnt.to_str().unwrap()]);
    wait_until("the unmount", 10, || {
        std::fs::read_dir(&mnt).unwrap().next().is_none()
    });

    // Prefetch on, mounted while the registry is still down (from the
    // manifest remembered for the reference): the first prefetch round fails,
    // the registry returns, a later round completes the model without any
    // read; every file then reads whole and right, and the model becomes an
    // ordinary stored model.
    let prefetching: Vec<&str> = mount_args
        .iter()
        .copied()
        .filter(|a| *a != "--no-prefetch")
        .collect();
    env.run("node", &prefetching);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !stored_weight.exists(),
        "nothing to fetch from while the registry is down"
    );
    let _ = registry.insert(Registry::start_on(&reg_dir, Auth::None, port));
    wait_until(
        "prefetch to complete after the registry returned",
        60,
        || stored_weight.exists(),
    );
    for f in ["config.json", "tok/tokenizer.json", "model.safetensors"] {
        assert_eq!(sha(&mnt.join(f)), sha(&model.join(f)), "{f}");
    }
    wait_until("prefetch to complete and tag the model", 60, || {
        let ls: Value = serde_json::from_str(&env.run("node", &["--json", "ls"])).unwrap();
        ls.as_array().unwrap().iter().any(|m| {
            m["tag"] == "v1"
                && m["complete"] == true
                && m["localBytes"] == m["size"]
                && m["repository"].as_str().unwrap().ends_with("models/lazy")
        })
    });
    assert!(stored_weight.exists(), "the completed blob is in the store");
    env.run("node", &["fsck"]);
    env.run("node", &["umount", mnt.to_str().unwrap()]);

    // resolve: one JSON line naming a ready directory.
    let line = env.run("node", &["resolve", "--plain-http", &r]);
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["reference"], r.as_str());
    assert_eq!(v["digest"], built["digest"]);
    let path = PathBuf::from(v["path"].as_str().unwrap());
    let _resolved = MountGuard(path.clone());
    assert_eq!(
        sha(&path.join("model.safetensors")),
        sha(&model.join("model.safetensors"))
    );
    let line2 = env.run("node", &["resolve", "--plain-http", &r]);
    assert_eq!(
        line.trim(),
        line2.trim(),
        "a second resolve reuses the mount"
    );
    env.run("node", &["umount", path.to_str().unwrap()]);
    drop(registry);
}

#[test]
fn tar_layers_mount_lazily_with_every_file_at_its_path() {
    if !can_fuse() {
        return;
    }
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    let model = env.path("model");
    write_model(&model);
    let registry = Registry::start(&env.path("registry"), Auth::None);
    let r = format!("{}/models/tarred:v1", registry.host);
    env.run(
        "pub",
        &[
            "build",
            "--layer-format",
            "tar",
            "--chunk-size",
            "1MiB",
            "-t",
            &r,
            model.to_str().unwrap(),
        ],
    );
    env.run("pub", &["push", "--plain-http", &r]);
    let mnt = env.path("mnt");
    let _guard = MountGuard(mnt.clone());
    let m: Value = serde_json::from_str(&env.run(
        "node",
        &[
            "--json",
            "mount",
            "--plain-http",
            "--no-prefetch",
            &r,
            mnt.to_str().unwrap(),
        ],
    ))
    .unwrap();
    assert_eq!(
        m["lazyLayers"], 3,
        "tar layers with a bound index are lazy: {m}"
    );
    for f in ["config.json", "tok/tokenizer.json", "model.safetensors"] {
        assert_eq!(sha(&mnt.join(f)), sha(&model.join(f)), "{f}");
    }
    env.run("node", &["umount", mnt.to_str().unwrap()]);

    // The same model from the publishing store, where every blob is
    // complete: served straight from the store, file offsets read from the
    // tar headers.
    let m: Value =
        serde_json::from_str(&env.run("pub", &["--json", "mount", &r, mnt.to_str().unwrap()]))
            .unwrap();
    assert_eq!(m["lazyLayers"], 0, "{m}");
    for f in ["config.json", "tok/tokenizer.json", "model.safetensors"] {
        assert_eq!(sha(&mnt.join(f)), sha(&model.join(f)), "{f}");
    }
    env.run("pub", &["umount", mnt.to_str().unwrap()]);
}
