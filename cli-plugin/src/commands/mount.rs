//! `mount REF DIR` / `umount DIR`: a model read-only at a directory — lazily
//! through FUSE from the local store or its registry (see `lazy_mount`), or
//! with `--containerd` as a View of the snapshots `pull --containerd` made,
//! ready for `ctr run --mount type=bind,src=DIR,dst=/models,options=rbind:ro`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

use super::Ctx;
use super::remote::RegistryArgs;
use crate::lazy_mount::{self, LazyArgs};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  modelpack mount registry.example.com/models/qwen3:0.6b /mnt/qwen3   # lazily, from the store or the registry
  modelpack mount --foreground --no-prefetch REF DIR                    # serve until Ctrl-C, fetch only what is read
  modelpack mount --containerd REF DIR                                  # a model pulled with `pull --containerd`
  modelpack umount /mnt/qwen3")]
pub struct MountArgs {
    /// Model reference: from the local store, else from its registry
    pub reference: String,
    /// Directory to mount the model at (created when missing)
    pub dir: PathBuf,
    /// Mount a model pulled with `pull --containerd` through containerd and the modelpack snapshotter
    #[arg(long)]
    pub containerd: bool,
    #[command(flatten)]
    pub containerd_args: crate::containerd::ContainerdArgs,
    #[command(flatten)]
    pub lazy: LazyArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct UmountArgs {
    /// Directory a model is mounted at
    pub dir: PathBuf,
}

pub async fn mount(args: MountArgs, ctx: Ctx) -> Result<ExitCode> {
    let reference = super::parse_ref(&args.reference)?;
    if args.containerd {
        let reference = reference.to_string();
        crate::containerd::mount(&args.containerd_args, &reference, &args.dir).await?;
        ctx.out.status(format!(
            "mounted {reference} read-only at {}",
            args.dir.display()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let m = lazy_mount::mount(&ctx, &args.registry, &args.lazy, &reference, &args.dir).await?;
    if lazy_mount::is_serving_child() || args.lazy.foreground {
        // Served until unmounted; the parent (or the user) already saw the ready report.
        return Ok(ExitCode::SUCCESS);
    }
    if ctx.out.json {
        ctx.out.print_json(&m)?;
    } else {
        ctx.out.status(format!(
            "mounted {} read-only at {} ({} files; {} of {} layers served lazily, pid {})",
            m.reference,
            m.path.display(),
            m.files,
            m.lazy_layers,
            m.layers,
            m.pid
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn umount(args: UmountArgs, ctx: Ctx) -> Result<ExitCode> {
    if lazy_mount::is_lazy_mount(&args.dir) {
        modelpack_fs::unmount_path(&args.dir)
            .map_err(|e| anyhow::anyhow!("cannot unmount {}: {e}", args.dir.display()))?;
        lazy_mount::wait_for_server(&ctx, &args.dir);
    } else if crate::containerd::is_containerd_mount(&args.dir) {
        crate::containerd::umount(&args.dir).await?;
    } else {
        bail!("{} is not a modelpack mount", args.dir.display());
    }
    ctx.out.status(format!("unmounted {}", args.dir.display()));
    Ok(ExitCode::SUCCESS)
}
