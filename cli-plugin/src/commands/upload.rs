//! `upload FILE --repo REPO`: pre-push one file as a raw blob, so a later
//! `build --output-remote` finds it with a HEAD and skips it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::transfer::{BlobAction, upload_file};

use super::remote::{Bars, RegistryArgs};
use super::{Ctx, parse_ref};
use crate::output::human_size;

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// File to upload
    pub file: PathBuf,
    /// Repository to upload into, e.g. 127.0.0.1:5000/models/qwen
    #[arg(long, value_name = "REPO")]
    pub repo: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub transfer: super::remote::TransferArgs,
}

pub async fn run(args: UploadArgs, ctx: Ctx) -> Result<ExitCode> {
    let repo = parse_ref(&args.repo)?;
    let client = args.registry.transfer_client(&ctx, &args.transfer)?;
    let size = std::fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
    let bars = Bars::new(&ctx, size, "uploading");
    let report = upload_file(&client, &ctx.store()?, &args.file, &repo, &bars).await;
    bars.finish();
    let report = report?;
    if ctx.out.json {
        ctx.out.print_json(&report)?;
    } else {
        let file = args.file.display();
        ctx.out.status(match report.action {
            BlobAction::Uploaded => format!(
                "uploaded {file} ({}) to {} as {}: a `{} build --output-remote` of it there skips the upload",
                human_size(report.size),
                repo.name(),
                report.digest,
                ctx.display_name
            ),
            BlobAction::Mounted => format!(
                "{file} was already in another repository of {}: mounted into {} as {}, nothing uploaded",
                repo.registry,
                repo.name(),
                report.digest
            ),
            BlobAction::Exists => format!(
                "{file} is already in {} as {}: nothing uploaded",
                repo.name(),
                report.digest
            ),
        });
        ctx.out.data(format!("{}", report.digest));
    }
    Ok(ExitCode::SUCCESS)
}
