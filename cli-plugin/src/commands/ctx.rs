//! What every verb is handed: the invocation's [`Ctx`] (store directory,
//! output mode, the user's settings, the name to use in hints) and the small
//! parsers and helpers the verbs share.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use modelpack_common::Reference;
use modelpack_common::settings::Settings;
use modelpack_common::store::Store;

use crate::cli::GlobalArgs;
use crate::output::Printer;
use crate::plugin::Invocation;

/// What every command needs to know about the invocation.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub storage_dir: PathBuf,
    /// Where `storage_dir` came from (`--storage-dir`, `MODELPACK_HOME`, the config file, default).
    pub storage_from: String,
    /// The one printer for the verb's output.
    pub out: Printer,
    /// `docker modelpack` or `modelpack`: used in hints.
    pub display_name: String,
    /// docker's `--config DIR` (plugin mode); credentials are read from there.
    pub docker_config_dir: Option<PathBuf>,
    /// The user's config file (empty when there is none).
    pub settings: Arc<Settings>,
}

/// Blobs in flight when neither a flag, `$MODELPACK_CONCURRENCY` nor the config file says.
pub const DEFAULT_CONCURRENCY: usize = 4;

impl Ctx {
    /// Reads the config file too: a broken one is an error naming it, for
    /// every verb, rather than settings silently left off.
    pub fn new(g: &GlobalArgs, inv: &Invocation) -> Result<Self> {
        let settings = Settings::load()?;
        let env_home = std::env::var_os("MODELPACK_HOME").filter(|v| !v.is_empty());
        let (storage_dir, storage_from) = if let Some(d) = &g.storage_dir {
            (d.clone(), "--storage-dir".to_string())
        } else if env_home.is_some() {
            (Store::default_root(), "MODELPACK_HOME".to_string())
        } else if let Some(d) = &settings.storage_dir {
            (d.clone(), format!("storage-dir, {}", settings.where_set()))
        } else {
            (Store::default_root(), "default".to_string())
        };
        Ok(Ctx {
            storage_dir,
            storage_from,
            out: Printer::new(g.json, g.quiet),
            display_name: inv.display_name.clone(),
            docker_config_dir: inv.docker_config_dir.clone(),
            settings: Arc::new(settings),
        })
    }

    /// Blobs moved in parallel: the flag (or `$MODELPACK_CONCURRENCY`, which
    /// clap reads into it), else the config file, else the default.
    pub fn concurrency(&self, flag: Option<u16>) -> usize {
        flag.or(self.settings.concurrency)
            .map(usize::from)
            .unwrap_or(DEFAULT_CONCURRENCY)
    }

    /// The store for verbs that only read it: a directory without a store is
    /// a mistake (a typo in `--storage-dir`), not an empty store to create.
    pub fn existing_store(&self) -> Result<Store> {
        if !self.storage_dir.join("index.json").is_file() {
            anyhow::bail!(
                "no store at {}\nhint: build or pull a model first, or check --storage-dir / MODELPACK_HOME",
                self.storage_dir.display()
            );
        }
        self.store()
    }

    pub fn store(&self) -> Result<Store> {
        Store::open(&self.storage_dir).with_context(|| {
            format!(
                "cannot open the local store at {}",
                self.storage_dir.display()
            )
        })
    }
}

/// `--reflink auto|always|never`.
pub fn parse_reflink(s: &str) -> Result<modelpack_common::kcopy::Reflink, String> {
    s.parse()
}

/// `4194304`, `4MiB`, `4M`, `1GiB`, `64K`: a byte count (binary units).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = [
        ("KiB", 1u64 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("K", 1 << 10),
        ("M", 1 << 20),
        ("G", 1 << 30),
    ]
    .iter()
    .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((t, 1));
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4MiB or 4194304)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub fn parse_ref(s: &str) -> Result<Reference> {
    Ok(s.parse::<Reference>()?)
}

/// Runs blocking work (file I/O, hashing) off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("worker thread panicked")?
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_sizes_take_binary_units_and_refuse_garbage_with_the_input_named() {
        assert_eq!(super::parse_bytes("100MiB"), Ok(100 << 20));
        assert_eq!(super::parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(super::parse_bytes(" 4096 "), Ok(4096));
        assert_eq!(super::parse_bytes("0"), Ok(0));
        let err = super::parse_bytes("fast").unwrap_err();
        assert!(err.contains("\"fast\""), "{err}");
        assert!(super::parse_bytes("99999999999999999999G").is_err());
    }
}
