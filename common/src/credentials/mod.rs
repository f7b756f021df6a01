//! Registry credentials from where people already keep them, in docker's
//! order: explicit flags, `DOCKER_AUTH_CONFIG`, oras `--registry-config`
//! files, podman's `--authfile`/`REGISTRY_AUTH_FILE`, the docker config
//! (`credHelpers[host]` → `credsStore` → `auths`), podman's default
//! `auth.json`, then anonymous. `login` stores through the configured helper,
//! else into config.json (0600, atomic, other keys preserved).
//!
//! Secrets never reach a log line or an error message: [`Credential`]'s
//! `Debug` redacts them.

mod authfile;
mod helper;
mod token;

pub use token::{Challenge, TokenCache, parse_challenge};

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::reference::{DOCKER_HUB, DOCKER_HUB_AUTH_KEY};

use authfile::AuthFile;

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`).
    IdentityToken(String),
    /// A bearer token sent as-is (`registrytoken`).
    RegistryToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
            Credential::RegistryToken(_) => f.write_str("RegistryToken(<redacted>)"),
        }
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where to look, beyond the defaults.
#[derive(Debug, Default, Clone)]
pub struct CredentialOptions {
    /// docker's global `--config DIR` (else `$DOCKER_CONFIG`, else `~/.docker`).
    pub docker_config_dir: Option<PathBuf>,
    /// oras `--registry-config FILE`, in fallback order.
    pub registry_configs: Vec<PathBuf>,
    /// podman `--authfile` (else `REGISTRY_AUTH_FILE`).
    pub authfile: Option<PathBuf>,
    /// `-u/-p`, `--password-stdin`, `--identity-token`.
    pub explicit: Option<Credential>,
}

/// Where `login` put a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredIn {
    Helper(String),
    ConfigFile(PathBuf),
}

/// Environment lookups go through this so tests need not mutate the process environment.
pub type EnvFn = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

fn real_env() -> EnvFn {
    std::sync::Arc::new(|k: &str| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

pub struct CredentialStore {
    opts: CredentialOptions,
    env: EnvFn,
}

impl CredentialStore {
    pub fn new(opts: CredentialOptions) -> Self {
        CredentialStore {
            opts,
            env: real_env(),
        }
    }

    /// With an injected environment (tests).
    pub fn with_env(opts: CredentialOptions, env: EnvFn) -> Self {
        CredentialStore { opts, env }
    }

    pub fn docker_config_dir(&self) -> PathBuf {
        if let Some(d) = &self.opts.docker_config_dir {
            return d.clone();
        }
        if let Some(d) = (self.env)("DOCKER_CONFIG") {
            return PathBuf::from(d);
        }
        PathBuf::from((self.env)("HOME").unwrap_or_else(|| "/root".into())).join(".docker")
    }

    pub fn docker_config_path(&self) -> PathBuf {
        self.docker_config_dir().join("config.json")
    }

    fn podman_defaults(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        if let Some(d) = (self.env)("XDG_RUNTIME_DIR") {
            v.push(PathBuf::from(d).join("containers/auth.json"));
        }
        let cfg = (self.env)("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| (self.env)("HOME").map(|h| PathBuf::from(h).join(".config")));
        if let Some(c) = cfg {
            v.push(c.join("containers/auth.json"));
        }
        v
    }

    /// The credential for `registry` (normalised host, e.g. `docker.io`, `127.0.0.1:5000`) and `repository`.
    pub fn resolve(&self, registry: &str, repository: &str) -> Result<Option<Credential>> {
        if let Some(c) = &self.opts.explicit {
            return Ok(Some(c.clone()));
        }
        self.resolve_stored(registry, repository)
    }

    /// Like [`resolve`](Self::resolve) without the explicit `-u/-p` credential:
    /// for hosts the user did not name (hosts.toml mirrors), which must get
    /// their own stored credentials, not the ones typed for the registry.
    pub fn resolve_stored(&self, registry: &str, repository: &str) -> Result<Option<Credential>> {
        if let Some(json) = (self.env)("DOCKER_AUTH_CONFIG") {
            let f = AuthFile::parse(json.as_bytes(), "DOCKER_AUTH_CONFIG")?;
            if let Some(c) = f.docker_lookup(registry)? {
                return Ok(Some(c));
            }
        }
        for p in &self.opts.registry_configs {
            if let Some(f) = AuthFile::load(p)?
                && let Some(c) = self.lookup_docker_file(&f, registry)?
            {
                return Ok(Some(c));
            }
        }
        let authfile = self
            .opts
            .authfile
            .clone()
            .or_else(|| (self.env)("REGISTRY_AUTH_FILE").map(PathBuf::from));
        if let Some(p) = authfile
            && let Some(f) = AuthFile::load(&p)?
            && let Some(c) = f.podman_lookup(registry, repository)?
        {
            return Ok(Some(c));
        }
        if let Some(f) = AuthFile::load(&self.docker_config_path())?
            && let Some(c) = self.lookup_docker_file(&f, registry)?
        {
            return Ok(Some(c));
        }
        for p in self.podman_defaults() {
            if let Some(f) = AuthFile::load(&p)?
                && let Some(c) = f.podman_lookup(registry, repository)?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// docker's order within one config file: credHelpers[host] → credsStore → auths.
    fn lookup_docker_file(&self, f: &AuthFile, registry: &str) -> Result<Option<Credential>> {
        let key = helper_key(registry);
        if let Some(h) = f
            .cred_helpers
            .get(registry)
            .or_else(|| f.cred_helpers.get(&key))
        {
            return helper::get(h, &key);
        }
        if let Some(h) = &f.creds_store
            && let Some(c) = helper::get(h, &key)?
        {
            return Ok(Some(c));
        }
        f.docker_lookup(registry)
    }

    /// Stores a credential the way `docker login` would.
    pub fn store(&self, registry: &str, cred: &Credential) -> Result<StoredIn> {
        let path = self.docker_config_path();
        let f = AuthFile::load(&path)?.unwrap_or_default();
        let key = helper_key(registry);
        if let Some(h) = f.helper_for(registry, &key) {
            helper::store(h, &key, cred)?;
            return Ok(StoredIn::Helper(h.clone()));
        }
        authfile::write_auth(&path, &key, Some(cred))?;
        Ok(StoredIn::ConfigFile(path))
    }

    /// Removes a stored credential; returns whether one existed.
    pub fn erase(&self, registry: &str) -> Result<bool> {
        let path = self.docker_config_path();
        let f = AuthFile::load(&path)?.unwrap_or_default();
        let key = helper_key(registry);
        if let Some(h) = f.helper_for(registry, &key) {
            return helper::erase(h, &key);
        }
        let existed = f.docker_lookup(registry)?.is_some();
        if existed {
            authfile::write_auth(&path, &key, None)?;
        }
        Ok(existed)
    }
}

/// The server URL docker uses for a registry in helpers and config.json.
pub fn helper_key(registry: &str) -> String {
    if registry == DOCKER_HUB || registry == "index.docker.io" || registry == "registry-1.docker.io"
    {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

fn bad(what: &str, msg: impl fmt::Display) -> Error {
    Error::Credentials(format!("{what}: {msg}"))
}

#[cfg(test)]
mod tests;

/// The credential a docker config JSON document (a Kubernetes
/// `.dockerconfigjson` pull secret) holds for `registry`, from its `auths`
/// only: helpers it names are never run, since the document comes from
/// whoever may write secrets in a namespace, not from the node's admin.
pub fn from_docker_config_json(
    bytes: &[u8],
    name: &str,
    registry: &str,
) -> Result<Option<Credential>> {
    authfile::AuthFile::parse(bytes, name)?.docker_lookup(registry)
}
