//! OCI distribution client: authentication (challenge → Basic or Bearer token
//! with the right scopes), manifests, blobs with resumable chunked uploads and
//! Range-resumed downloads, cross-repo mounts, retries with exponential
//! backoff and jitter on 5xx/connection errors (never on auth errors), and
//! per-host transport settings including containerd `hosts.toml` mirrors.
//!
//! Blobs are always streamed: memory stays flat for any size. No
//! host-identifying headers are sent; credentials and tokens are never logged.

mod blobs;
mod hosts;
mod manifests;
mod source;

pub use hosts::{Endpoint, HostsConfig};
pub use manifests::{FetchedManifest, MAX_MANIFEST};
pub use source::RegistryBlob;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode, Url};

use crate::credentials::{CredentialStore, TokenCache, parse_challenge};
use crate::error::{Error, Result};
use crate::reference::Reference;

/// Per-invocation transport settings (oras-style flags plus hosts.toml).
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Force http:// (loopback registries use it by default, like docker).
    pub plain_http: bool,
    /// Skip TLS verification.
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// containerd certs.d layout: `<dir>/<host>/hosts.toml`.
    pub hosts_dir: Option<PathBuf>,
    /// Blobs moved in parallel.
    pub concurrency: usize,
    /// Blobs above this size are uploaded in resumable PATCH chunks of this size.
    pub chunk_size: u64,
    /// Attempts after the first on transient failures.
    pub retries: u32,
    /// Largest config blob read into memory ([`RegistryClient::pull_config`]).
    /// A config is a small JSON document; the manifest that names it is
    /// hostile input and may claim any size.
    pub max_config_size: u64,
    /// Settings for one registry (from the config file), on top of the above.
    pub registries: std::collections::BTreeMap<String, RegistryTransport>,
}

/// One registry's own transport settings: they add to the command's flags
/// (a flag's plain HTTP or CA applies to every registry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryTransport {
    pub plain_http: bool,
    /// A CA bundle trusted for this registry's own server (not its mirrors,
    /// which hosts.toml configures).
    pub ca_file: Option<PathBuf>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            plain_http: false,
            insecure: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            hosts_dir: None,
            concurrency: 4,
            chunk_size: 64 << 20,
            retries: 5,
            max_config_size: 4 << 20,
            registries: Default::default(),
        }
    }
}

/// Progress callbacks for byte counts.
pub trait Progress: Send + Sync {
    fn advance(&self, bytes: u64);
}

impl Progress for () {
    fn advance(&self, _bytes: u64) {}
}

/// What a blob push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The repository already had it (HEAD).
    Exists,
    /// Mounted from another repository, no bytes sent.
    Mounted,
    Uploaded {
        bytes_sent: u64,
    },
}

#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

type AuthLock = Arc<tokio::sync::Mutex<()>>;

struct Inner {
    opts: TransportOptions,
    creds: Arc<CredentialStore>,
    tokens: TokenCache,
    /// Authorization header per (endpoint origin + credential host, scope set), reused until a 401.
    auth: Mutex<HashMap<(String, String), HeaderValue>>,
    /// One token fetch at a time per auth key: concurrent blobs share it.
    auth_locks: Mutex<HashMap<(String, String), AuthLock>>,
    endpoints: Mutex<HashMap<String, Arc<Vec<Endpoint>>>>,
    /// Origins that have answered at least once: a connection refused there
    /// is a restart worth retrying; before that, on loopback, it is a registry
    /// that is not running, said at once.
    reached: Mutex<std::collections::HashSet<String>>,
}

/// The scopes a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    Pull,
    Push,
    /// Push to the target plus pull from another repository (cross-repo mount).
    PushMountFrom(String),
}

impl Access {
    fn scopes(&self, repo: &str) -> Vec<String> {
        match self {
            Access::Pull => vec![format!("repository:{repo}:pull")],
            Access::Push => vec![format!("repository:{repo}:pull,push")],
            Access::PushMountFrom(from) => vec![
                format!("repository:{repo}:pull,push"),
                format!("repository:{from}:pull"),
            ],
        }
    }
}

/// An error and whether trying again could help.
pub(crate) struct Attempt {
    pub err: Error,
    pub retry: bool,
}

