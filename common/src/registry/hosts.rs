//! Per-host transport: scheme, TLS settings and containerd `hosts.toml`
//! mirrors (`<hosts_dir>/<host>/hosts.toml`), so a Dragonfly or Spegel mirror
//! on a node is used the way containerd uses it: mirrors with the needed
//! capability first, the registry itself last.

use std::path::Path;

use reqwest::redirect::Policy;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::reference::{DOCKER_HUB, DOCKER_HUB_API_HOST, is_loopback_host};

use super::TransportOptions;

/// One place to send requests for a registry.
#[derive(Clone)]
pub struct Endpoint {
    /// `scheme://host[:port][/prefix]`; request paths (`/v2/...`) are appended.
    pub base: String,
    pub client: reqwest::Client,
    /// For token requests only: follows redirects within the realm's origin
    /// and no further, because a 307/308 would replay a refresh-token form
    /// body to whatever host it names (reqwest strips headers, not bodies).
    pub(crate) token_client: reqwest::Client,
    /// The host whose credentials this endpoint gets: the registry's name for
    /// the registry itself, the mirror's own `host[:port]` for a mirror (as
    /// containerd does). A mirror is another party; it never sees the
    /// upstream's credentials.
    pub cred_host: String,
    /// `scheme://host[:port]` of `base`: credentials go to this origin only.
    pub(crate) origin: String,
    pub pull: bool,
    pub push: bool,
    pub mirror: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Endpoint({}, pull={}, push={}, mirror={})",
            self.base, self.pull, self.push, self.mirror
        )
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn list(&self) -> Vec<String> {
        match self {
            OneOrMany::None => vec![],
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct HostEntry {
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    ca: OneOrMany,
    #[serde(default)]
    client: Option<toml::Value>,
    #[serde(default)]
    skip_verify: Option<bool>,
    #[serde(default)]
    override_path: Option<bool>,
}

/// The parsed hosts.toml of one registry.
#[derive(Debug, Default, Deserialize)]
pub struct HostsConfig {
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    ca: OneOrMany,
    #[serde(default)]
    skip_verify: Option<bool>,
    #[serde(default)]
    host: toml::Table,
}

impl HostsConfig {
    pub fn load(hosts_dir: &Path, registry: &str) -> Result<Option<HostsConfig>> {
        let dirname = registry;
        for d in [dirname, "_default"] {
            let p = hosts_dir.join(d).join("hosts.toml");
            match std::fs::read_to_string(&p) {
                Ok(text) => {
                    return toml::from_str(&text)
                        .map(Some)
                        .map_err(|e| Error::Invalid(format!("{}: {e}", p.display())));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read", p, e)),
            }
        }
        Ok(None)
    }
}

/// Redirects stay within one origin (token requests, see [`Endpoint::token_client`]).
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let next = super::origin_of(attempt.url());
        let prev = attempt.previous().last().and_then(super::origin_of);
        if next.is_some() && next == prev && attempt.previous().len() < 10 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// The registry client follows redirects anywhere (blob GETs go to storage
/// and CDNs): reqwest 0.13 drops Authorization, Cookie and
/// Proxy-Authorization whenever scheme, host or port change
/// (`redirect::remove_sensitive_headers`), and `send()` refuses to answer a
/// 401 from the place a redirect ended up. The `Referer` would tell the CDN
/// our registry URL, so it is off.
fn build_client(
    insecure: bool,
    cas: &[String],
    cert_key: Option<(String, Option<String>)>,
    redirect: reqwest::redirect::Policy,
) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("modelpack/", env!("CARGO_PKG_VERSION")))
        .redirect(redirect)
        .referer(false)
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(300))
        .pool_max_idle_per_host(16);
    if insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    for ca in cas {
        let pem = std::fs::read(ca).map_err(|e| Error::io("read CA file", ca, e))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::Invalid(format!("{ca}: not a PEM certificate bundle: {e}")))?
        {
            b = b.add_root_certificate(c);
        }
    }
    if let Some((cert, key)) = cert_key {
        let mut pem =
            std::fs::read(&cert).map_err(|e| Error::io("read client certificate", &cert, e))?;
        if let Some(k) = key {
            pem.extend(std::fs::read(&k).map_err(|e| Error::io("read client key", &k, e))?);
        }
        b = b.identity(reqwest::Identity::from_pem(&pem).map_err(|e| {
            Error::Invalid(format!("{cert}: unusable client certificate/key: {e}"))
        })?);
    }
    b.build()
        .map_err(|e| Error::Invalid(format!("cannot set up the HTTP client: {e}")))
}

