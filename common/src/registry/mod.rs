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

pub use hosts::{Endpoint, HostsConfig};
pub use manifests::FetchedManifest;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

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
    /// Authorization header per (registry, scope set), reused until a 401.
    auth: Mutex<HashMap<(String, String), HeaderValue>>,
    /// One token fetch at a time per (registry, scope set): concurrent blobs share it.
    auth_locks: Mutex<HashMap<(String, String), AuthLock>>,
    endpoints: Mutex<HashMap<String, Arc<Vec<Endpoint>>>>,
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

pub(crate) fn transient(registry: &str, e: reqwest::Error) -> Attempt {
    Attempt {
        err: Error::Registry {
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
    pub(crate) async fn send(
        &self,
        r: &Reference,
        ep: &Endpoint,
        access: &Access,
        build: &(dyn Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder + Send + Sync),
    ) -> std::result::Result<Response, Attempt> {
        let registry = &r.registry;
        let scopes = access.scopes(&r.repository);
        let key = (registry.clone(), scopes.join(" "));
        let cached = self.inner.auth.lock().unwrap().get(&key).cloned();
        let mut req = build(&ep.client, &ep.base);
        if let Some(h) = &cached {
            req = req.header(AUTHORIZATION, h.clone());
        }
        let resp = req.send().await.map_err(|e| transient(registry, e))?;
        tracing::debug!(registry = %registry, status = %resp.status(), "registry response");
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
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
        if let Some(header) = current.filter(|c| Some(c) != cached.as_ref()) {
            // Another request obtained a fresh header while we waited: use it.
            let resp = build(&ep.client, &ep.base)
                .header(AUTHORIZATION, header)
                .send()
                .await
                .map_err(|e| transient(registry, e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
            .ok_or_else(|| {
                Attempt::from(Error::Auth {
                    registry: registry.clone(),
                    message:
                        "the registry answered 401 without a usable WWW-Authenticate challenge"
                            .into(),
                    hint: None,
                })
            })?;
        let cred = self.inner.creds.resolve(registry, &r.repository)?;
        if cached.is_some() {
            self.inner.tokens.invalidate(registry, &scopes);
        }
        let value = self
            .inner
            .tokens
            .authorization(&ep.client, registry, &challenge, &scopes, cred.as_ref())
            .await?;
        let header = HeaderValue::from_str(&value).map_err(|_| {
            Attempt::from(Error::Auth {
                registry: registry.clone(),
                message: "the token contains invalid characters".into(),
                hint: None,
            })
        })?;
        self.inner.auth.lock().unwrap().insert(key, header.clone());
        let resp = build(&ep.client, &ep.base)
            .header(AUTHORIZATION, header)
            .send()
            .await
            .map_err(|e| transient(registry, e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let message = if cred.is_some() {
                "the registry rejected the credentials"
            } else {
                "the registry requires credentials"
            };
            return Err(Error::Auth {
                registry: registry.clone(),
                message: message.into(),
                hint: Some(format!(
                    "run `docker login {registry}` (or pass -u/-p) first"
                )),
            }
            .into());
        }
        Ok(resp)
    }

    /// Runs `f` with exponential backoff and jitter (backon) while it fails transiently.
    pub(crate) async fn retry<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Attempt>>,
    {
        use backon::{ExponentialBuilder, Retryable};
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.inner.opts.retries as usize)
            .with_jitter();
        f.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|a: &Attempt| a.retry)
            .notify(|a: &Attempt, wait: Duration| {
                tracing::warn!("{what}: {} (retrying in {:.1}s)", a.err, wait.as_secs_f64())
            })
            .await
            .map_err(|a| a.err)
    }
}

/// Turns an unexpected status into an error; 5xx and 429 are transient.
pub(crate) async fn status_error(r: &Reference, what: &str, resp: Response) -> Attempt {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let detail: String = body.chars().take(300).collect();
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
            registry: r.registry.clone(),
            message: format!("{what}: {status} {}", detail.trim()),
        },
    };
    Attempt { err, retry }
}

#[cfg(test)]
mod tests;
