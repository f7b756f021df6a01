//! `build --reflink` and `extract --reflink` on a real XFS (reflink=1),
//! loop-mounted in a temp dir: with the store on the same filesystem as the
//! model, raw layers share the files' extents (the filesystem's used bytes do
//! not grow by the model's size) and restored files share the store's;
//! `always` is refused, naming both files, where extents cannot be shared
//! (and stores nothing); `never` writes a copy. Root with mkfs.xfs and a loop
//! device only; skips otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use modelpack_e2e::{assert_same_tree, fails, ok};

const BIN: &str = env!("CARGO_BIN_EXE_docker-modelpack");
const WEIGHTS: usize = 48 << 20;

/// A loop-mounted XFS, unmounted on drop.
struct Xfs {
    mnt: PathBuf,
}

impl Xfs {
    fn mount(dir: &Path) -> Option<Xfs> {
        let root = std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false);
        if !root {
            eprintln!("skipping: loop-mounting XFS needs root");
            return None;
        }
        let img = dir.join("xfs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(400 << 20)
            .unwrap();
        let mkfs = Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&img)
            .output();
        if !mkfs.map(|o| o.status.success()).unwrap_or(false) {
            eprintln!("skipping: mkfs.xfs (xfsprogs) is not installed or failed");
            return None;
        }
        let mnt = dir.join("xfs");
        std::fs::create_dir(&mnt).unwrap();
        let mount = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .unwrap();
        if !mount.status.success() {
            eprintln!(
                "skipping: cannot loop-mount XFS here: {}",
                String::from_utf8_lossy(&mount.stderr)
            );
            return None;
        }
        Some(Xfs { mnt })
    }

    /// Bytes in use on the filesystem, after everything written is on disk.
    fn used(&self) -> u64 {
        Command::new("sync").status().unwrap();
        let s = nix::sys::statvfs::statvfs(&self.mnt).unwrap();
        (s.blocks() - s.blocks_free()) * s.fragment_size()
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn mp(store: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("MODELPACK_HOME", store);
    c
}

#[test]
fn reflinks_share_extents_where_the_filesystem_can_and_always_refuses_where_it_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(xfs) = Xfs::mount(tmp.path()) else {
        return;
    };
    let model = xfs.mnt.join("model");
    std::fs::create_dir(&model).unwrap();
    let weights: Vec<u8> = (0..WEIGHTS).map(|i| (i * 131 % 251) as u8).collect();
    std::fs::write(model.join("model.safetensors"), &weights).unwrap();
    std::fs::write(model.join("config.json"), b"{\"model_type\":\"tiny\"}").unwrap();
    let store = xfs.mnt.join("store");
    let grew = |before: u64, after: u64| after.saturating_sub(before);

    // build --reflink always: the store's raw layers are the model's extents.
    let before = xfs.used();
    ok(
        mp(&store)
            .args([
                "build",
                "-q",
                "--reflink",
                "always",
                "-t",
                "localhost/r/m:v1",
            ])
            .arg(&model)
            .output()
            .unwrap(),
        "build --reflink always",
    );
    let added = grew(before, xfs.used());
    assert!(
        added < (WEIGHTS as u64) / 4,
        "a reflinked build wrote {added} bytes for {WEIGHTS} bytes of weights"
    );
    // extract --reflink always, on the same filesystem: files share the store's extents.
    let out = xfs.mnt.join("out");
    let before = xfs.used();
    ok(
        mp(&store)
            .args(["extract", "--reflink", "always", "localhost/r/m:v1", "-o"])
            .arg(&out)
            .output()
            .unwrap(),
        "extract --reflink always",
    );
    assert!(grew(before, xfs.used()) < (WEIGHTS as u64) / 4);
    assert_same_tree(&model, &out);

    // never: a real copy.
    let before = xfs.used();
    ok(
        mp(&xfs.mnt.join("store-copy"))
            .args([
                "build",
                "-q",
                "--reflink",
                "never",
                "-t",
                "localhost/r/m:v1",
            ])
            .arg(&model)
            .output()
            .unwrap(),
        "build --reflink never",
    );
    assert!(
        grew(before, xfs.used()) >= WEIGHTS as u64,
        "--reflink never must copy the bytes"
    );

    // always across filesystems (store on the temp dir's own filesystem):
    // refused, naming the source, and nothing stored.
    let other = tmp.path().join("other-store");
    let err = fails(
        mp(&other)
            .args([
                "build",
                "-q",
                "--reflink",
                "always",
                "-t",
                "localhost/r/m:v1",
            ])
            .arg(&model)
            .output()
            .unwrap(),
        "build --reflink always across filesystems",
    );
    assert!(
        err.contains("cannot share extents") && err.contains("model"),
        "{err}"
    );
    let blobs = other.join("blobs/sha256");
    let stored = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(stored, 0, "a refused build stored blobs");
    let bad = ok(
        mp(&other).args(["ls", "-q"]).output().unwrap(),
        "ls after a refused build",
    );
    assert!(bad.trim().is_empty(), "{bad}");
}
