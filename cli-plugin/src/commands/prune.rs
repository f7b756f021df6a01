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
    /// Do not ask for confirmation (prune asks on a terminal, as docker does)
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(args: PruneArgs, ctx: Ctx) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let store = ctx.existing_store()?;
    if !args.dry_run && !args.force && !ctx.out.json && std::io::stdin().is_terminal() {
        eprint!(
            "WARNING! This will delete every blob no stored model references in {}.\nAre you sure you want to continue? [y/N] ",
            store.root().display()
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
            ctx.out.status("nothing deleted");
            return Ok(ExitCode::SUCCESS);
        }
    }
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
            ctx.out.data(format!(
                "{}{d} {}",
                if args.dry_run {
                    "would delete "
                } else {
                    "deleted "
                },
                human_size(*s)
            ));
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
