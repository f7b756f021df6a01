//! `push REF [DEST]`: upload a stored model (blobs the registry has are
//! skipped, known ones are mounted; the manifest goes last).

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::transfer::{push_from_store, store_in_family};

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
    #[command(flatten)]
    pub transfer: super::remote::TransferArgs,
}

pub async fn run(args: PushArgs, ctx: Ctx) -> Result<ExitCode> {
    let local = parse_ref(&args.reference)?;
    let remote = match &args.destination {
        Some(d) => parse_ref(d)?,
        None => local.clone(),
    };
    let client = args.registry.transfer_client(&ctx, &args.transfer)?;
    let store = ctx.existing_store()?;
    // A registry configured for the legacy identifiers (Harbor ≤ 2.15) gets
    // the model re-labelled: a new manifest (stored locally as the
    // destination), the same blobs.
    let settings = &ctx.settings;
    let local = match settings.family_for(&remote.registry) {
        Some(family) => match store_in_family(&store, &local, &remote, family)? {
            Some(digest) => {
                ctx.out.status(format!(
                    "{} needs the legacy cnai identifiers ({}): pushing {local} re-labelled as {digest}, stored locally as {remote}",
                    remote.registry,
                    settings.where_set()
                ));
                remote.clone()
            }
            None => local,
        },
        None => local,
    };
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
        ctx.concurrency(args.transfer.concurrency),
        &bars,
    )
    .await;
    bars.finish();
    let report = report?;
    if ctx.out.json {
        ctx.out.print_json(&report)?;
    } else {
        let uploaded = report.blobs.iter().filter(|b| b.bytes_sent > 0).count();
        ctx.out.status(if report.bytes_sent == 0 {
            format!(
                "pushed {} (all {} blobs already in the registry or mounted; nothing uploaded)",
                report.reference,
                report.blobs.len()
            )
        } else {
            format!(
                "pushed {} ({uploaded} of {} blobs uploaded, {} already there or mounted; {} at {}/s)",
                report.reference,
                report.blobs.len(),
                report.blobs.len() - uploaded,
                human_size(report.bytes_sent),
                human_size(bars.throughput() as u64)
            )
        });
        for r in &report.referrers {
            ctx.out
                .status(format!("published chunk index referrer {r}"));
        }
        ctx.out.data(format!("{}", report.digest));
    }
    Ok(ExitCode::SUCCESS)
}
