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
