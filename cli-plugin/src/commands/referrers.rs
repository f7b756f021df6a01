//! `referrers REF [--remote]` (like `oras discover`): what is attached to a
//! model — chunk indexes, signatures, SBOMs — with artifactType, digest,
//! size and annotations, from the store or the registry.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::manifest::Descriptor;
use modelpack_common::text::escape_control as esc;

use super::remote::RegistryArgs;
use super::{Ctx, parse_ref};
use crate::output::{human_size, table};

#[derive(Debug, Args)]
pub struct ReferrersArgs {
    /// Model reference
    pub reference: String,
    /// Ask the registry (referrers API, else the tag schema)
    #[arg(long)]
    pub remote: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run(args: ReferrersArgs, ctx: Ctx) -> Result<ExitCode> {
    let reference = parse_ref(&args.reference)?;
    let (digest, list): (String, Vec<Descriptor>) = if args.remote {
        let client = args.registry.client(&ctx)?;
        let f = client.get_manifest(&reference).await?;
        let list = modelpack_common::signing::referrer::list_remote(&client, &reference, &f.digest)
            .await?;
        (f.digest.to_string(), list)
    } else {
        let store = ctx.existing_store()?;
        let loaded = store.load_manifest(&reference)?;
        let mut list = Vec::new();
        for e in store.entries()? {
            if list
                .iter()
                .any(|d: &Descriptor| d.digest == e.descriptor.digest)
            {
                continue;
            }
            if let Ok(m) = store.load_manifest_digest(&e.descriptor.digest)
                && m.manifest.subject.as_ref().map(|s| &s.digest) == Some(&loaded.digest)
            {
                let mut d = e.descriptor.clone();
                d.annotations = m.manifest.annotations.clone();
                d.artifact_type = m.manifest.artifact_type.clone();
                list.push(d);
            }
        }
        (loaded.digest.to_string(), list)
    };
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({
            "reference": reference.to_string(),
            "digest": digest,
            "referrers": list,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                esc(d.artifact_type.as_deref().unwrap_or("-")).into_owned(),
                d.digest.to_string(),
                human_size(d.size),
                esc(&d
                    .annotations
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "))
                .into_owned(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["ARTIFACT TYPE", "DIGEST", "SIZE", "ANNOTATIONS"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}
