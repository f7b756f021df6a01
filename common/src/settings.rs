//! The user's config file: `$MODELPACK_CONFIG`, else
//! `$XDG_CONFIG_HOME/modelpack/config.toml`, else `~/.config/modelpack/config.toml`.
//!
//! Defaults for every verb, and per-registry settings — the transport
//! (plain HTTP, a private CA), which identifier family a registry needs
//! (Harbor ≤ 2.15 recognises models only by the legacy `vnd.cnai.*` types),
//! the key its models must be signed with:
//!
//! ```toml
//! storage-dir = "/data/modelpack"      # below --storage-dir and $MODELPACK_HOME
//! concurrency = 8                      # below -c and $MODELPACK_CONCURRENCY
//!
//! [registries."harbor.example.com"]
//! legacy-cnai = true
//! ca-file = "certs/harbor-ca.pem"      # relative to this file
//! verify-key = "/etc/modelpack/keys/release.pub"   # pull only signed models
//!
//! [registries."registry.lab:5000"]
//! plain-http = true
//! ```
//!
//! A flag wins over its environment variable, which wins over this file.
//! Unknown keys are errors naming the file, so a typo does not silently
//! leave a setting off. A missing default file is no settings; a missing
//! `$MODELPACK_CONFIG` is an error, since the user asked for that file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::media::Family;
use crate::registry::RegistryTransport;

/// The most bytes of config file we read.
const MAX_CONFIG_FILE: u64 = 1 << 20;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// The store directory when neither `--storage-dir` nor `$MODELPACK_HOME` names one.
    #[serde(default)]
    pub storage_dir: Option<PathBuf>,
    /// Blobs (and layers) moved in parallel when `-c` and `$MODELPACK_CONCURRENCY` are unset.
    #[serde(default)]
    pub concurrency: Option<u16>,
    #[serde(default)]
    pub registries: BTreeMap<String, RegistrySettings>,
    /// The file these came from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegistrySettings {
    /// Write the legacy cnai identifiers for this registry (Harbor ≤ 2.15).
    #[serde(default)]
    pub legacy_cnai: bool,
    /// Pull from this registry only models signed by this key (as
    /// `pull --verify-key` does), unless the command names another.
    #[serde(default)]
    pub verify_key: Option<PathBuf>,
    /// Talk plain HTTP to this registry (as `--plain-http` does for one command).
    #[serde(default)]
    pub plain_http: bool,
    /// Trust this CA bundle (PEM) for this registry, beside the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The most blobs in flight a setting may ask for.
pub const MAX_CONCURRENCY: u16 = 64;

