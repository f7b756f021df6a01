//! One module per verb. Each exposes `Args` (clap) and `run`.

pub mod attach;
pub mod build;
pub mod config;
pub mod extract;
pub mod fetch;
pub mod fsck;
pub mod index;
pub mod inspect;
pub mod login;
pub mod ls;
pub mod modelfile;
pub mod mount;
pub mod prune;
pub mod pull;
pub mod push;
pub mod referrers;
pub mod remote;
pub mod resolve;
pub mod rm;
pub mod sign;
pub mod tag;
pub mod upload;
pub mod validate;
pub mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use modelpack_common::Reference;
use modelpack_common::store::Store;

use crate::cli::{Command, GlobalArgs};
use crate::output::Output;
use crate::plugin::Invocation;

/// What every command needs to know about the invocation.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub storage_dir: PathBuf,
    pub out: Output,
    /// `docker modelpack` or `modelpack`: used in hints.
    pub display_name: String,
    /// docker's `--config DIR` (plugin mode); credentials are read from there.
    pub docker_config_dir: Option<PathBuf>,
}

impl Ctx {
    pub fn new(g: &GlobalArgs, inv: &Invocation) -> Self {
        Ctx {
            storage_dir: g.storage_dir.clone().unwrap_or_else(Store::default_root),
            out: Output::new(g.json, g.quiet),
            display_name: inv.display_name.clone(),
            docker_config_dir: inv.docker_config_dir.clone(),
        }
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

pub async fn run(cmd: Command, ctx: Ctx, storage_flag: bool) -> Result<ExitCode> {
    match cmd {
        Command::Build(a) => build::run(a, ctx).await,
        Command::Inspect(a) => inspect::run(a, ctx).await,
        Command::Index(a) => index::run(a, ctx).await,
        Command::Ls(a) => ls::run(a, ctx).await,
        Command::Tag(a) => tag::run(a, ctx).await,
        Command::Rm(a) => rm::run(a, ctx).await,
        Command::Prune(a) => prune::run(a, ctx).await,
        Command::Fsck(a) => fsck::run(a, ctx).await,
        Command::Extract(a) => extract::run(a, ctx).await,
        Command::Validate(a) => validate::run(a, ctx).await,
        Command::Modelfile { command } => modelfile::run(command, ctx).await,
        Command::Push(a) => push::run(a, ctx).await,
        Command::Pull(a) => pull::run(a, ctx).await,
        Command::Fetch(a) => fetch::run(a, ctx).await,
        Command::Upload(a) => upload::run(a, ctx).await,
        Command::Attach(a) => attach::run(a, ctx).await,
        Command::Login(a) => login::login(a, ctx).await,
        Command::Logout(a) => login::logout(a, ctx).await,
        Command::Mount(a) => mount::mount(a, ctx).await,
        Command::Resolve(a) => resolve::run(a, ctx).await,
        Command::Umount(a) => mount::umount(a, ctx).await,
        Command::Sign(a) => sign::run(a, ctx).await,
        Command::Verify(a) => verify::run(a, ctx).await,
        Command::Referrers(a) => referrers::run(a, ctx).await,
        Command::Config { command } => config::run(command, ctx, storage_flag).await,
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut cmd = crate::cli::Cli::command();
            let name = ctx.display_name.replace(' ', "-");
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, name, &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error.
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Version => {
            version(&ctx)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn version(ctx: &Ctx) -> Result<()> {
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        "modelSpec": "v0.0.7+ (HEAD schema)",
    });
    if ctx.out.json {
        ctx.out.print_json(&info)?;
    } else {
        println!("{} {}", ctx.display_name, env!("CARGO_PKG_VERSION"));
        println!(
            "platform: {}",
            info["platform"].as_str().unwrap_or_default()
        );
        println!(
            "model-spec: {}",
            info["modelSpec"].as_str().unwrap_or_default()
        );
    }
    Ok(())
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
