//! `resolve REF`: one JSON line naming a ready directory with the model's
//! files — the integration point for inference engines that resolve
//! `oci://` model URIs. Served lazily at `<store>/mounts/<digest>` (reused
//! when already mounted); where FUSE is unavailable, the model is pulled and
//! extracted to `<store>/resolved/<digest>` instead.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::extract::{ExtractOptions, extract_from_store};
use modelpack_common::transfer::{NoProgress, pull_to_store};
use serde::Serialize;

use super::remote::RegistryArgs;
use super::{Ctx, parse_ref};
use crate::lazy_mount::{self, LazyArgs};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  modelpack resolve registry.example.com/models/qwen3:0.6b
  {\"reference\":\"…\",\"digest\":\"sha256:…\",\"path\":\"/root/.modelpack/mounts/…\",\"format\":\"safetensors\"}")]
pub struct ResolveArgs {
    /// Model reference: from the local store, else from its registry
    pub reference: String,
    /// Extract into the store instead of mounting (no FUSE needed)
    #[arg(long)]
    pub no_mount: bool,
    #[command(flatten)]
    pub lazy: LazyArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Serialize)]
struct Resolved {
    reference: String,
    digest: String,
    path: std::path::PathBuf,
    format: Option<String>,
}

pub async fn run(args: ResolveArgs, ctx: Ctx) -> Result<ExitCode> {
    let reference = parse_ref(&args.reference)?;
    if lazy_mount::is_serving_child() {
        lazy_mount::mount(
            &ctx,
            &args.registry,
            &args.lazy,
            &reference,
            std::path::Path::new(""),
        )
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    let opened = lazy_mount::open(&ctx, &args.registry, &args.lazy, &reference).await?;
    let digest = opened.model.descriptor.digest.clone();
    let format = opened.model.config.config.format.clone();
    let dir = lazy_mount::resolve_dir(&opened.store, &digest);
    let mounted = if args.no_mount {
        Err(anyhow::anyhow!("--no-mount"))
    } else if lazy_mount::is_lazy_mount(&dir) {
        Ok(dir.clone())
    } else {
        lazy_mount::mount(&ctx, &args.registry, &args.lazy, &reference, &dir)
            .await
            .map(|m| m.path)
    };
    let path = match mounted {
        Ok(p) => p,
        Err(e) => {
            if !args.no_mount {
                tracing::warn!("cannot mount {reference} lazily ({e}); extracting it instead");
            }
            let store = &opened.store;
            if !opened
                .model
                .plans
                .iter()
                .all(|p| store.has_blob(&p.layer.descriptor.digest))
            {
                pull_to_store(&opened.client, store, &reference, 4, &NoProgress).await?;
            }
            let out = store.root().join("resolved").join(digest.hex());
            extract_from_store(
                store,
                &opened.model.manifest,
                &out,
                &ExtractOptions::default(),
            )?;
            out
        }
    };
    let r = Resolved {
        reference: reference.to_string(),
        digest: digest.to_string(),
        path,
        format,
    };
    ctx.out.data(serde_json::to_string(&r)?);
    Ok(ExitCode::SUCCESS)
}
