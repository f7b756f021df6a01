//! One module per verb, each with its clap `Args` and `run`; this file only
//! dispatches. What verbs share lives in [`ctx`].

pub mod attach;
pub mod build;
pub mod completion;
pub mod config;
pub mod ctx;
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
pub mod version;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::Command;

pub use ctx::{Ctx, blocking, parse_bytes, parse_ref, parse_reflink};

pub async fn run(cmd: Command, ctx: Ctx) -> Result<ExitCode> {
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
        Command::Config { command } => config::run(command, ctx).await,
        Command::Completion { shell } => completion::run(shell, &ctx),
        Command::Version => version::run(&ctx),
    }
}
