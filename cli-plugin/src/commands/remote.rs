//! Shared registry options (oras-style) and progress reporting for the verbs
//! that talk to registries.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use modelpack_common::credentials::{Credential, CredentialOptions, CredentialStore};
use modelpack_common::registry::{Progress, RegistryClient, TransportOptions};
use modelpack_common::transfer::TransferProgress;

use super::Ctx;

#[derive(Debug, Args, Clone, Default)]
pub struct RegistryArgs {
    /// Registry username
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Registry password or token (prefer --password-stdin)
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// OAuth2 refresh (identity) token
    #[arg(long)]
    pub identity_token: Option<String>,
    /// Credentials file in docker config.json format (repeatable, first match wins)
    #[arg(long, value_name = "FILE")]
    pub registry_config: Vec<PathBuf>,
    /// podman/containers auth.json [default: $REGISTRY_AUTH_FILE]
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Use plain HTTP (loopback registries do by default; per registry: `plain-http` in the config file)
    #[arg(long, env = "MODELPACK_PLAIN_HTTP", value_parser = clap::builder::BoolishValueParser::new())]
    pub plain_http: bool,
    /// Skip TLS certificate verification
    #[arg(long)]
    pub insecure: bool,
    /// Trust this CA bundle (PEM; per registry: `ca-file` in the config file)
    #[arg(long, env = "MODELPACK_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM)
    #[arg(long, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM)
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// containerd hosts.toml directory for mirrors/CA/plain-http [default: /etc/containerd/certs.d if present]
    #[arg(long, value_name = "DIR")]
    pub hosts_dir: Option<PathBuf>,
}

/// Options of the verbs that move blobs (build, push, pull, fetch, upload,
/// attach, index); the others do not offer them.
#[derive(Debug, Args, Clone)]
pub struct TransferArgs {
    /// Blobs moved in parallel [default: `concurrency` in the config file, else 4]
    #[arg(short = 'c', long, env = "MODELPACK_CONCURRENCY", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: Option<u16>,
    /// Upload chunk size in MiB for large blobs (resumable)
    #[arg(long, default_value_t = 64, hide = true)]
    pub chunk_mib: u64,
}

impl Default for TransferArgs {
    fn default() -> Self {
        TransferArgs {
            concurrency: None,
            chunk_mib: 64,
        }
    }
}

impl RegistryArgs {
    fn explicit(&self) -> Result<Option<Credential>> {
        if let Some(t) = &self.identity_token {
            return Ok(Some(Credential::IdentityToken(t.clone())));
        }
        let password = if self.password_stdin {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("cannot read the password from stdin")?;
            Some(s.trim_end_matches(['\n', '\r']).to_string())
        } else {
            self.password.clone()
        };
        match (&self.username, password) {
            (Some(u), Some(p)) => Ok(Some(Credential::Basic {
                username: u.clone(),
                password: p,
            })),
            (None, Some(_)) => anyhow::bail!("a password needs a username (-u)"),
            (Some(_), None) => anyhow::bail!("-u needs a password: -p, or --password-stdin"),
            (None, None) => Ok(None),
        }
    }

    pub fn credential_options(&self, ctx: &Ctx) -> Result<CredentialOptions> {
        Ok(CredentialOptions {
            docker_config_dir: ctx.docker_config_dir.clone(),
            registry_configs: self.registry_config.clone(),
            authfile: self.authfile.clone(),
            explicit: self.explicit()?,
        })
    }

    /// A client for verbs that read manifests and small blobs.
    pub fn client(&self, ctx: &Ctx) -> Result<RegistryClient> {
        self.transfer_client(ctx, &TransferArgs::default())
    }

    /// A client that moves blobs with `transfer`'s concurrency and chunk size.
    pub fn transfer_client(&self, ctx: &Ctx, transfer: &TransferArgs) -> Result<RegistryClient> {
        let creds = Arc::new(CredentialStore::new(self.credential_options(ctx)?));
        let hosts_dir = self.hosts_dir.clone().or_else(|| {
            let d = PathBuf::from("/etc/containerd/certs.d");
            d.is_dir().then_some(d)
        });
        let opts = TransportOptions {
            plain_http: self.plain_http,
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            hosts_dir,
            concurrency: ctx.concurrency(transfer.concurrency),
            chunk_size: transfer.chunk_mib.clamp(1, 4096) << 20,
            retries: 5,
            registries: ctx.settings.transport_by_registry(),
            ..Default::default()
        };
        Ok(RegistryClient::new(opts, creds)?)
    }
}

/// One bar per blob plus a total with throughput on a TTY; a plain line per
/// finished blob otherwise; nothing with --quiet/--json.
pub struct Bars {
    multi: Option<MultiProgress>,
    total: Option<ProgressBar>,
    bars: std::sync::Mutex<std::collections::HashMap<String, ProgressBar>>,
    plain: bool,
    bytes: AtomicU64,
    started: Instant,
}

