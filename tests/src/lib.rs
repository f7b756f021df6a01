//! Shared support for the end-to-end tests: scratch directories, running our
//! binaries, free loopback ports, and checks for the real components they use.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fails the test with an actionable message when a required tool is missing.
pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is required by this test: run integration/setup.sh"
    );
}

/// Output of a command that must succeed.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// stderr of a command that must fail.
pub fn fails(out: Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} unexpectedly succeeded:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Every regular file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_path_buf())
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Asserts two trees hold the same files with the same bytes and permission bits.
pub fn assert_same_tree(a: &Path, b: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let (fa, fb) = (files_under(a), files_under(b));
    assert_eq!(
        fa,
        fb,
        "file lists differ between {} and {}",
        a.display(),
        b.display()
    );
    for f in fa {
        let (pa, pb) = (a.join(&f), b.join(&f));
        assert!(
            std::fs::read(&pa).unwrap() == std::fs::read(&pb).unwrap(),
            "{} differs",
            f.display()
        );
        let (ma, mb) = (
            std::fs::metadata(&pa).unwrap().permissions().mode() & 0o111,
            std::fs::metadata(&pb).unwrap().permissions().mode() & 0o111,
        );
        assert_eq!(
            ma != 0,
            mb != 0,
            "executable bit of {} differs",
            f.display()
        );
    }
}

/// Copies a directory tree (new mtimes, like a fresh checkout).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

pub mod artifacts;
pub mod hostile_http;
pub mod killable;
pub mod peers;
pub mod services;

/// The Python with oras-py and cryptography: `$MODELPACK_TEST_PYTHON`, else the
/// venv `integration/setup.sh` creates, else `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("MODELPACK_TEST_PYTHON") {
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python");
    if venv.exists() {
        return venv.display().to_string();
    }
    "python3".into()
}

/// An EC key pair made with openssl in `dir`: `NAME.pem` (SEC1, or PKCS#8
/// with `pkcs8`) and `NAME.pub` (SubjectPublicKeyInfo). `curve` is openssl's
/// name (`prime256v1`, `secp384r1`, `secp521r1`).
pub fn ec_keypair(dir: &Path, name: &str, curve: &str, pkcs8: bool) -> (PathBuf, PathBuf) {
    let (private, public) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.pub")),
    );
    let mut keygen = Command::new("openssl");
    if pkcs8 {
        keygen
            .args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
            .arg(format!("ec_paramgen_curve:{curve}"))
            .arg("-out");
    } else {
        keygen.args(["ecparam", "-genkey", "-noout", "-name", curve, "-out"]);
    }
    ok(
        keygen.arg(&private).output().unwrap(),
        "openssl: generate a key",
    );
    ok(
        Command::new("openssl")
            .args(["ec", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .output()
            .unwrap(),
        "openssl ec -pubout",
    );
    (private, public)
}

/// An OMS bundle whose statement was changed under its signature (one `a`
/// in the payload turned into `b`): it parses, and no key verifies it.
pub fn tampered_bundle(bundle: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut b: serde_json::Value = serde_json::from_slice(bundle).expect("a bundle is JSON");
    let mut payload = b64
        .decode(
            b["dsseEnvelope"]["payload"]
                .as_str()
                .expect("a DSSE payload"),
        )
        .expect("the payload is base64");
    let at = payload
        .iter()
        .position(|c| *c == b'a')
        .expect("the statement has an `a`");
    payload[at] = b'b';
    b["dsseEnvelope"]["payload"] = serde_json::Value::String(b64.encode(&payload));
    serde_json::to_vec(&b).unwrap()
}
