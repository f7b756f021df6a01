//! The config file (TOML). Our own keys at the top level and in
//! `[registry]`; the lazy path's knobs in the shape Nydus users know, as a
//! `[nydus]` table parsed into `nydus_api::ConfigV2` (the same fields
//! nydusd's JSON config has), so a nydus-snapshotter user finds them where
//! they expect:
//!
//! ```toml
//! [lazy]
//! enable = true                      # ours: Nydus has no "eager instead" switch
//!
//! [nydus]
//! version = 2
//! [nydus.backend]
//! type = "registry"
//! [nydus.backend.registry]
//! host = "unused"                    # per model, from the Prepare's labels
//! repo = "unused"
//! timeout = 60                       # seconds a read waits for a missing chunk
//! [nydus.cache]
//! type = "blobcache"
//! [nydus.cache.prefetch]
//! enable = true
//! threads = 2                        # blobs prefetched at once
//! bandwidth_limit = 0                # bytes/s over all blobs, 0 = unlimited
//! ```
//!
//! What `ConfigV2` cannot say, and how we extend around it: the registry
//! backend's host and repo come per model from the Prepare's labels, and its
//! credentials from the node's docker config / helpers (`[registry]`), never
//! from the file; mirrors come from containerd's `hosts.toml`
//! (`registry.hosts_dir`) rather than `backend.registry.mirrors`; the cache
//! directory is the snapshotter's root (a `cache.filecache.work_dir`
//! elsewhere is refused, so two places never disagree).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::lazy::LazyOptions;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub root: Option<PathBuf>,
    pub address: Option<PathBuf>,
    pub concurrency: Option<usize>,
    /// No longer used (eager layers are not re-chunked on the node); accepted
    /// so existing files load, with a warning.
    pub chunk_size: Option<u64>,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub lazy: LazyConfig,
    pub nydus: Option<nydus_api::ConfigV2>,
    #[serde(default)]
    pub csi: CsiConfig,
    /// The node's signing policy: registry host (or `"*"`) → public keys
    /// (PEM); a model from a listed registry is attached only when it has an
    /// OpenSSF Model Signing signature that verifies with one of them
    /// (docs/signing.md).
    ///
    /// ```toml
    /// [signing]
    /// "registry.example.com" = ["/etc/modelpack/keys/release.pub"]
    /// ```
    #[serde(default)]
    pub signing: std::collections::BTreeMap<String, Vec<PathBuf>>,
}

/// The CSI node service (docs/kubernetes.md): off unless an address is set.
///
/// ```toml
/// [csi]
/// address = "/var/lib/kubelet/plugins/modelpack.csi.modelpack.dev/csi.sock"
/// node_id = "node-1"                 # default: $NODE_NAME, else the hostname
/// driver_name = "modelpack.csi.modelpack.dev"
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsiConfig {
    /// A socket path; a `unix://` prefix is accepted (as the flag accepts it).
    #[serde(default, deserialize_with = "socket_path")]
    pub address: Option<PathBuf>,
    pub node_id: Option<String>,
    pub driver_name: Option<String>,
}

/// The path of a unix socket given as `PATH` or `unix://PATH` (the form
/// kubelet's and csi-sanity's `--csi-address` use).
pub fn strip_unix_scheme(s: &str) -> PathBuf {
    PathBuf::from(s.strip_prefix("unix://").unwrap_or(s))
}

fn socket_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|s| strip_unix_scheme(&s)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// containerd certs.d layout (mirrors, CA, plain-http per host).
    pub hosts_dir: Option<PathBuf>,
    /// Where the node's docker config.json lives; credentials are read from there, never from labels.
    pub docker_config_dir: Option<PathBuf>,
    #[serde(default)]
    pub plain_http: bool,
    #[serde(default)]
    pub insecure: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LazyConfig {
    /// Commit model layers with a bound chunk index at Prepare without fetching them.
    #[serde(default = "yes")]
    pub enable: bool,
}

impl Default for LazyConfig {
    fn default() -> Self {
        LazyConfig { enable: true }
    }
}

