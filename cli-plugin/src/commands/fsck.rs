//! `fsck [--repair]`: verify every blob of the local store against its digest
//! and every reference's manifest, config and layers; list debris left by
//! interrupted writers. Exit 1 when anything is corrupt or missing.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::store::FsckProblem;

use super::Ctx;
use crate::output::human_size;

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Remove corrupt blobs, stray files and stale temp/partial downloads
    #[arg(long)]
    pub repair: bool,
}

pub async fn run(args: FsckArgs, ctx: Ctx) -> Result<ExitCode> {
    if !ctx.storage_dir.join("oci-layout").exists() {
        anyhow::bail!("no store at {}", ctx.storage_dir.display());
    }
    let store = ctx.existing_store()?;
    let repair = args.repair;
    let report = super::blocking(move || Ok(store.fsck(repair)?)).await?;
    let clean = report.is_clean();
    if ctx.out.json {
        ctx.out.print_json(&report)?;
    } else {
        for p in &report.problems {
            let line = match p {
                FsckProblem::CorruptBlob { digest, actual } => {
                    format!("corrupt blob {digest} (its bytes hash to {actual})")
                }
                FsckProblem::StrayFile { path } => format!("stray file {path}"),
                FsckProblem::MissingBlob { reference, digest } => {
                    format!("{reference}: blob {digest} is missing")
                }
                FsckProblem::BadManifest {
                    reference,
                    digest,
                    message,
                } => format!("{reference}: manifest {digest}: {message}"),
                FsckProblem::Debris { path, size } => {
                    format!("leftover temp file {path} ({})", human_size(*size))
                }
            };
            ctx.out.status(line);
        }
        ctx.out.status(format!(
            "{}: {} blobs verified ({}), {} references checked, {} problem(s){}",
            ctx.storage_dir.display(),
            report.blobs_verified,
            human_size(report.bytes_verified),
            report.references_checked,
            report.problems.len(),
            if repair {
                format!(", {} repaired", report.repaired)
            } else {
                String::new()
            }
        ));
        if !clean && !repair {
            ctx.out.status(format!(
                "hint: `{} fsck --repair` removes corrupt blobs; pull the affected models again",
                ctx.display_name
            ));
        }
    }
    Ok(if clean || repair {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
