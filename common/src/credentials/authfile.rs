//! docker `config.json`, podman `auth.json` and oras registry-config files:
//! the same `auths` structure, looked up with docker's or podman's key rules.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::error::{IoContext, Result};
use crate::reference::DOCKER_HUB;

use super::{Credential, bad, helper_key};

/// One `auths` entry. Every field but `username` is a secret (`auth` is
/// base64 of `user:password`), so `Debug` is written by hand and redacts them.
#[derive(Default, Clone, Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Entry")
            .field("auth", &set(&self.auth))
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("identitytoken", &set(&self.identitytoken))
            .field("registrytoken", &set(&self.registrytoken))
            .finish()
    }
}

/// A parsed auth file; its `Debug` goes through [`Entry`]'s redacting one.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
    #[serde(default, rename = "credHelpers")]
    pub cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    pub creds_store: Option<String>,
    #[serde(skip)]
    name: String,
}

/// `https://host:port/v1/` → `host:port`; hub aliases → `docker.io`.
fn hostname(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    crate::reference::normalize_registry(host)
}

impl AuthFile {
    pub fn parse(bytes: &[u8], name: &str) -> Result<AuthFile> {
        let mut f: AuthFile =
            serde_json::from_slice(bytes).map_err(|e| bad(name, format!("not valid JSON: {e}")))?;
        f.name = name.to_string();
        Ok(f)
    }

    /// `None` when the file does not exist.
    pub fn load(path: &Path) -> Result<Option<AuthFile>> {
        match std::fs::read(path) {
            Ok(b) if b.iter().all(|c| c.is_ascii_whitespace()) => Ok(Some(AuthFile::default())),
            Ok(b) => AuthFile::parse(&b, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crate::Error::io("read", path, e)),
        }
    }

    fn credential(&self, key: &str, e: &Entry) -> Result<Option<Credential>> {
        if let Some(t) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(t.clone())));
        }
        if let Some(t) = e.registrytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::RegistryToken(t.clone())));
        }
        if let Some(a) = e.auth.as_ref().filter(|a| !a.is_empty()) {
            let decoded = STANDARD
                .decode(a.trim())
                .map_err(|_| bad(&self.name, format!("auths[{key:?}].auth is not base64")))?;
            let s = String::from_utf8(decoded)
                .map_err(|_| bad(&self.name, format!("auths[{key:?}].auth is not UTF-8")))?;
            let (u, p) = s.split_once(':').ok_or_else(|| {
                bad(
                    &self.name,
                    format!("auths[{key:?}].auth is not base64(user:password)"),
                )
            })?;
            return Ok(Some(Credential::Basic {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
        if let (Some(u), Some(p)) = (&e.username, &e.password) {
            return Ok(Some(Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            }));
        }
        Ok(None)
    }

    /// The helper that owns `registry`'s credentials: `credHelpers[host]`, else `credsStore`.
    pub fn helper_for(&self, registry: &str, key: &str) -> Option<&String> {
        self.cred_helpers
            .get(registry)
            .or_else(|| self.cred_helpers.get(key))
            .or(self.creds_store.as_ref())
    }

    /// docker's rule: the normalised key, else any key whose host part matches.
    pub fn docker_lookup(&self, registry: &str) -> Result<Option<Credential>> {
        let key = helper_key(registry);
        if let Some(e) = self.auths.get(&key).or_else(|| self.auths.get(registry)) {
            return self.credential(&key, e);
        }
        let want = crate::reference::normalize_registry(registry);
        for (k, e) in &self.auths {
            if hostname(k) == want {
                return self.credential(k, e);
            }
        }
        Ok(None)
    }

    /// podman's rule: `host/ns/repo` keys, most specific first, then the host; Hub is `docker.io`.
    pub fn podman_lookup(&self, registry: &str, repository: &str) -> Result<Option<Credential>> {
        let host = if registry == DOCKER_HUB {
            DOCKER_HUB
        } else {
            registry
        };
        let parts: Vec<&str> = repository.split('/').filter(|p| !p.is_empty()).collect();
        for n in (1..=parts.len()).rev() {
            let key = format!("{host}/{}", parts[..n].join("/"));
            if let Some(e) = self.auths.get(&key) {
                return self.credential(&key, e);
            }
        }
        if let Some(e) = self.auths.get(host) {
            return self.credential(host, e);
        }
        self.docker_lookup(registry)
    }
}

/// Sets (or removes, with `None`) `auths[key]` in a docker config file,
/// preserving every other key; written 0600 via temp file + rename.
pub fn write_auth(path: &Path, key: &str, cred: Option<&Credential>) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut doc: serde_json::Value = match std::fs::read(path) {
        Ok(b) if !b.iter().all(|c| c.is_ascii_whitespace()) => serde_json::from_slice(&b)
            .map_err(|e| bad(&path.display().to_string(), format!("not valid JSON: {e}")))?,
        _ => serde_json::json!({}),
    };
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| bad(&path.display().to_string(), "is not a JSON object"))?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let auths = auths
        .as_object_mut()
        .ok_or_else(|| bad(&path.display().to_string(), "auths is not an object"))?;
    match cred {
        None => {
            auths.remove(key);
        }
        Some(Credential::Basic { username, password }) => {
            auths.insert(
                key.into(),
                serde_json::json!({ "auth": STANDARD.encode(format!("{username}:{password}")) }),
            );
        }
        Some(Credential::IdentityToken(t)) => {
            auths.insert(key.into(), serde_json::json!({ "identitytoken": t }));
        }
        Some(Credential::RegistryToken(t)) => {
            auths.insert(key.into(), serde_json::json!({ "registrytoken": t }));
        }
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    let tmp = dir.join(format!(".config.json.tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .ctx("create", &tmp)?;
    let bytes = serde_json::to_vec_pretty(&doc).expect("JSON serialises");
    f.write_all(&bytes).ctx("write", &tmp)?;
    f.sync_all().ctx("fsync", &tmp)?;
    drop(f);
    std::fs::rename(&tmp, path).ctx("rename into place", path)?;
    Ok(())
}