impl Bars {
    pub fn new(ctx: &Ctx, total_bytes: u64, label: &str) -> Bars {
        let tty = std::io::stderr().is_terminal() && !ctx.out.quiet && !ctx.out.json;
        Bars::drawn_to(
            tty.then(ProgressDrawTarget::stderr),
            !tty && !ctx.out.quiet && !ctx.out.json,
            total_bytes,
            label,
        )
    }

    /// Bars drawn to `target` (`None`: no bars), `plain` lines otherwise.
    fn drawn_to(
        target: Option<ProgressDrawTarget>,
        plain: bool,
        total_bytes: u64,
        label: &str,
    ) -> Bars {
        let (multi, total) = if let Some(target) = target {
            let m = MultiProgress::with_draw_target(target);
            let t = m.add(ProgressBar::new(total_bytes));
            t.set_style(
                // Decimal units, as the summaries (human_size) and docker say them.
                ProgressStyle::with_template(
                    "{msg:<28} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} eta {eta}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            t.set_message(label.to_string());
            (Some(m), Some(t))
        } else {
            (None, None)
        };
        Bars {
            multi,
            total,
            bars: Default::default(),
            plain,
            bytes: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub fn finish(&self) {
        if let Some(t) = &self.total {
            t.finish_and_clear();
        }
        for b in self.bars.lock().unwrap().values() {
            b.finish_and_clear();
        }
    }

    pub fn throughput(&self) -> f64 {
        self.bytes.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }
}

impl Progress for Bars {
    fn advance(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(t) = &self.total {
            t.inc(bytes);
        }
    }
}

impl TransferProgress for Bars {
    fn blob_started(&self, name: &str, size: u64) {
        let shown = modelpack_common::text::escape_control(name);
        let name = shown.as_ref();
        if let Some(m) = &self.multi {
            let b = m.insert_before(self.total.as_ref().expect("tty"), ProgressBar::new(size));
            let width = name_width();
            b.set_style(
                ProgressStyle::with_template(&format!(
                    "  {{msg:<{width}}} [{{bar:20}}] {{decimal_bytes:>9}}/{{decimal_total_bytes}}"
                ))
                .expect("template")
                .progress_chars("=> "),
            );
            b.set_message(short(name, width));
            self.bars.lock().unwrap().insert(name.to_string(), b);
        }
    }

    fn blob_advanced(&self, name: &str, bytes: u64) {
        let shown = modelpack_common::text::escape_control(name);
        if let Some(b) = self.bars.lock().unwrap().get(shown.as_ref()) {
            b.inc(bytes);
        }
    }

    fn total(&self, bytes: u64) {
        if let Some(t) = &self.total {
            t.set_length(bytes);
        }
    }

    fn blob_finished(&self, name: &str, size: u64, action: &str) {
        let shown = modelpack_common::text::escape_control(name);
        let name = shown.as_ref();
        if let Some(b) = self.bars.lock().unwrap().remove(name) {
            b.finish_and_clear();
        }
        if self.plain {
            eprintln!("{action:>10} {name} ({})", crate::output::human_size(size));
        }
    }
}

/// Room for a blob's name on this terminal: what the bar and sizes leave of
/// its width (a 160-column terminal shows `model-00001-of-00003.safetensors` whole).
fn name_width() -> usize {
    let cols = console::Term::stderr().size().1 as usize;
    cols.saturating_sub(48).clamp(16, 80)
}

/// `name`, or its tail with a leading `…` when it does not fit in `width`.
fn short(name: &str, width: usize) -> String {
    if name.chars().count() <= width {
        name.to_string()
    } else {
        let tail: Vec<char> = name.chars().rev().take(width.saturating_sub(1)).collect();
        format!("…{}", tail.into_iter().rev().collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_blob_bar_moves_with_its_own_bytes_and_the_total_learns_its_length() {
        let bars = Bars::drawn_to(Some(ProgressDrawTarget::hidden()), false, 0, "pulling");
        bars.total(1000);
        bars.blob_started("model-00001-of-00003.safetensors", 600);
        bars.blob_started("config.json", 400);
        // What the registry code does per blob: advance through that blob's own progress.
        for _ in 0..3 {
            Progress::advance(&bars, 100);
            bars.blob_advanced("model-00001-of-00003.safetensors", 100);
        }
        let map = bars.bars.lock().unwrap();
        assert_eq!(map["model-00001-of-00003.safetensors"].position(), 300);
        assert_eq!(map["config.json"].position(), 0);
        let total = bars.total.as_ref().unwrap();
        assert_eq!((total.position(), total.length()), (300, Some(1000)));
    }

    #[test]
    fn names_fit_the_width_from_their_tail() {
        assert_eq!(short("config.json", 20), "config.json");
        let s = short("model-00001-of-00003.safetensors", 16);
        assert_eq!(s.chars().count(), 16);
        assert!(s.starts_with('…') && s.ends_with(".safetensors"), "{s}");
    }
}