impl From<Error> for Attempt {
    fn from(err: Error) -> Self {
        Attempt { err, retry: false }
    }
}

enum ConnectFailure {
    Refused,
    Unresolvable,
}

/// Why a request could not connect, where that decides whether to retry.
fn connect_failure(e: &reqwest::Error) -> Option<ConnectFailure> {
    if !e.is_connect() {
        return None;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return Some(ConnectFailure::Refused);
        }
        let text = s.to_string();
        if text.contains("failed to lookup address") || text.contains("Name or service not known") {
            return Some(ConnectFailure::Unresolvable);
        }
        source = s.source();
    }
    None
}

pub(crate) fn transient(registry: &str, e: reqwest::Error) -> Attempt {
    Attempt {
        err: Error::Registry {
            status: None,
            registry: registry.into(),
            message: format!("connection failed: {}", e.without_url()),
        },
        retry: true,
    }
}

impl RegistryClient {
    pub fn new(opts: TransportOptions, creds: Arc<CredentialStore>) -> Result<Self> {
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                opts,
                creds,
                tokens: TokenCache::new(),
                auth: Mutex::new(HashMap::new()),
                auth_locks: Mutex::new(HashMap::new()),
                endpoints: Mutex::new(HashMap::new()),
                reached: Mutex::new(std::collections::HashSet::new()),
            }),
        })
    }

    pub fn options(&self) -> &TransportOptions {
        &self.inner.opts
    }

    /// Endpoints for a registry: hosts.toml mirrors (if any), then the registry itself.
    pub(crate) fn endpoints(&self, registry: &str) -> Result<Arc<Vec<Endpoint>>> {
        if let Some(e) = self.inner.endpoints.lock().unwrap().get(registry) {
            return Ok(e.clone());
        }
        let eps = Arc::new(hosts::endpoints_for(registry, &self.inner.opts)?);
        self.inner
            .endpoints
            .lock()
            .unwrap()
            .insert(registry.to_string(), eps.clone());
        Ok(eps)
    }

    /// Sends a request built by `build` against `ep`, authenticating on a 401
    /// challenge and retrying once with the header. `build` is called per attempt.
    ///
    /// Credentials only ever go to `ep`'s own origin and to the token realm a
    /// response *from that origin* named: a URL the builder produced on
    /// another origin (an upload `Location`) is sent without Authorization,
    /// and a 401 from another origin (directly or at the end of a redirect)
    /// is an error, never answered with credentials.
    pub(crate) async fn send(
        &self,
        r: &Reference,
        ep: &Endpoint,
        access: &Access,
        build: &(dyn Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder + Send + Sync),
    ) -> std::result::Result<Response, Attempt> {
        let host = &ep.cred_host;
        let scopes = access.scopes(&r.repository);
        let key = (format!("{} {}", ep.origin, host), scopes.join(" "));
        let cached = self.inner.auth.lock().unwrap().get(&key).cloned();
        let resp = self.dispatch(r, ep, build, cached.as_ref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        foreign_challenge(ep, &resp)?;
        let lock = self
            .inner
            .auth_locks
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        let current = self.inner.auth.lock().unwrap().get(&key).cloned();
        let mut resp = resp;
        if let Some(header) = current.filter(|c| Some(c) != cached.as_ref()) {
            // Another request obtained a fresh header while we waited: use it.
            resp = self.dispatch(r, ep, build, Some(&header)).await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            foreign_challenge(ep, &resp)?;
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
            .ok_or_else(|| {
                Attempt::from(Error::Auth {
                    registry: host.clone(),
                    message:
                        "the registry answered 401 without a usable WWW-Authenticate challenge"
                            .into(),
                    hint: None,
                })
            })?;
        drop(resp);
        // Only the registry itself gets the credential given on the command line.
        let cred = if ep.mirror {
            self.inner.creds.resolve_stored(host, &r.repository)?
        } else {
            self.inner.creds.resolve(host, &r.repository)?
        };
        let origin = Url::parse(&ep.origin).map_err(|_| {
            Attempt::from(Error::Invalid(format!("endpoint {} is not a URL", ep.base)))
        })?;
        if cached.is_some() {
            self.inner.tokens.invalidate(host, &origin, &scopes);
        }
        let value = self
            .inner
            .tokens
            .authorization(
                &ep.token_client,
                host,
                &origin,
                &challenge,
                &scopes,
                cred.as_ref(),
            )
            .await?;
        let mut header = HeaderValue::from_str(&value).map_err(|_| {
            Attempt::from(Error::Auth {
                registry: host.clone(),
                message: "the token contains invalid characters".into(),
                hint: None,
            })
        })?;
        // Keeps it out of any Debug output of the request or header map.
        header.set_sensitive(true);
        self.inner.auth.lock().unwrap().insert(key, header.clone());
        let resp = self.dispatch(r, ep, build, Some(&header)).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            foreign_challenge(ep, &resp)?;
            // A wrong password is said as such; only a missing one asks for a login.
            let (message, hint) = if cred.is_some() {
                (
                    format!(
                        "wrong username or password for {host} (the registry rejected the credentials)"
                    ),
                    None,
                )
            } else {
                (
                    "the registry requires credentials".to_string(),
                    Some(format!("run `docker login {host}` (or pass -u/-p) first")),
                )
            };
            return Err(Error::Auth {
                registry: host.clone(),
                message,
                hint,
            }
            .into());
        }
        Ok(resp)
    }

    /// One request: `header` is attached only when the URL is on `ep`'s origin.
    async fn dispatch(
        &self,
        r: &Reference,
        ep: &Endpoint,
        build: &(dyn Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder + Send + Sync),
        header: Option<&HeaderValue>,
    ) -> std::result::Result<Response, Attempt> {
        let (client, req) = build(&ep.client, &ep.base).build_split();
        let mut req = req.map_err(|e| {
            Attempt::from(Error::Registry {
                status: None,
                registry: r.registry.clone(),
                message: format!("cannot build a request: {}", e.without_url()),
            })
        })?;
        let own = origin_of(req.url()).as_deref() == Some(ep.origin.as_str());
        match header {
            Some(h) if own => {
                req.headers_mut().insert(AUTHORIZATION, h.clone());
            }
            Some(_) => tracing::debug!(
                endpoint = %ep.origin,
                url_host = req.url().host_str().unwrap_or(""),
                "request leaves the registry's origin: sent without credentials"
            ),
            None => {}
        }
        let host = req.url().host_str().unwrap_or_default().to_string();
        let hostport = match req.url().port_or_known_default() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let resp = match client.execute(req).await {
            Ok(resp) => resp,
            Err(e) => {
                let never_answered = !self.inner.reached.lock().unwrap().contains(&ep.origin);
                return Err(match connect_failure(&e) {
                    Some(ConnectFailure::Refused)
                        if never_answered && crate::reference::is_loopback_host(&host) =>
                    {
                        Attempt {
                            err: Error::Registry {
                                status: None,
                                registry: r.registry.clone(),
                                message: format!(
                                    "cannot connect to {hostport} (connection refused) — is the registry running?"
                                ),
                            },
                            retry: false,
                        }
                    }
                    Some(ConnectFailure::Unresolvable) => Attempt {
                        err: Error::Registry {
                            status: None,
                            registry: r.registry.clone(),
                            message: format!("cannot resolve {host} — is the registry name right?"),
                        },
                        retry: false,
                    },
                    _ => transient(&r.registry, e),
                });
            }
        };
        self.inner.reached.lock().unwrap().insert(ep.origin.clone());
        tracing::debug!(registry = %r.registry, status = %resp.status(), "registry response");
        Ok(resp)
    }

    /// Runs `f` with exponential backoff and jitter (backon) while it fails transiently.
    pub(crate) async fn retry<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Attempt>>,
    {
        use backon::{ExponentialBuilder, Retryable};
        let retries = std::sync::atomic::AtomicUsize::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.inner.opts.retries as usize)
            .with_jitter();
        f.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|a: &Attempt| a.retry)
            .notify(|a: &Attempt, wait: Duration| {
                // One line by default; each retry at debug.
                if retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "{what}: {}; retrying (up to {} times)",
                        a.err,
                        self.inner.opts.retries
                    );
                }
                tracing::debug!("{what}: {} (retrying in {:.1}s)", a.err, wait.as_secs_f64())
            })
            .await
            .map_err(|a| a.err)
    }
}

