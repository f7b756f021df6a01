//! `ls [REPOSITORY[:TAG]]`: REPOSITORY, TAG, DIGEST, CREATED (relative, as
//! docker says it; absolute in JSON), SIZE of every stored model. A model
//! being served lazily (`mount`) is listed under the tag it gets once
//! complete, marked partial with how much of it is on this node.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::text::escape_control as esc;
use serde::Serialize;

use super::Ctx;
use crate::output::{human_size, table};

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only models of this repository (REPOSITORY or REPOSITORY:TAG), as `docker images` takes it
    pub repository: Option<String>,
    /// Only print references (also with the global -q, as `docker images -q`)
    #[arg(long)]
    pub names: bool,
    /// Output format: table (default) or json (the same as --json)
    #[arg(long, value_parser = ["table", "json"], default_value = "table")]
    pub format: String,
}

/// `3 days ago`, as docker's CREATED column says it; `-` when unknown.
fn ago(created: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(t) = created.and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()) else {
        return "-".into();
    };
    let secs = (now - t.with_timezone(&chrono::Utc)).num_seconds();
    if secs < 0 {
        return "in the future".into();
    }
    let (n, unit) = match secs {
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 14 * 86_400 => (s / 86_400, "day"),
        s if s < 60 * 86_400 => (s / (7 * 86_400), "week"),
        s if s < 730 * 86_400 => (s / (30 * 86_400), "month"),
        s => (s / (365 * 86_400), "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

#[derive(Debug, Serialize)]
pub struct Row {
    /// `repository:tag`, or `repository@digest` when untagged.
    pub reference: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: String,
    pub created: Option<String>,
    pub size: u64,
    /// The model's own name and version (ModelPack descriptor, Kitfile
    /// package), where its config has them.
    pub name: Option<String>,
    pub version: Option<String>,
    /// Who produced it: "ModelPack", "Docker Model Runner (config v0.1)", "KitOps ModelKit".
    pub kind: Option<String>,
    /// Every blob is in the store (false for a lazily served model until
    /// its prefetch completes).
    pub complete: bool,
    /// Bytes of `size` on this node.
    #[serde(rename = "localBytes")]
    pub local_bytes: u64,
    /// For a partial lazy model: the tag it gets once complete (it is not
    /// tagged until then, so verbs that need every byte do not find it).
    #[serde(rename = "pendingTag", skip_serializing_if = "Option::is_none")]
    pub pending_tag: Option<String>,
}

/// `30.0 MB`, or `30.0 MB (partial, 12% here)` for a lazily served model.
fn size_cell(r: &Row) -> String {
    if r.complete {
        return human_size(r.size);
    }
    let pct = (r.local_bytes as f64 * 100.0 / r.size.max(1) as f64).floor();
    format!("{} (partial, {pct:.0}% here)", human_size(r.size))
}

/// `name version` from the model's config, `-` where it names nothing.
fn model_cell(r: &Row) -> String {
    match (&r.name, &r.version) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        (Some(n), None) => n.clone(),
        (None, Some(v)) => v.clone(),
        (None, None) => "-".into(),
    }
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
        let (size, local_bytes, complete, summary) =
            match store.load_manifest_digest(&e.descriptor.digest) {
                Ok(m) => {
                    // Each blob once, however many layers name it.
                    let mut seen = std::collections::HashSet::new();
                    let (mut local, mut unique) = (0u64, 0u64);
                    for d in std::iter::once(&m.manifest.config).chain(&m.manifest.layers) {
                        if seen.insert(d.digest.clone()) {
                            unique = unique.saturating_add(d.size);
                            local = local.saturating_add(modelpack_common::cas::local_bytes(
                                store.cas(),
                                &d.digest,
                                d.size,
                            ));
                        }
                    }
                    // The one size every verb reports: config + layers.
                    let size = m.manifest.content_size();
                    let complete = local >= unique;
                    (
                        size,
                        if complete { size } else { local },
                        complete,
                        store
                            .read_blob(&m.manifest.config.digest)
                            .ok()
                            .map(|b| modelpack_common::peer::summarize(&m.manifest, &b)),
                    )
                }
                Err(_) => (0, 0, false, None),
            };
        let summary = summary.unwrap_or_default();
        let reference = match &tag {
            Some(t) => format!("{repository}:{t}"),
            None => format!("{repository}@{}", e.descriptor.digest),
        };
        let pending_tag = e.pending_tag.clone().filter(|_| tag.is_none() && !complete);
        rows.push(Row {
            reference,
            repository,
            tag,
            digest: e.descriptor.digest.to_string(),
            created: summary.created,
            size,
            name: summary.name,
            version: summary.version,
            kind: (!summary.kind.is_empty()).then_some(summary.kind),
            complete,
            local_bytes,
            pending_tag,
        });
    }
    if let Some(want) = &args.repository {
        let (repo, tag) = match want.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
            Some((r, t)) => (r.to_string(), Some(t.to_string())),
            None => (want.clone(), None),
        };
        rows.retain(|r| {
            r.repository == repo
                && (tag.is_none() || r.tag == tag || (r.tag.is_none() && r.pending_tag == tag))
        });
    }
    if ctx.out.json || args.format == "json" {
        ctx.out.print_json(&rows)?;
    } else if args.names || ctx.out.quiet {
        for r in &rows {
            match &r.tag {
                // Names come from the store's index.json, i.e. possibly from
                // a hostile artifact: escaped like the table below.
                Some(t) => ctx.out.data(format!("{}:{}", esc(&r.repository), esc(t))),
                None => ctx.out.data(format!("{}@{}", esc(&r.repository), r.digest)),
            }
        }
    } else {
        let now = chrono::Utc::now();
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    esc(&r.repository).into_owned(),
                    esc(r
                        .tag
                        .as_deref()
                        .or(r.pending_tag.as_deref())
                        .unwrap_or("<none>"))
                    .into_owned(),
                    r.digest[7..19].to_string(),
                    esc(&model_cell(r)).into_owned(),
                    ago(r.created.as_deref(), now),
                    size_cell(r),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["REPOSITORY", "TAG", "DIGEST", "MODEL", "CREATED", "SIZE"],
                &cells
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}