fn client_pair(v: &Option<toml::Value>) -> Option<(String, Option<String>)> {
    match v {
        Some(toml::Value::String(s)) => Some((s.clone(), None)),
        Some(toml::Value::Array(a)) => match a.first() {
            Some(toml::Value::String(c)) => Some((
                c.clone(),
                a.get(1).and_then(|k| k.as_str()).map(str::to_string),
            )),
            Some(toml::Value::Array(pair)) => Some((
                pair.first()?.as_str()?.to_string(),
                pair.get(1).and_then(|k| k.as_str()).map(str::to_string),
            )),
            _ => None,
        },
        _ => None,
    }
}

/// The origin of an endpoint URL and its `host[:port]` (port only when not the default).
fn origin_and_host(registry: &str, base: &str) -> Result<(String, String)> {
    let bad = |why: &str| Error::Invalid(format!("hosts.toml for {registry}: {base:?} {why}"));
    let url = reqwest::Url::parse(base).map_err(|_| bad("is not a URL"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad("is neither http:// nor https://"));
    }
    let origin = super::origin_of(&url).ok_or_else(|| bad("has no host"))?;
    let host = url.host_str().ok_or_else(|| bad("has no host"))?;
    let host = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Ok((origin, host))
}

/// Mirrors from hosts.toml (in file order), then the registry itself.
pub fn endpoints_for(registry: &str, opts: &TransportOptions) -> Result<Vec<Endpoint>> {
    let host = if registry == DOCKER_HUB {
        DOCKER_HUB_API_HOST
    } else {
        registry
    };
    let own = opts.registries.get(registry).cloned().unwrap_or_default();
    let plain = opts.plain_http || own.plain_http || is_loopback_host(host);
    let global_cas: Vec<String> = opts
        .ca_file
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let global_cert = opts.cert_file.as_ref().map(|c| {
        (
            c.display().to_string(),
            opts.key_file.as_ref().map(|k| k.display().to_string()),
        )
    });
    let mut out = Vec::new();
    let cfg = match &opts.hosts_dir {
        Some(d) => HostsConfig::load(d, registry)?,
        None => None,
    };
    let mut server = format!("{}://{host}", if plain { "http" } else { "https" });
    let mut server_insecure = opts.insecure;
    let mut server_cas = global_cas.clone();
    server_cas.extend(own.ca_file.iter().map(|p| p.display().to_string()));
    if let Some(cfg) = &cfg {
        if let Some(s) = &cfg.server {
            server = s.trim_end_matches('/').to_string();
        }
        server_insecure |= cfg.skip_verify.unwrap_or(false);
        server_cas.extend(cfg.ca.list());
        for (url, v) in &cfg.host {
            let entry: HostEntry = v.clone().try_into().map_err(|e| {
                Error::Invalid(format!("hosts.toml for {registry}: host {url:?}: {e}"))
            })?;
            let caps = entry
                .capabilities
                .clone()
                .unwrap_or_else(|| vec!["pull".into(), "resolve".into(), "push".into()]);
            let mut cas = global_cas.clone();
            cas.extend(entry.ca.list());
            let insecure = opts.insecure || entry.skip_verify.unwrap_or(false);
            let cert = client_pair(&entry.client).or_else(|| global_cert.clone());
            let client = build_client(insecure, &cas, cert.clone(), Policy::default())?;
            let token_client = build_client(insecure, &cas, cert, same_origin_redirects())?;
            let mut base = url.trim_end_matches('/').to_string();
            // containerd appends /v2 unless override_path is set; our paths carry /v2 themselves.
            if entry.override_path.unwrap_or(false) {
                base = base.trim_end_matches("/v2").to_string();
            } else if let Some(b) = base.strip_suffix("/v2") {
                base = b.to_string();
            }
            let (origin, cred_host) = origin_and_host(registry, &base)?;
            out.push(Endpoint {
                base,
                client,
                token_client,
                cred_host,
                origin,
                pull: caps.iter().any(|c| c == "pull" || c == "resolve"),
                push: caps.iter().any(|c| c == "push"),
                mirror: true,
            });
        }
    }
    let (origin, server_host) = origin_and_host(registry, &server)?;
    // An overridden `server` on another host is that host's business, not the registry's.
    let cred_host = if server_host == host {
        registry.to_string()
    } else {
        server_host
    };
    out.push(Endpoint {
        client: build_client(
            server_insecure,
            &server_cas,
            global_cert.clone(),
            Policy::default(),
        )?,
        token_client: build_client(
            server_insecure,
            &server_cas,
            global_cert,
            same_origin_redirects(),
        )?,
        base: server,
        cred_host,
        origin,
        pull: true,
        push: true,
        mirror: false,
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_plain_http_and_hosts_toml_adds_mirrors() {
        let eps = endpoints_for("127.0.0.1:5000", &TransportOptions::default()).unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].base, "http://127.0.0.1:5000");
        let eps = endpoints_for("docker.io", &TransportOptions::default()).unwrap();
        assert_eq!(eps[0].base, "https://registry-1.docker.io");

        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ghcr.io")).unwrap();
        std::fs::write(
            d.path().join("ghcr.io/hosts.toml"),
            "server = \"https://ghcr.io\"\n[host.\"http://127.0.0.1:65001\"]\n  capabilities = [\"pull\", \"resolve\"]\n[host.\"https://mirror.example/v2\"]\n  capabilities = [\"pull\"]\n  skip_verify = true\n",
        )
        .unwrap();
        let opts = TransportOptions {
            hosts_dir: Some(d.path().into()),
            ..Default::default()
        };
        let eps = endpoints_for("ghcr.io", &opts).unwrap();
        let bases: Vec<_> = eps
            .iter()
            .map(|e| (e.base.as_str(), e.mirror, e.push))
            .collect();
        assert_eq!(
            bases,
            vec![
                ("http://127.0.0.1:65001", true, false),
                ("https://mirror.example", true, false),
                ("https://ghcr.io", false, true)
            ]
        );
        let hosts: Vec<_> = eps.iter().map(|e| e.cred_host.as_str()).collect();
        assert_eq!(hosts, vec!["127.0.0.1:65001", "mirror.example", "ghcr.io"]);
        assert_eq!(eps[0].origin, "http://127.0.0.1:65001");
        let hub = endpoints_for("docker.io", &TransportOptions::default()).unwrap();
        assert_eq!(hub[0].cred_host, "docker.io");
    }

    #[test]
    fn a_registry_own_settings_apply_to_it_alone() {
        let d = tempfile::tempdir().unwrap();
        let missing_ca = d.path().join("no-such-ca.pem");
        let mut registries = std::collections::BTreeMap::new();
        registries.insert(
            "lab.example:5000".to_string(),
            crate::registry::RegistryTransport {
                plain_http: true,
                ca_file: None,
            },
        );
        registries.insert(
            "corp.example".to_string(),
            crate::registry::RegistryTransport {
                plain_http: false,
                ca_file: Some(missing_ca.clone()),
            },
        );
        let opts = TransportOptions {
            registries,
            ..Default::default()
        };
        let lab = endpoints_for("lab.example:5000", &opts).unwrap();
        assert_eq!(lab[0].base, "http://lab.example:5000");
        let other = endpoints_for("other.example", &opts).unwrap();
        assert_eq!(other[0].base, "https://other.example");
        // The CA is read for its registry only (a missing file there is an error naming it).
        let Err(err) = endpoints_for("corp.example", &opts) else {
            panic!("a missing CA file was not read");
        };
        assert!(err.to_string().contains("no-such-ca.pem"), "{err}");
    }
}