fn yes() -> bool {
    true
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(p) = path else {
            return Ok(Config::default());
        };
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config {}", p.display()))
    }

    /// The lazy path's options: our `[lazy]` switch plus the Nydus knobs.
    pub fn lazy_options(&self, root: &Path) -> Result<LazyOptions> {
        let mut o = LazyOptions {
            enable: self.lazy.enable,
            ..LazyOptions::default()
        };
        let Some(n) = &self.nydus else {
            return Ok(o);
        };
        if n.version != 2 {
            bail!(
                "[nydus] version {} is not supported (use version = 2)",
                n.version
            );
        }
        if let Some(b) = &n.backend {
            if b.backend_type != "registry" {
                bail!(
                    "[nydus.backend] type {:?}: only \"registry\" is supported",
                    b.backend_type
                );
            }
            if let Some(r) = &b.registry {
                o.read_timeout = Duration::from_secs(u64::from(r.timeout.max(1)));
                if r.auth.is_some() || r.registry_token.is_some() {
                    bail!(
                        "[nydus.backend.registry] auth/registry_token: credentials come from the node's docker config (registry.docker_config_dir), never from this file"
                    );
                }
            }
        }
        if let Some(c) = &n.cache {
            o.prefetch = c.prefetch.enable;
            o.prefetch_threads = c.prefetch.threads_count.max(1);
            // Nydus's unit: bytes per second over the whole prefetch.
            o.prefetch_bandwidth = u64::from(c.prefetch.bandwidth_limit);
            if let Some(fc) = &c.file_cache
                && !fc.work_dir.is_empty()
                && fc.work_dir != "."
                && Path::new(&fc.work_dir) != root
            {
                bail!(
                    "[nydus.cache.filecache] work_dir {:?}: the cache is the snapshotter root {} (leave work_dir out)",
                    fc.work_dir,
                    root.display()
                );
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csi_address_accepts_the_unix_scheme_like_the_flag() {
        for text in [
            "[csi]\naddress = \"unix:///var/lib/kubelet/plugins/x/csi.sock\"\n",
            "[csi]\naddress = \"/var/lib/kubelet/plugins/x/csi.sock\"\n",
        ] {
            let c: Config = toml::from_str(text).unwrap();
            assert_eq!(
                c.csi.address.as_deref(),
                Some(Path::new("/var/lib/kubelet/plugins/x/csi.sock")),
                "{text}"
            );
        }
        let c: Config = toml::from_str("[csi]\nnode_id = \"n\"\n").unwrap();
        assert_eq!(c.csi.address, None);
    }

    #[test]
    fn the_shipped_configs_parse() {
        for (name, text) in [
            (
                "packaging/kubernetes/config.toml",
                include_str!("../../packaging/kubernetes/config.toml"),
            ),
            (
                "packaging/snapshotter/config.toml",
                include_str!("../../packaging/snapshotter/config.toml"),
            ),
        ] {
            let c: Config = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            c.lazy_options(Path::new("/var/lib/modelpack-snapshotter"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            if name.contains("kubernetes") {
                assert!(c.csi.address.is_some(), "{name} serves CSI");
            }
        }
    }

    #[test]
    fn nydus_shaped_knobs_set_the_lazy_options_and_credentials_in_the_file_are_refused() {
        let c: Config = toml::from_str(
            r#"
            [nydus]
            version = 2
            [nydus.backend]
            type = "registry"
            [nydus.backend.registry]
            host = "x"
            repo = "y"
            timeout = 7
            [nydus.cache]
            type = "blobcache"
            [nydus.cache.prefetch]
            enable = false
            threads = 5
            bandwidth_limit = 1048576
            "#,
        )
        .unwrap();
        let o = c.lazy_options(Path::new("/r")).unwrap();
        assert_eq!(o.read_timeout, Duration::from_secs(7));
        assert!(!o.prefetch);
        assert_eq!(o.prefetch_threads, 5);
        assert_eq!(o.prefetch_bandwidth, 1 << 20);
        assert!(o.enable);

        let d = Config::default().lazy_options(Path::new("/r")).unwrap();
        assert!(
            d.enable && d.prefetch,
            "lazy and prefetch are on by default"
        );

        let off: Config = toml::from_str("[lazy]\nenable = false\n").unwrap();
        assert!(!off.lazy_options(Path::new("/r")).unwrap().enable);

        let auth: Config = toml::from_str(
            "[nydus]\nversion = 2\n[nydus.backend]\ntype = \"registry\"\n[nydus.backend.registry]\nhost = \"x\"\nrepo = \"y\"\nauth = \"dXNlcjpwYXNz\"\n",
        )
        .unwrap();
        let err = auth.lazy_options(Path::new("/r")).unwrap_err().to_string();
        assert!(err.contains("docker config"), "{err}");
        assert!(
            !err.contains("dXNlcjpwYXNz"),
            "the credential is not echoed"
        );

        let oss: Config =
            toml::from_str("[nydus]\nversion = 2\n[nydus.backend]\ntype = \"oss\"\n").unwrap();
        assert!(oss.lazy_options(Path::new("/r")).is_err());
        assert!(toml::from_str::<Config>("bogus = 1\n").is_err());
    }
}
