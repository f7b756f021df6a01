//! `index REF [--pin]`: add a chunk index to an artifact another tool pushed
//! (modctl, Docker Model Runner, KitOps: layers without the
//! `org.modelpack.chunks.digest` annotation). Each raw/tar layer is streamed
//! once from the registry through the chunk hasher while its whole digest is
//! verified (a blob already in the store is read there instead), and the
//! indexes are published as a referrer of the manifest. Such an index is
//! bound to the model only by that link, so `--pin` records its digests
//! locally as trusted for this manifest (docs/chunk-index.md, trust policy).

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::text::escape_control as esc;
use modelpack_common::transfer::referrers::index_remote;

use super::remote::{Bars, RegistryArgs};
use super::{Ctx, parse_ref};
use crate::output::{human_size, table};

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Model in a registry (tag or digest)
    pub reference: String,
    /// Chunk size (a power of two, 64KiB..64MiB; e.g. 4MiB)
    #[arg(long, default_value = "4MiB", value_parser = super::build::parse_chunk_size)]
    pub chunk_size: u64,
    /// Trust this index for this manifest locally (it is not bound by the model digest)
    #[arg(long)]
    pub pin: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub transfer: super::remote::TransferArgs,
}

pub async fn run(args: IndexArgs, ctx: Ctx) -> Result<ExitCode> {
    let remote = parse_ref(&args.reference)?;
    let client = args.registry.transfer_client(&ctx, &args.transfer)?;
    let store = ctx.store()?;
    let bars = Bars::new(&ctx, 0, &format!("indexing {}", remote.repository));
    let report = index_remote(&client, &store, &remote, args.chunk_size, args.pin, &bars).await;
    bars.finish();
    let report = report?;
    if ctx.out.json {
        ctx.out.print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = report
        .layers
        .iter()
        .map(|l| {
            vec![
                esc(l.filepath.as_deref().unwrap_or("-")).into_owned(),
                l.digest.to_string()[7..19].to_string(),
                l.chunks.to_string(),
                l.files.to_string(),
                l.source.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["FILEPATH", "LAYER", "CHUNKS", "FILES", "SOURCE"], &rows)
    );
    match &report.referrer {
        Some(r) => ctx.out.status(format!(
            "indexed {} ({} chunks of {}; {} downloaded); referrer {r}{}",
            report.reference,
            report.layers.iter().map(|l| l.chunks).sum::<usize>(),
            human_size(report.chunk_size),
            human_size(report.bytes_received),
            if report.pinned {
                "; pinned locally"
            } else {
                ""
            }
        )),
        None => ctx.out.status(format!(
            "{}: no raw or tar layer to index",
            report.reference
        )),
    }
    if let Some(r) = &report.referrer {
        ctx.out.data(format!("{r}"));
    }
    Ok(ExitCode::SUCCESS)
}
