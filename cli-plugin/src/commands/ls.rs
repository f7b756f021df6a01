//! `ls`: REPOSITORY, TAG, DIGEST, CREATED, SIZE of every stored model.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::text::escape_control as esc;
use serde::Serialize;

use super::Ctx;
use crate::output::{human_size, table};

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only print references
    #[arg(long)]
    pub names: bool,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: String,
    pub created: Option<String>,
    pub size: u64,
    pub name: Option<String>,
}

pub async fn run(args: LsArgs, ctx: Ctx) -> Result<ExitCode> {
    let store = ctx.existing_store()?;
    let mut rows = Vec::new();
    for e in store.entries()? {
        // Chunk index referrers are part of their model, not models (`inspect` shows them).
        if modelpack_common::chunkindex::local::is_referrer_entry(&e) {
            continue;
        }
        let (repository, tag) = match &e.reference {
            Some(r) => match r.parse::<modelpack_common::Reference>() {
                Ok(p) => (p.name(), p.tag.clone()),
                Err(_) => (r.clone(), None),
            },
            None => (
                e.repository.clone().unwrap_or_else(|| "<none>".into()),
                None,
            ),
        };
        let (created, size, name) = match store.load_manifest_digest(&e.descriptor.digest) {
            Ok(m) => {
                let summary = store
                    .read_blob(&m.manifest.config.digest)
                    .ok()
                    .map(|b| modelpack_common::peer::summarize(&m.manifest, &b));
                (
                    summary.as_ref().and_then(|s| s.created.clone()),
                    m.manifest
                        .content_size()
                        .saturating_add(m.bytes.len() as u64),
                    summary.and_then(|s| s.name),
                )
            }
            Err(_) => (None, 0, None),
        };
        rows.push(Row {
            repository,
            tag,
            digest: e.descriptor.digest.to_string(),
            created,
            size,
            name,
        });
    }
    if ctx.out.json {
        ctx.out.print_json(&rows)?;
    } else if args.names {
        for r in &rows {
            match &r.tag {
                // Names come from the store's index.json, i.e. possibly from
                // a hostile artifact: escaped like the table below.
                Some(t) => println!("{}:{}", esc(&r.repository), esc(t)),
                None => println!("{}@{}", esc(&r.repository), r.digest),
            }
        }
    } else {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    esc(&r.repository).into_owned(),
                    esc(r.tag.as_deref().unwrap_or("<none>")).into_owned(),
                    r.digest[7..19].to_string(),
                    esc(r.created.as_deref().unwrap_or("-")).into_owned(),
                    human_size(r.size),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["REPOSITORY", "TAG", "DIGEST", "CREATED", "SIZE"], &cells)
        );
    }
    Ok(ExitCode::SUCCESS)
}
