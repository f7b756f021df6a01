//! `extract REF --output DIR`: restore a stored model's files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::extract::{ExtractOptions, extract_from_store};

use super::remote::Bars;
use super::{Ctx, parse_ref};

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Model reference (tag or digest)
    pub reference: String,
    /// Directory to restore the files into
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Layers extracted in parallel [default: `concurrency` in the config file, else 4]
    #[arg(short, long, env = "MODELPACK_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: Option<u16>,
    /// Do not apply mode and mtime from the artifact
    #[arg(long)]
    pub no_metadata: bool,
    /// Replace files in DIR whose content differs (else refused before anything is written)
    #[arg(short, long)]
    pub force: bool,
    /// Share the store's extents with the restored files: auto (where the
    /// filesystem can: XFS reflink=1, btrfs), always (or fail), never
    #[arg(long, default_value = "auto", value_name = "WHEN", value_parser = super::parse_reflink)]
    pub reflink: modelpack_common::kcopy::Reflink,
}

pub async fn run(args: ExtractArgs, ctx: Ctx) -> Result<ExitCode> {
    let reference = parse_ref(&args.reference)?;
    let store = ctx.existing_store()?;
    let loaded = store.load_manifest(&reference)?;
    let digest = loaded.digest.to_string();
    let total: u64 = loaded.manifest.layers.iter().map(|l| l.size).sum();
    let bars = std::sync::Arc::new(Bars::new(&ctx, total, "extracting"));
    let opts = ExtractOptions {
        apply_metadata: !args.no_metadata,
        concurrency: ctx.concurrency(args.concurrency),
        force: args.force,
        progress: Some(bars.clone()),
        reflink: args.reflink,
    };
    let out = args.output.clone();
    let stats =
        super::blocking(move || Ok(extract_from_store(&store, &loaded.manifest, &out, &opts)?))
            .await;
    bars.finish();
    let stats = stats?;
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({"reference": reference.to_string(), "digest": digest, "output": args.output, "stats": stats}))?;
    } else {
        ctx.out.status(format!(
            "extracted {reference} to {}: {} written, {} unchanged",
            args.output.display(),
            stats.files_written,
            stats.files_skipped
        ));
    }
    Ok(ExitCode::SUCCESS)
}
