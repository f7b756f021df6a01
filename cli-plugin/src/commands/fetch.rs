//! `fetch REF --output DIR --patterns GLOB…`: only the matching files, each once,
//! straight from the registry into DIR.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::transfer::fetch_to_dir;

use super::remote::{Bars, RegistryArgs};
use super::{Ctx, parse_ref};

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Model reference (tag or digest)
    pub reference: String,
    /// Directory to write the files into
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Globs over file paths (`**` allowed); comma-separated or repeated
    #[arg(long, required = true, num_args = 1..)]
    pub patterns: Vec<String>,
    /// Write nothing unless the model's signature verifies with this public
    /// key (raw-layer models; checked before any blob moves) [default: the
    /// registry's verify-key in the config file]
    #[arg(long, value_name = "PUB.pem")]
    pub verify_key: Option<PathBuf>,
    /// Replace files in DIR whose content differs (else refused before anything is written)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub transfer: super::remote::TransferArgs,
}

pub async fn run(args: FetchArgs, ctx: Ctx) -> Result<ExitCode> {
    let remote = parse_ref(&args.reference)?;
    let client = args.registry.transfer_client(&ctx, &args.transfer)?;
    let remote = match super::verify::before_pull(
        &ctx,
        args.verify_key.as_deref(),
        Some("fetch"),
        &client,
        &remote,
    )
    .await?
    {
        Some((pinned, _, _, _)) => pinned,
        None => remote,
    };
    let bars = Bars::new(&ctx, 0, "fetching");
    let report = fetch_to_dir(
        &client,
        &ctx.store()?,
        &remote,
        &args.output,
        &args.patterns,
        ctx.concurrency(args.transfer.concurrency),
        args.force,
        &bars,
    )
    .await;
    bars.finish();
    let report = report?;
    if ctx.out.json {
        ctx.out.print_json(&report)?;
    } else {
        let x = report.extract.clone().unwrap_or_default();
        ctx.out.status(format!(
            "fetched {} file(s) of {} into {} ({} unchanged)",
            report.layers,
            report.reference,
            args.output.display(),
            x.files_skipped
        ));
    }
    Ok(ExitCode::SUCCESS)
}
