//! `upload FILE --repo REPO`: pre-push one file as a raw blob, so a later
//! `build --output-remote` finds it with a HEAD and skips it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::transfer::upload_file;

use super::remote::{Bars, RegistryArgs};
use super::{Ctx, parse_ref};

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// File to upload
    pub file: PathBuf,
    /// Repository to upload into, e.g. 127.0.0.1:5000/models/qwen
    #[arg(long, value_name = "REPO")]
    pub repo: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run(args: UploadArgs, ctx: Ctx) -> Result<ExitCode> {
    let repo = parse_ref(&args.repo)?;
    let client = args.registry.client(&ctx)?;
    let size = std::fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
    let bars = Bars::new(&ctx, size, "uploading");
    let report = upload_file(&client, &ctx.store()?, &args.file, &repo, &bars).await;
    bars.finish();
    let report = report?;
    if ctx.out.json {
        ctx.out.print_json(&report)?;
    } else {
        ctx.out.status(format!(
            "{} {} to {}",
            report.action.as_str(),
            args.file.display(),
            repo.name()
        ));
        println!("{}", report.digest);
    }
    Ok(ExitCode::SUCCESS)
}