/// `scheme://host[:port]` (default port omitted); `None` for URLs without a host.
pub(crate) fn origin_of(url: &Url) -> Option<String> {
    let o = url.origin();
    o.is_tuple().then(|| o.ascii_serialization())
}

/// `host[:port]` of a URL, for messages.
fn authority(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => url.scheme().to_string(),
    }
}

/// A 401 from anywhere but the endpoint's origin (an upload Location on
/// another host, or where a redirect led) is refused: answering it would hand
/// our credentials to a party that merely asked for them.
fn foreign_challenge(ep: &Endpoint, resp: &Response) -> std::result::Result<(), Attempt> {
    if origin_of(resp.url()).as_deref() == Some(ep.origin.as_str()) {
        return Ok(());
    }
    let endpoint_host = Url::parse(&ep.origin)
        .map(|u| authority(&u))
        .unwrap_or_else(|_| ep.origin.clone());
    Err(Error::Auth {
        registry: ep.cred_host.clone(),
        message: format!(
            "{} (reached from {endpoint_host}) asked for credentials; \
             credentials for {} are only sent to {endpoint_host} and its token service",
            authority(resp.url()),
            ep.cred_host
        ),
        hint: None,
    }
    .into())
}

/// How much of an error body is read (the rest is dropped with the connection).
const ERROR_BODY_READ: usize = 64 << 10;
/// How much of it ends up in the message.
const ERROR_BODY_SHOWN: usize = 300;

