//! `rm REF…`: a tag reference untags; a digest reference removes the manifest
//! and every tag pointing to it (and, once a model has no entry left, its
//! chunk index referrers). Blobs are freed by `prune`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{Ctx, parse_ref};

#[derive(Debug, Args)]
pub struct RmArgs {
    /// References to remove
    #[arg(required = true)]
    pub references: Vec<String>,
}

pub async fn run(args: RmArgs, ctx: Ctx) -> Result<ExitCode> {
    let store = ctx.existing_store()?;
    let mut failed = false;
    let mut rows = Vec::new();
    for r in &args.references {
        let reference = parse_ref(r)?;
        let digest = store.resolve(&reference).ok().map(|d| d.digest.to_string());
        let n = store.remove(&reference)?;
        rows.push(
            serde_json::json!({"reference": reference.to_string(), "digest": digest, "removed": n}),
        );
        match n {
            0 => {
                ctx.out.problem(format!(
                    "error: {reference} is not in the local store\nhint: run `{} ls` to see stored models",
                    ctx.display_name
                ));
                failed = true;
            }
            n => ctx.out.status(format!(
                "removed {reference} ({n} reference{})",
                if n == 1 { "" } else { "s" }
            )),
        }
    }
    // A chunk index referrer keeps its model alive in prune; once nothing
    // else names the model, its referrers go with it.
    modelpack_common::chunkindex::local::drop_orphans(&store)?;
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({"removed": rows}))?;
    } else if !failed {
        ctx.out.status(format!(
            "run `{} prune` to free unreferenced blobs",
            ctx.display_name
        ));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
