//! `mount --containerd REF DIR` / `umount DIR`: a read-only View of a model,
//! ready for `ctr run --mount type=bind,src=DIR,dst=/models,options=rbind:ro`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Ctx;

#[derive(Debug, Args)]
pub struct MountArgs {
    /// Model reference as recorded by `pull --containerd`
    pub reference: String,
    /// Directory to mount the model at
    pub dir: PathBuf,
    /// Use containerd and the modelpack snapshotter (the only backend today)
    #[arg(long, default_value_t = true)]
    pub containerd: bool,
    #[command(flatten)]
    pub containerd_args: crate::containerd::ContainerdArgs,
}

#[derive(Debug, Args)]
pub struct UmountArgs {
    /// Directory a model is mounted at
    pub dir: PathBuf,
}

pub async fn mount(args: MountArgs, ctx: Ctx) -> Result<ExitCode> {
    let reference = super::parse_ref(&args.reference)?.to_string();
    crate::containerd::mount(&args.containerd_args, &reference, &args.dir).await?;
    ctx.out.status(format!(
        "mounted {reference} read-only at {}",
        args.dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}

pub async fn umount(args: UmountArgs, ctx: Ctx) -> Result<ExitCode> {
    crate::containerd::umount(&args.dir).await?;
    ctx.out.status(format!("unmounted {}", args.dir.display()));
    Ok(ExitCode::SUCCESS)
}