impl Settings {
    /// The config file to read and whether the user named it explicitly.
    pub fn location() -> Option<(PathBuf, bool)> {
        if let Some(p) = std::env::var_os("MODELPACK_CONFIG").filter(|p| !p.is_empty()) {
            return Some((PathBuf::from(p), true));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some((base.join("modelpack/config.toml"), false))
    }

    /// Loads the user's settings (empty when there is no file).
    pub fn load() -> Result<Settings> {
        match Settings::location() {
            None => Ok(Settings::default()),
            Some((path, explicit)) => Settings::load_from(&path, explicit),
        }
    }

    pub fn load_from(path: &Path, must_exist: bool) -> Result<Settings> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                return Ok(Settings::default());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    what: format!("config file {} (named by $MODELPACK_CONFIG)", path.display()),
                    hint: Some(
                        "create it, or unset MODELPACK_CONFIG to read ~/.config/modelpack/config.toml"
                            .into(),
                    ),
                });
            }
            Err(e) => return Err(Error::io("open config file", path, e)),
        };
        let mut text = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_CONFIG_FILE + 1),
            &mut text,
        )
        .map_err(|e| Error::io("read config file", path, e))?;
        if text.len() as u64 > MAX_CONFIG_FILE {
            return Err(Error::TooLarge {
                what: format!("config file {}", path.display()),
                limit: MAX_CONFIG_FILE,
                declared: None,
            });
        }
        let text = String::from_utf8(text)
            .map_err(|_| Error::Invalid(format!("{} is not UTF-8", path.display())))?;
        let mut s: Settings = toml::from_str(&text).map_err(|e| {
            Error::Invalid(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        if let Some(n) = s.concurrency
            && !(1..=MAX_CONCURRENCY).contains(&n)
        {
            return Err(Error::Invalid(format!(
                "{}: concurrency = {n}: must be 1 to {MAX_CONCURRENCY}",
                path.display()
            )));
        }
        // Relative paths in the file mean relative to the file, not to
        // wherever a command happens to run.
        let base = path.parent().unwrap_or(Path::new("."));
        let anchor = |p: &mut Option<PathBuf>| {
            if let Some(x) = p.as_mut()
                && x.is_relative()
            {
                *x = base.join(&*x);
            }
        };
        anchor(&mut s.storage_dir);
        for r in s.registries.values_mut() {
            anchor(&mut r.verify_key);
            anchor(&mut r.ca_file);
        }
        s.source = Some(path.to_path_buf());
        Ok(s)
    }

    /// The per-registry transport settings, for [`TransportOptions::registries`](crate::registry::TransportOptions).
    pub fn transport_by_registry(&self) -> BTreeMap<String, RegistryTransport> {
        self.registries
            .iter()
            .filter(|(_, r)| r.plain_http || r.ca_file.is_some())
            .map(|(host, r)| {
                (
                    host.clone(),
                    RegistryTransport {
                        plain_http: r.plain_http,
                        ca_file: r.ca_file.clone(),
                    },
                )
            })
            .collect()
    }

    /// The identifier family `host` (`registry[:port]`) is configured for, if any.
    pub fn family_for(&self, host: &str) -> Option<Family> {
        self.registries
            .get(host)
            .and_then(|r| r.legacy_cnai.then_some(Family::Cnai))
    }

    /// The key models pulled from `host` must be signed with, if set.
    pub fn verify_key_for(&self, host: &str) -> Option<&Path> {
        self.registries
            .get(host)
            .and_then(|r| r.verify_key.as_deref())
    }

    /// "(set in FILE)" for messages.
    pub fn where_set(&self) -> String {
        match &self.source {
            Some(p) => format!("set in {}", p.display()),
            None => "default".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_and_typos() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.toml");
        std::fs::write(
            &p,
            "[registries.\"harbor.example.com\"]\nlegacy-cnai = true\n",
        )
        .unwrap();
        let s = Settings::load_from(&p, true).unwrap();
        assert_eq!(s.family_for("harbor.example.com"), Some(Family::Cnai));
        assert_eq!(s.family_for("ghcr.io"), None);
        std::fs::write(&p, "[registries.\"h\"]\nlegacy_cnia = true\n").unwrap();
        let err = Settings::load_from(&p, true).unwrap_err().to_string();
        assert!(
            err.contains("config.toml") && err.contains("legacy_cnia"),
            "{err}"
        );
        let missing = d.path().join("none.toml");
        assert!(
            Settings::load_from(&missing, false)
                .unwrap()
                .registries
                .is_empty()
        );
        assert!(Settings::load_from(&missing, true).is_err());
    }

    #[test]
    fn defaults_and_transport_with_paths_relative_to_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.toml");
        std::fs::write(
            &p,
            "storage-dir = \"store\"\nconcurrency = 8\n[registries.\"lab:5000\"]\nplain-http = true\n[registries.\"corp.example\"]\nca-file = \"certs/ca.pem\"\n[registries.\"ghcr.io\"]\nlegacy-cnai = true\n",
        )
        .unwrap();
        let s = Settings::load_from(&p, true).unwrap();
        assert_eq!(s.storage_dir, Some(d.path().join("store")));
        assert_eq!(s.concurrency, Some(8));
        let t = s.transport_by_registry();
        assert_eq!(t.len(), 2, "only registries with transport settings");
        assert!(t["lab:5000"].plain_http && t["lab:5000"].ca_file.is_none());
        assert_eq!(
            t["corp.example"].ca_file,
            Some(d.path().join("certs/ca.pem"))
        );
        for bad in ["concurrency = 0\n", "concurrency = 65\n"] {
            std::fs::write(&p, bad).unwrap();
            let err = Settings::load_from(&p, true).unwrap_err().to_string();
            assert!(
                err.contains("config.toml") && err.contains("1 to 64"),
                "{err}"
            );
        }
    }
}
