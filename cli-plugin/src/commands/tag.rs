//! `tag SRC DST`: another reference to the same stored manifest (no copy).

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{Ctx, parse_ref};

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Existing reference (tag or digest)
    pub source: String,
    /// New reference (must carry a tag)
    pub target: String,
}

pub async fn run(args: TagArgs, ctx: Ctx) -> Result<ExitCode> {
    let (src, dst) = (parse_ref(&args.source)?, parse_ref(&args.target)?);
    if dst.digest.is_some() {
        anyhow::bail!("{dst}: the new reference needs a tag, not a digest");
    }
    let store = ctx.existing_store()?;
    let desc = store.resolve(&src)?;
    store.tag(&dst, &desc)?;
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({
            "reference": dst.to_string(),
            "source": src.to_string(),
            "digest": desc.digest.to_string(),
        }))?;
    } else {
        ctx.out.status(format!("tagged {} as {dst}", desc.digest));
    }
    Ok(ExitCode::SUCCESS)
}
