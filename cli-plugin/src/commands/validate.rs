//! `validate REF | --config FILE | --manifest FILE`: the HEAD JSON Schema plus
//! our lints; prints every problem with its JSON path, exits 1 when invalid.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use modelpack_common::text::escape_control as esc;
use modelpack_common::validate::{self, Report};

use super::{Ctx, parse_ref};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["reference", "config", "manifest"])))]
pub struct ValidateArgs {
    /// Model reference in the local store
    pub reference: Option<String>,
    /// A model config JSON file
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A manifest JSON file (add --config to also check diffIds against it)
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Fail on warnings too (what the spec's prose asks beyond its schema,
    /// e.g. paramSize "8.03B"): for pipelines that publish models
    #[arg(long)]
    pub strict: bool,
}

fn read(p: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
}

pub async fn run(args: ValidateArgs, ctx: Ctx) -> Result<ExitCode> {
    let mut digest: Option<String> = None;
    let (what, report): (String, Report) = if let Some(r) = &args.reference {
        let reference = parse_ref(r)?;
        let store = ctx.existing_store()?;
        let loaded = store.load_manifest(&reference)?;
        digest = Some(loaded.digest.to_string());
        let config = store.read_blob(&loaded.manifest.config.digest)?;
        let report = validate::validate_stored(&loaded.bytes, &config, &store);
        (reference.to_string(), report)
    } else {
        match (&args.manifest, &args.config) {
            (Some(m), Some(c)) => (
                format!("{} + {}", m.display(), c.display()),
                validate::validate_artifact(&read(m)?, &read(c)?, &|_| None),
            ),
            (Some(m), None) => (
                m.display().to_string(),
                validate::validate_manifest(&read(m)?),
            ),
            (None, Some(c)) => (
                c.display().to_string(),
                validate::validate_config(&read(c)?),
            ),
            (None, None) => unreachable!("clap requires one input"),
        }
    };
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({"reference": what, "digest": digest, "input": what, "valid": report.is_valid(), "strict": args.strict, "problems": report.problems}))?;
    } else {
        // Problems quote values from the artifact; escape them so a crafted
        // annotation cannot rewrite the terminal (and hide other problems).
        for p in &report.problems {
            ctx.out.data(format!("{}", esc(&p.to_string())));
        }
        let what = esc(&what);
        if report.is_valid() {
            ctx.out.status(format!(
                "{what}: valid ({} warning{})",
                report.warnings().count(),
                if report.warnings().count() == 1 {
                    ""
                } else {
                    "s"
                }
            ));
        } else {
            ctx.out.problem(format!(
                "{what}: invalid ({} error{})",
                report.errors().count(),
                if report.errors().count() == 1 {
                    ""
                } else {
                    "s"
                }
            ));
        }
    }
    let warnings_fail = args.strict && report.warnings().next().is_some();
    if warnings_fail && report.is_valid() && !ctx.out.json {
        ctx.out.problem("--strict: warnings count as failures");
    }
    Ok(if report.is_valid() && !warnings_fail {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