/// Reads at most `limit` bytes of a body, then stops (dropping the
/// connection); the flag says whether it was cut short.
async fn read_prefix(resp: Response, limit: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit - out.len();
        if chunk.len() >= room {
            out.extend_from_slice(&chunk[..room]);
            return (out, true);
        }
        out.extend_from_slice(&chunk);
    }
    (out, false)
}

/// Reads a whole body that must not exceed `limit` bytes: a larger
/// `Content-Length` is refused before reading, and a body without one (or
/// lying about it) is counted while it streams, so no more than `limit`
/// bytes are ever held. `what` names the document and the reference.
pub(crate) async fn read_capped(
    registry: &str,
    resp: Response,
    limit: u64,
    what: &str,
) -> std::result::Result<Vec<u8>, Attempt> {
    let too_large = |declared| {
        Attempt::from(Error::TooLarge {
            what: what.to_string(),
            limit,
            declared,
        })
    };
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(declared));
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(cap));
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transient(registry, e))?;
        match out.len().checked_add(chunk.len()) {
            Some(n) if n <= cap => out.extend_from_slice(&chunk),
            _ => return Err(too_large(declared)),
        }
    }
    Ok(out)
}

/// Turns an unexpected status into an error; 5xx and 429 are transient.
/// Only a bounded prefix of the body is read, and control characters are
/// replaced so a hostile server cannot drive the user's terminal.
pub(crate) async fn status_error(r: &Reference, what: &str, resp: Response) -> Attempt {
    let status = resp.status();
    let (body, cut) = read_prefix(resp, ERROR_BODY_READ).await;
    let body = String::from_utf8_lossy(&body);
    let mut detail: String = body
        .trim()
        .chars()
        .take(ERROR_BODY_SHOWN)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cut || body.trim().chars().count() > ERROR_BODY_SHOWN {
        detail.push_str(" …(truncated)");
    }
    let retry = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    let err = match status {
        StatusCode::FORBIDDEN => Error::Auth {
            registry: r.registry.clone(),
            message: format!("access to {} denied ({what})", r.repository),
            hint: Some(format!(
                "check your permissions, or run `docker login {}`",
                r.registry
            )),
        },
        _ => Error::Registry {
            status: Some(status.as_u16()),
            registry: r.registry.clone(),
            message: format!("{what}: {status} {}", detail.trim()),
        },
    };
    Attempt { err, retry }
}

#[cfg(test)]
mod branch_tests;
#[cfg(test)]
mod tests;
