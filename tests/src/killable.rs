//! A docker-registry that can be SIGKILLed and restarted on the same port and
//! storage, for the fault matrix.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, require_tool};

pub struct KillableRegistry {
    pub port: u16,
    pub host: String,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl KillableRegistry {
    pub fn start(dir: &Path) -> KillableRegistry {
        require_tool("docker-registry");
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let cfg = dir.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}, secret: testsecret}}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut r = KillableRegistry {
            port,
            host: format!("127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            child: None,
        };
        r.restart();
        r
    }

    /// Starts the registry again (after a kill) on the same port and storage.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "registry still running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not restart on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes the files a SIGKILL tore in the registry's own storage, and says
    /// how many. distribution 2.8's filesystem driver writes manifests and link
    /// files in place (truncate, then write), so a kill can leave a manifest
    /// blob shorter than its digest or an empty link; the registry then answers
    /// 500 for that manifest forever, because a re-upload of an existing digest
    /// is skipped. That is the registry's fault, not the client's, so the
    /// fault tests repair it as an operator would before restarting. Blob
    /// layers are committed by rename and are never torn. Call with the
    /// registry stopped.
    pub fn repair_torn_writes(&self) -> usize {
        assert!(self.child.is_none(), "registry still running");
        let mut removed = 0;
        let mut stack = vec![self.dir.join("data")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(path);
                } else if torn(&path) {
                    eprintln!(
                        "registry storage torn by SIGKILL, removing {}",
                        path.display()
                    );
                    std::fs::remove_file(&path).unwrap();
                    removed += 1;
                }
            }
        }
        removed
    }

    /// SIGKILL (Child::kill) and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for KillableRegistry {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blob `data` file whose bytes do not hash to the digest in its path, or a
/// `link` file that does not hold a digest.
fn torn(path: &Path) -> bool {
    use sha2::Digest;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name {
        // Upload sessions (`_uploads/<uuid>/data`) grow by appends and are
        // not content-addressed; only committed blobs are checked.
        "data" if path.components().any(|c| c.as_os_str() == "blobs") => {
            let Some(hex) = path
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
            else {
                return false;
            };
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            hex::encode(sha2::Sha256::digest(&bytes)) != hex
        }
        "link" => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let hex = text.strip_prefix("sha256:").unwrap_or("");
            hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        }
        _ => false,
    }
}

/// A small deterministic PRNG (xorshift64*) so trials are reproducible from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
