//! Real services for end-to-end tests, started on 127.0.0.1 with temp configs
//! and stopped on drop: docker-registry (plain, htpasswd, token), our test
//! token server, and a TCP proxy that injects faults.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{free_port, require_tool};

/// A process killed on drop.
pub struct Service {
    pub child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!("service on 127.0.0.1:{port} did not start");
}

pub enum Auth {
    None,
    Htpasswd { user: String, password: String },
    Token { realm: String },
}

pub struct Registry {
    pub host: String,
    pub port: u16,
    _svc: Service,
    pub dir: PathBuf,
}

impl Registry {
    /// Where the registry keeps a blob's bytes (to corrupt them behind its back).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn start(dir: &Path, auth: Auth) -> Registry {
        Registry::start_on(dir, auth, free_port())
    }

    /// Starts (or restarts, after a drop) a registry on `port` over `dir`'s data.
    pub fn start_on(dir: &Path, auth: Auth, port: u16) -> Registry {
        require_tool("docker-registry");
        std::fs::create_dir_all(dir).unwrap();
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Htpasswd { user, password } => {
                require_tool("htpasswd");
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .unwrap();
                std::fs::write(dir.join("htpasswd"), out.stdout).unwrap();
                format!(
                    "auth: {{htpasswd: {{realm: basic-realm, path: {}}}}}\n",
                    dir.join("htpasswd").display()
                )
            }
            Auth::Token { realm } => format!(
                "auth: {{token: {{realm: \"{realm}\", service: test-registry, issuer: test-issuer, rootcertbundle: {}}}}}\n",
                dir.join("cert.pem").display()
            ),
        };
        let cfg = dir.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}, secret: testsecret}}\n{auth_yaml}",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let svc = Service { child };
        wait_port(port);
        Registry {
            host: format!("127.0.0.1:{port}"),
            port,
            _svc: svc,
            dir: dir.to_path_buf(),
        }
    }
}

/// The token server plus a registry that trusts it.
pub struct TokenRegistry {
    pub registry: Registry,
    pub token_port: u16,
    _token: Service,
}

impl TokenRegistry {
    /// `users` like `alice:secret`; `extra` are token_server.py flags.
    pub fn start(dir: &Path, users: &str, extra: &[&str]) -> TokenRegistry {
        require_tool("openssl");
        std::fs::create_dir_all(dir).unwrap();
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=modelpack-test",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        let token_port = free_port();
        let python = crate::python();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/token_server.py");
        let child = Command::new(python)
            .arg(script)
            .arg(token_port.to_string())
            .arg(&key)
            .arg(&cert)
            .arg(users)
            .args(extra)
            .stderr(std::fs::File::create(dir.join("token.log")).unwrap())
            .spawn()
            .unwrap();
        let token = Service { child };
        wait_port(token_port);
        let registry = Registry::start(
            dir,
            Auth::Token {
                realm: format!("http://127.0.0.1:{token_port}/token"),
            },
        );
        TokenRegistry {
            registry,
            token_port,
            _token: token,
        }
    }

    pub fn stats(&self) -> serde_json::Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.token_port)).unwrap();
        write!(s, "GET /stats HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    }
}

/// A TCP proxy to a backend with fault injection.
pub struct FaultProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Bytes sent client→backend.
    pub upstream_bytes: Arc<AtomicU64>,
    fired: Arc<AtomicBool>,
}

#[derive(Clone, Copy)]
pub enum Fault {
    /// Drop the connection when the Nth `PATCH` (0-based) arrives, before forwarding any of it, once:
    /// a dropped connection between upload chunks. (A cut in the middle of a
    /// chunk makes distribution 2.8 invalidate the whole upload session.)
    DropPatch(u64),
    CutDownloadAfter(u64),
    /// Flip a byte in every response body larger than N bytes (after headers).
    CorruptDownloadsOver(u64),
    None,
}

impl FaultProxy {
    pub fn start(backend_port: u16, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let upstream_bytes = Arc::new(AtomicU64::new(0));
        let (stop2, up2, fired_out) = (stop.clone(), upstream_bytes.clone(), fired.clone());
        let patches = Arc::new(AtomicU64::new(0));
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let backend = TcpStream::connect(("127.0.0.1", backend_port)).unwrap();
                        let (c2, b2) = (client.try_clone().unwrap(), backend.try_clone().unwrap());
                        let (f1, f2) = (fired.clone(), fired.clone());
                        let up = up2.clone();
                        let (p1, p2) = (patches.clone(), patches.clone());
                        std::thread::spawn(move || pump(client, backend, fault, true, f1, up, p1));
                        std::thread::spawn(move || {
                            pump(b2, c2, fault, false, f2, Arc::new(AtomicU64::new(0)), p2)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            port,
            stop,
            upstream_bytes,
            fired: fired_out,
        }
    }
}

impl FaultProxy {
    /// Whether the one-shot fault has happened.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    fault: Fault,
    upstream: bool,
    fired: Arc<AtomicBool>,
    counter: Arc<AtomicU64>,
    patches: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    let mut body_seen = 0u64;
    let mut in_body = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n as u64;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        match fault {
            Fault::DropPatch(k) if upstream && buf[..n].starts_with(b"PATCH ") => {
                // Counted across connections: the client may open a new one per request.
                let seen = patches.fetch_add(1, Ordering::SeqCst) + 1;
                if seen > k && !fired.swap(true, Ordering::SeqCst) {
                    counter.fetch_sub(n as u64, Ordering::Relaxed);
                    break;
                }
            }
            Fault::CutDownloadAfter(limit)
                if !upstream && total > limit && !fired.swap(true, Ordering::SeqCst) =>
            {
                break;
            }
            Fault::CorruptDownloadsOver(limit) if !upstream => {
                if !in_body {
                    if let Some(pos) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
                        in_body = true;
                        body_seen = (n - pos - 4) as u64;
                    }
                } else {
                    body_seen += n as u64;
                }
                if in_body && body_seen > limit && n > 0 {
                    buf[n - 1] ^= 0xff;
                }
            }
            _ => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}
