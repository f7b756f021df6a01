//! `push REF [DEST]`: upload a stored model (blobs the registry has are
//! skipped, known ones are mounted; the manifest goes last).

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::transfer::push_from_store;

use super::remote::{Bars, RegistryArgs};
use super::{Ctx, parse_ref};
use crate::output::human_size;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Stored model to push
    pub reference: String,
    /// Push under another reference [default: REF]
    pub destination: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run(args: PushArgs, ctx: Ctx) -> Result<ExitCode> {
    let local = parse_ref(&args.reference)?;
    let remote = match &args.destination {
        Some(d) => parse_ref(d)?,
        None => local.clone(),
    };
    let client = args.registry.client(&ctx)?;
    let store = ctx.store()?;
    let loaded = store.load_manifest(&local)?;
    let bars = Bars::new(
        &ctx,
        loaded.manifest.content_size(),
        &format!("pushing {}", remote.repository),
    );
    let report = push_from_store(
        &client,
        &store,
        &local,
        &remote,
        args.registry.concurrency,
        &bars,
    )
    .await;
    bars.finish();
    let report = report?;
    if ctx.out.json {
        ctx.out.print_json(&report)?;
    } else {
        let uploaded = report.blobs.iter().filter(|b| b.bytes_sent > 0).count();
        ctx.out.status(format!(
            "pushed {} ({} blobs: {uploaded} uploaded, {} already there or mounted; {} sent, {}/s)",
            report.reference,
            report.blobs.len(),
            report.blobs.len() - uploaded,
            human_size(report.bytes_sent),
            human_size(bars.throughput() as u64)
        ));
        for r in &report.referrers {
            ctx.out
                .status(format!("published chunk index referrer {r}"));
        }
        println!("{}", report.digest);
    }
    Ok(ExitCode::SUCCESS)
}
