//! Transport security against hostile servers: small HTTP/1.1 listeners on
//! 127.0.0.1 that record every request and answer with canned bytes. A real
//! registry never sends these replies, which is why they are mocked.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::credentials::{Credential, CredentialOptions, CredentialStore, EnvFn};
use crate::digest::Digest;

#[derive(Clone, Debug)]
struct Req {
    method: String,
    /// Path and query.
    target: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn auth(&self) -> Option<&str> {
        self.header("authorization")
    }
}

type Handler = Arc<dyn Fn(&Req) -> Vec<u8> + Send + Sync>;

/// A listener that records requests; `run` gives it its answers.
struct Srv {
    listener: Mutex<Option<TcpListener>>,
    /// `127.0.0.1:port`
    addr: String,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Srv {
    async fn new() -> Arc<Srv> {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Arc::new(Srv {
            addr: l.local_addr().unwrap().to_string(),
            listener: Mutex::new(Some(l)),
            log: Arc::default(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    fn run(&self, h: impl Fn(&Req) -> Vec<u8> + Send + Sync + 'static) {
        let listener = self.listener.lock().unwrap().take().unwrap();
        let h: Handler = Arc::new(h);
        let log = self.log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (h, log) = (h.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 8192];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap_or("").split(' ');
                    let req = Req {
                        method: first.next().unwrap_or("").into(),
                        target: first.next().unwrap_or("").into(),
                        headers: lines
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                            .collect(),
                    };
                    let body_len: usize = req
                        .header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() - head_end < body_len {
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    log.lock().unwrap().push(req.clone());
                    let out = h(&req);
                    let _ = sock.write_all(&out).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
    }
}

fn resp(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A body without Content-Length: only counting while streaming catches its size.
fn resp_chunked(status: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for c in body.chunks(64 << 10) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn basic_header(u: &str, p: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{u}:{p}")))
}

fn unauthorized_basic() -> Vec<u8> {
    resp(
        "401 Unauthorized",
        &[("WWW-Authenticate", "Basic realm=\"registry\"")],
        b"",
    )
}

/// Keeps the machine's own ~/.docker/config.json out of the tests.
const NO_DOCKER_CONFIG: &str = "/nonexistent/modelpack-test-docker-config";

fn no_env() -> EnvFn {
    Arc::new(|_: &str| None)
}

fn client_with(creds: CredentialStore, opts: TransportOptions) -> RegistryClient {
    RegistryClient::new(TransportOptions { retries: 0, ..opts }, Arc::new(creds)).unwrap()
}

fn client(explicit: Option<Credential>) -> RegistryClient {
    client_with(
        CredentialStore::with_env(
            CredentialOptions {
                explicit,
                docker_config_dir: Some(NO_DOCKER_CONFIG.into()),
                ..Default::default()
            },
            no_env(),
        ),
        TransportOptions::default(),
    )
}

fn alice() -> Option<Credential> {
    Some(Credential::Basic {
        username: "alice".into(),
        password: "s3cret".into(),
    })
}

fn reference(srv: &Srv) -> Reference {
    format!("{}/models/tiny:v1", srv.addr).parse().unwrap()
}

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.cncf.model.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

fn manifest_ok() -> Vec<u8> {
    resp(
        "200 OK",
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        MANIFEST,
    )
}

#[tokio::test]
async fn upload_location_on_another_origin_gets_no_authorization() {
    let (reg, other) = (Srv::new().await, Srv::new().await);
    let loc = other.url("/upload/session-1");
    let want = basic_header("alice", "s3cret");
    reg.run(move |req| {
        if req.auth() != Some(want.as_str()) {
            return unauthorized_basic();
        }
        match req.method.as_str() {
            "HEAD" => resp("404 Not Found", &[], b""),
            "POST" => resp("202 Accepted", &[("Location", loc.as_str())], b""),
            _ => resp("400 Bad Request", &[], b"unexpected"),
        }
    });
    other.run(|_| resp("201 Created", &[], b""));
    let c = client(alice());
    c.push_blob_bytes(&reference(&reg), b"{}").await.unwrap();
    let put = other.requests();
    assert_eq!(put.len(), 1, "{put:?}");
    assert_eq!(put[0].method, "PUT");
    assert!(
        put[0]
            .target
            .starts_with("/upload/session-1?digest=sha256:")
    );
    assert_eq!(put[0].auth(), None, "credentials leaked to the upload host");
    // The registry itself did get them, so the test would see a leak.
    assert!(reg.requests().iter().any(|r| r.auth().is_some()));
}

#[tokio::test]
async fn redirect_to_another_origin_gets_no_authorization() {
    let (reg, cdn) = (Srv::new().await, Srv::new().await);
    let blob = vec![7u8; 3000];
    let d = Digest::of(&blob);
    let target = cdn.url("/cdn/blob?sig=abc");
    let want = basic_header("alice", "s3cret");
    reg.run(move |req| {
        if req.auth() != Some(want.as_str()) {
            return unauthorized_basic();
        }
        resp(
            "307 Temporary Redirect",
            &[("Location", target.as_str())],
            b"",
        )
    });
    let body = blob.clone();
    cdn.run(move |_| resp("200 OK", &[], &body));
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("blob.partial");
    client(alice())
        .pull_blob_to_file(
            &reference(&reg),
            &d,
            blob.len() as u64,
            &std::fs::File::options()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&partial)
                .unwrap(),
            &partial,
            &(),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&partial).unwrap(), blob);
    let got = cdn.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].auth(), None, "credentials followed the redirect");
    assert_eq!(got[0].header("referer"), None);
    // And range reads through the same redirect also work without credentials.
    let part = client(alice())
        .pull_blob_range(&reference(&reg), &d, 10, 20)
        .await
        .unwrap();
    assert_eq!(part, blob[10..30]);
    assert!(cdn.requests().iter().all(|r| r.auth().is_none()));
}

#[tokio::test]
async fn a_401_from_another_origin_is_never_answered() {
    let (reg, other, realm) = (Srv::new().await, Srv::new().await, Srv::new().await);
    let target = other.url("/cdn/blob");
    let upload = other.url("/upload/s");
    let want = basic_header("alice", "s3cret");
    reg.run(move |req| {
        if req.auth() != Some(want.as_str()) {
            return unauthorized_basic();
        }
        match req.method.as_str() {
            "HEAD" => resp("404 Not Found", &[], b""),
            "POST" => resp("202 Accepted", &[("Location", upload.as_str())], b""),
            _ => resp(
                "307 Temporary Redirect",
                &[("Location", target.as_str())],
                b"",
            ),
        }
    });
    let challenge = format!("Bearer realm=\"{}\",service=\"evil\"", realm.url("/token"));
    other.run(move |_| {
        resp(
            "401 Unauthorized",
            &[("WWW-Authenticate", challenge.as_str())],
            b"",
        )
    });
    realm.run(|_| resp("200 OK", &[], br#"{"token":"t"}"#));
    let c = client(alice());
    let r = reference(&reg);
    let d = Digest::of(b"x");
    let dir = tempfile::tempdir().unwrap();
    let err = c
        .pull_blob_to_file(
            &r,
            &d,
            1,
            &tempfile::tempfile().unwrap(),
            &dir.path().join("p"),
            &(),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Auth { .. }), "{msg}");
    assert!(
        msg.contains(&other.addr) && msg.contains(&reg.addr),
        "{msg}"
    );
    let err = c.push_blob_bytes(&r, b"{}").await.unwrap_err().to_string();
    assert!(
        err.contains(&other.addr) && err.contains(&reg.addr),
        "{err}"
    );
    assert!(
        realm.requests().is_empty(),
        "the foreign realm was contacted"
    );
    assert!(!other.requests().is_empty());
    assert!(other.requests().iter().all(|r| r.auth().is_none()));
}

#[tokio::test]
async fn same_origin_challenge_token_and_authorized_request() {
    let (reg, auth) = (Srv::new().await, Srv::new().await);
    let challenge = format!(
        "Bearer realm=\"{}\",service=\"test-registry\"",
        auth.url("/token")
    );
    reg.run(move |req| {
        if req.auth() == Some("Bearer tok-1") {
            manifest_ok()
        } else {
            resp(
                "401 Unauthorized",
                &[("WWW-Authenticate", challenge.as_str())],
                b"",
            )
        }
    });
    let want = basic_header("alice", "s3cret");
    auth.run(move |req| {
        if req.auth() == Some(want.as_str()) {
            resp("200 OK", &[], br#"{"token":"tok-1","expires_in":300}"#)
        } else {
            resp("401 Unauthorized", &[], b"")
        }
    });
    let c = client(alice());
    let m = c.get_manifest(&reference(&reg)).await.unwrap();
    assert_eq!(m.bytes, MANIFEST);
    let tok = auth.requests();
    assert_eq!(tok.len(), 1);
    assert!(tok[0].target.contains("service=test-registry"), "{tok:?}");
    assert!(
        tok[0]
            .target
            .contains("scope=repository%3Amodels%2Ftiny%3Apull"),
        "{tok:?}"
    );
    // The cached token is reused on the same origin.
    c.get_manifest(&reference(&reg)).await.unwrap();
    assert_eq!(auth.requests().len(), 1);
    assert_eq!(reg.requests().last().unwrap().auth(), Some("Bearer tok-1"));
}

#[tokio::test]
async fn plain_http_realm_for_an_https_registry_is_refused() {
    let realm = Srv::new().await;
    realm.run(|_| resp("200 OK", &[], br#"{"token":"t"}"#));
    let challenge = crate::credentials::parse_challenge(&format!(
        "Bearer realm=\"{}\",service=\"x\"",
        realm.url("/token")
    ))
    .unwrap();
    let err = crate::credentials::TokenCache::new()
        .authorization(
            &reqwest::Client::new(),
            "registry.example",
            &Url::parse("https://registry.example").unwrap(),
            &challenge,
            &["repository:m:pull".into()],
            alice().as_ref(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("plain http") && err.contains("registry.example"),
        "{err}"
    );
    assert!(realm.requests().is_empty());
}

#[tokio::test]
async fn huge_token_response_is_refused() {
    let (reg, auth) = (Srv::new().await, Srv::new().await);
    let challenge = format!("Bearer realm=\"{}\"", auth.url("/token"));
    reg.run(move |_| {
        resp(
            "401 Unauthorized",
            &[("WWW-Authenticate", challenge.as_str())],
            b"",
        )
    });
    auth.run(|_| resp_chunked("200 OK", &vec![b' '; 2 << 20]));
    let err = client(None)
        .get_manifest(&reference(&reg))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1048576") && err.contains("token service"),
        "{err}"
    );
}

/// hosts.toml with one pull mirror in front of `reg`.
fn mirror_config(reg: &Srv, mirror: &Srv) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join(&reg.addr)).unwrap();
    std::fs::write(
        d.path().join(&reg.addr).join("hosts.toml"),
        format!(
            "server = \"{}\"\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.url(""),
            mirror.url("")
        ),
    )
    .unwrap();
    d
}

fn auth_env(entries: &[(&str, &str, &str)]) -> EnvFn {
    let auths: Vec<String> = entries
        .iter()
        .map(|(h, u, p)| {
            format!(
                "\"{h}\":{{\"auth\":\"{}\"}}",
                STANDARD.encode(format!("{u}:{p}"))
            )
        })
        .collect();
    let json = format!("{{\"auths\":{{{}}}}}", auths.join(","));
    Arc::new(move |k: &str| (k == "DOCKER_AUTH_CONFIG").then(|| json.clone()))
}

fn requires(user: &'static str, pw: &'static str) -> impl Fn(&Req) -> Vec<u8> + Send + Sync {
    let want = basic_header(user, pw);
    move |req| {
        if req.auth() == Some(want.as_str()) {
            manifest_ok()
        } else {
            unauthorized_basic()
        }
    }
}

#[tokio::test]
async fn a_mirror_gets_its_own_hosts_credentials() {
    let (reg, mirror) = (Srv::new().await, Srv::new().await);
    reg.run(requires("reg-user", "reg-pw"));
    mirror.run(requires("mirror-user", "mirror-pw"));
    let hosts = mirror_config(&reg, &mirror);
    let env = auth_env(&[
        (&mirror.addr, "mirror-user", "mirror-pw"),
        (&reg.addr, "reg-user", "reg-pw"),
    ]);
    let c = client_with(
        CredentialStore::with_env(
            CredentialOptions {
                docker_config_dir: Some(NO_DOCKER_CONFIG.into()),
                ..Default::default()
            },
            env,
        ),
        TransportOptions {
            hosts_dir: Some(hosts.path().into()),
            ..Default::default()
        },
    );
    let m = c.get_manifest(&reference(&reg)).await.unwrap();
    assert_eq!(m.bytes, MANIFEST);
    let seen: Vec<_> = mirror
        .requests()
        .iter()
        .map(|r| r.auth().map(String::from))
        .collect();
    assert_eq!(
        seen,
        vec![None, Some(basic_header("mirror-user", "mirror-pw"))]
    );
    assert!(reg.requests().is_empty(), "served by the mirror");
}

#[tokio::test]
async fn a_mirror_never_gets_the_registrys_credentials() {
    let (reg, mirror) = (Srv::new().await, Srv::new().await);
    reg.run(requires("typed-user", "typed-pw"));
    mirror.run(requires("typed-user", "typed-pw"));
    let hosts = mirror_config(&reg, &mirror);
    // Stored credentials for the registry only, and -u/-p on the command line.
    let env = auth_env(&[(&reg.addr, "reg-user", "reg-pw")]);
    let c = client_with(
        CredentialStore::with_env(
            CredentialOptions {
                explicit: Some(Credential::Basic {
                    username: "typed-user".into(),
                    password: "typed-pw".into(),
                }),
                docker_config_dir: Some(NO_DOCKER_CONFIG.into()),
                ..Default::default()
            },
            env,
        ),
        TransportOptions {
            hosts_dir: Some(hosts.path().into()),
            ..Default::default()
        },
    );
    // The mirror refuses anonymous access; the registry serves with the typed credentials.
    let m = c.get_manifest(&reference(&reg)).await.unwrap();
    assert_eq!(m.bytes, MANIFEST);
    assert!(!mirror.requests().is_empty());
    assert!(
        mirror.requests().iter().all(|r| r.auth().is_none()),
        "{:?}",
        mirror.requests()
    );
    assert_eq!(
        reg.requests().last().unwrap().auth(),
        Some(basic_header("typed-user", "typed-pw").as_str())
    );
}

#[tokio::test]
async fn oversized_manifests_are_refused_without_buffering() {
    let big = vec![b' '; 5 << 20];
    for chunked in [false, true] {
        let reg = Srv::new().await;
        let body = big.clone();
        reg.run(move |_| {
            if chunked {
                resp_chunked("200 OK", &body)
            } else {
                resp("200 OK", &[], &body)
            }
        });
        let r = reference(&reg);
        let err = client(None).get_manifest(&r).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::TooLarge { .. }), "{msg}");
        assert!(
            msg.contains("4194304") && msg.contains(&r.to_string()),
            "{msg}"
        );
        // With a Content-Length it is refused up front; without one, while streaming.
        assert_eq!(msg.contains("announced 5242880"), !chunked, "{msg}");
    }
}

#[tokio::test]
async fn error_bodies_are_truncated_and_defanged() {
    let reg = Srv::new().await;
    reg.run(|_| {
        let mut body = b"denied \x1b[31mred\x1b[0m ".to_vec();
        body.extend(std::iter::repeat_n(b'x', 1 << 20));
        resp_chunked("400 Bad Request", &body)
    });
    let err = client(None)
        .list_tags(&reference(&reg))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.len() < 600, "{} chars", err.len());
    assert!(err.contains("denied") && err.contains("truncated"), "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
}

#[tokio::test]
async fn a_server_ignoring_range_yields_exactly_the_requested_bytes() {
    let reg = Srv::new().await;
    let blob: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 251) as u8).collect();
    let d = Digest::of(&blob);
    let body = blob.clone();
    reg.run(move |req| {
        assert!(req.header("range").is_some());
        resp("200 OK", &[], &body)
    });
    let c = client(None);
    let r = reference(&reg);
    let got = c.pull_blob_range(&r, &d, 1_000_000, 70_000).await.unwrap();
    assert_eq!(got, blob[1_000_000..1_070_000]);
    let tail = c.pull_blob_range(&r, &d, (2 << 20) - 5, 5).await.unwrap();
    assert_eq!(tail, blob[(2 << 20) - 5..]);
    // Past the end: an error, not a panic or a short read.
    let err = c.pull_blob_range(&r, &d, 2 << 20, 5).await.unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
    let err = c.pull_blob_range(&r, &d, u64::MAX, 2).await.unwrap_err();
    assert!(err.to_string().contains("overflows"), "{err}");
}

#[tokio::test]
async fn config_size_is_bounded() {
    let reg = Srv::new().await;
    let config = br#"{"descriptor":{}}"#.to_vec();
    let d = Digest::of(&config);
    let body = config.clone();
    reg.run(move |_| resp("200 OK", &[], &body));
    let c = client(None);
    let r = reference(&reg);
    assert_eq!(
        c.pull_config(&r, &d, config.len() as u64).await.unwrap(),
        config
    );
    let n = reg.requests().len();
    let err = c
        .pull_config(&r, &d, 5 << 20)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("4194304") && err.contains(&d.to_string()),
        "{err}"
    );
    assert_eq!(reg.requests().len(), n, "refused before any request");
    // A server sending more than the descriptor says is cut off.
    let err = c.pull_config(&r, &d, 4).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 4, .. }), "{err}");
}
