//! `prune [--dry-run]`: delete blobs that no stored model references.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Ctx;
use crate::output::human_size;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only report what would be deleted
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(args: PruneArgs, ctx: Ctx) -> Result<ExitCode> {
    let store = ctx.existing_store()?;
    let freed = super::blocking(move || {
        if !args.dry_run {
            // Referrers of models that are gone would keep those models' blobs.
            modelpack_common::chunkindex::local::drop_orphans(&store)?;
        }
        Ok(store.prune(args.dry_run)?)
    })
    .await?;
    let total: u64 = freed.iter().map(|(_, s)| s).sum();
    if ctx.out.json {
        let blobs: Vec<_> = freed
            .iter()
            .map(|(d, s)| serde_json::json!({"digest": d.to_string(), "size": s}))
            .collect();
        ctx.out.print_json(
            &serde_json::json!({"dryRun": args.dry_run, "blobs": blobs, "bytes": total}),
        )?;
    } else {
        for (d, s) in &freed {
            println!(
                "{}{d} {}",
                if args.dry_run {
                    "would delete "
                } else {
                    "deleted "
                },
                human_size(*s)
            );
        }
        ctx.out.status(format!(
            "{} {} blob{} ({})",
            if args.dry_run { "would free" } else { "freed" },
            freed.len(),
            if freed.len() == 1 { "" } else { "s" },
            human_size(total)
        ));
    }
    Ok(ExitCode::SUCCESS)
}
