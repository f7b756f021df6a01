//! `inspect REF`: manifest, config and layers, as a table or `--json`.
//! The digest shown is that of the stored bytes, never of a re-serialisation.
//! Each layer's chunk index is shown with its trust verdict (bound, pinned,
//! unbound, none), found among the model's local referrers, or with
//! `--remote` through the registry's referrers API or tag schema.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::Digest;
use modelpack_common::chunkindex::{LayerIndex, local, trust};
use modelpack_common::manifest::Manifest;
use modelpack_common::peer::{ModelSummary, summarize};
use modelpack_common::text::escape_control as esc;
use serde::Serialize;

use super::{Ctx, parse_ref};
use crate::output::{human_size, table};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Model reference (tag or digest)
    pub reference: String,
    /// Print only the raw model config JSON
    #[arg(long)]
    pub config: bool,
    /// Print only the raw manifest JSON
    #[arg(long)]
    pub manifest: bool,
    /// Inspect the model in its registry instead of the local store
    #[arg(long)]
    pub remote: bool,
    #[command(flatten)]
    pub registry: super::remote::RegistryArgs,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectOutput {
    pub reference: String,
    pub digest: String,
    pub artifact_type: Option<String>,
    pub config_digest: String,
    /// What kind of model this is and its main fields, whoever produced it
    /// (ModelPack config, Docker Model Runner config, KitOps Kitfile).
    pub summary: ModelSummary,
    pub config: serde_json::Value,
    pub layers: Vec<LayerRow>,
    pub size: u64,
    /// Digests of the model's chunk index referrers.
    pub chunk_referrers: Vec<String>,
}

/// The chunk index a layer has, and how far it may be trusted.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerChunks {
    pub binding: trust::Binding,
    pub index: Option<String>,
    pub chunk_size: Option<u64>,
    pub chunks: Option<usize>,
    pub files: Option<usize>,
}

/// What `describe` needs to show chunk indexes: referrers, their parsed
/// indexes and the index digests pinned for this manifest.
#[derive(Default)]
pub struct ChunkView {
    pub referrers: Vec<Digest>,
    pub indexes: Vec<(Digest, LayerIndex)>,
    pub pins: Vec<Digest>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRow {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub filepath: Option<String>,
    pub chunk_index: LayerChunks,
}

pub fn describe(
    reference: &str,
    digest: &Digest,
    manifest: &Manifest,
    config_bytes: &[u8],
    chunks: &ChunkView,
) -> InspectOutput {
    let verdicts = trust::assess(manifest, &chunks.indexes, &chunks.pins);
    InspectOutput {
        reference: reference.to_string(),
        digest: digest.to_string(),
        artifact_type: manifest.artifact_type.clone(),
        config_digest: manifest.config.digest.to_string(),
        summary: summarize(manifest, config_bytes),
        config: serde_json::from_slice(config_bytes).unwrap_or(serde_json::Value::Null),
        layers: manifest
            .layers
            .iter()
            .zip(verdicts)
            .map(|(l, v)| {
                let idx = v
                    .index
                    .as_ref()
                    .and_then(|d| chunks.indexes.iter().find(|(x, _)| x == d))
                    .map(|(_, i)| i);
                LayerRow {
                    media_type: l.media_type.clone(),
                    digest: l.digest.to_string(),
                    size: l.size,
                    filepath: l.filepath().map(str::to_string),
                    chunk_index: LayerChunks {
                        binding: v.binding,
                        index: v.index.as_ref().map(|d| d.to_string()),
                        chunk_size: idx.map(|i| i.chunk_size),
                        chunks: idx.map(|i| i.chunks.len()),
                        files: idx.map(|i| i.files.len()),
                    },
                }
            })
            .collect(),
        size: manifest.content_size(),
        chunk_referrers: chunks.referrers.iter().map(|d| d.to_string()).collect(),
    }
}

/// Human output. Every string that came from the artifact (filepaths, media
/// types, config fields) goes through `esc`: a layer named `\x1b]0;...` must
/// not drive the user's terminal. JSON output is left to serde.
pub fn print(ctx: &Ctx, o: &InspectOutput) -> Result<()> {
    if ctx.out.json {
        return ctx.out.print_json(o);
    }
    ctx.out
        .data(format!("Reference:     {}", esc(&o.reference)));
    ctx.out.data(format!("Digest:        {}", o.digest));
    ctx.out
        .data(format!("Kind:          {}", esc(&o.summary.kind)));
    ctx.out.data(format!(
        "Artifact type: {}",
        esc(o.artifact_type.as_deref().unwrap_or("-"))
    ));
    ctx.out.data(format!("Config:        {}", o.config_digest));
    let s = &o.summary;
    let field = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            ctx.out.data(format!("  {k:<13}{}", esc(v)));
        }
    };
    field("name", &s.name);
    field("version", &s.version);
    field("family", &s.family);
    field("created", &s.created);
    field("architecture", &s.architecture);
    field("format", &s.format);
    field("paramSize", &s.param_size);
    field("precision", &s.precision);
    field("quantization", &s.quantization);
    field("license", &s.license);
    field("description", &s.description);
    field("declaredSize", &s.declared_size);
    if let Some(m) = &s.model {
        let mut parts = vec![m.name.clone().unwrap_or_else(|| "-".into())];
        if let Some(p) = &m.path {
            parts.push(format!("at {p}"));
        }
        for (k, v) in [
            ("version", &m.version),
            ("framework", &m.framework),
            ("format", &m.format),
            ("license", &m.license),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k} {v}"));
            }
        }
        if !m.parts.is_empty() {
            parts.push(format!("parts {}", m.parts.join(", ")));
        }
        field("model", &Some(parts.join(", ")));
    }
    ctx.out
        .data(format!("Size:          {}", human_size(o.size)));
    let indexed = o
        .layers
        .iter()
        .filter(|l| l.chunk_index.index.is_some())
        .count();
    match o.chunk_referrers.as_slice() {
        [] => ctx.out.data("Chunk index:   none"),
        refs => {
            for r in refs {
                ctx.out.data(format!(
                    "Chunk index:   referrer {r} ({indexed} of {} layers indexed)",
                    o.layers.len()
                ));
            }
        }
    }
    ctx.out.data("");
    let rows: Vec<Vec<String>> = o
        .layers
        .iter()
        .map(|l| {
            vec![
                esc(l.filepath.as_deref().unwrap_or("-")).into_owned(),
                human_size(l.size),
                l.digest[7..19].to_string(),
                chunk_cell(&l.chunk_index),
                esc(&l.media_type).into_owned(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["FILEPATH", "SIZE", "DIGEST", "CHUNKS", "MEDIA TYPE"],
            &rows
        )
    );
    Ok(())
}

/// `bound 3×4MiB`, `unbound 1300×64KiB`, or `-`. Chunk sizes are powers of
/// two (checked on parse), so binary units are exact.
fn chunk_cell(c: &LayerChunks) -> String {
    match (c.chunks, c.chunk_size) {
        (Some(n), Some(cs)) if cs >= 1 << 20 => {
            format!("{} {n}×{}MiB", c.binding.as_str(), cs >> 20)
        }
        (Some(n), Some(cs)) => format!("{} {n}×{}KiB", c.binding.as_str(), cs >> 10),
        _ => "-".into(),
    }
}

pub async fn run(args: InspectArgs, ctx: Ctx) -> Result<ExitCode> {
    let reference = parse_ref(&args.reference)?;
    if args.remote {
        return run_remote(args, ctx, reference).await;
    }
    let store = ctx.existing_store()?;
    let loaded = store.load_manifest(&reference)?;
    if args.manifest {
        ctx.out
            .data(format!("{}", String::from_utf8_lossy(&loaded.bytes)));
        return Ok(ExitCode::SUCCESS);
    }
    let config = store.read_blob(&loaded.manifest.config.digest)?;
    if args.config {
        ctx.out
            .data(format!("{}", String::from_utf8_lossy(&config)));
        return Ok(ExitCode::SUCCESS);
    }
    let found = local::indexes(&store, &loaded.digest)?;
    let view = ChunkView {
        referrers: found.referrers,
        indexes: found.indexes,
        pins: local::pins(&store, &loaded.digest)?,
    };
    print(
        &ctx,
        &describe(
            &reference.to_string(),
            &loaded.digest,
            &loaded.manifest,
            &config,
            &view,
        ),
    )?;
    Ok(ExitCode::SUCCESS)
}

async fn run_remote(
    args: InspectArgs,
    ctx: Ctx,
    reference: modelpack_common::Reference,
) -> Result<ExitCode> {
    let client = args.registry.client(&ctx)?;
    let fetched = client.get_manifest(&reference).await?;
    if args.manifest {
        ctx.out
            .data(format!("{}", String::from_utf8_lossy(&fetched.bytes)));
        return Ok(ExitCode::SUCCESS);
    }
    let manifest = Manifest::parse(&fetched.bytes, &format!("manifest of {reference}"))?;
    let config =
        modelpack_common::transfer::fetch_small_blob(&client, &reference, &manifest.config).await?;
    if args.config {
        ctx.out
            .data(format!("{}", String::from_utf8_lossy(&config)));
        return Ok(ExitCode::SUCCESS);
    }
    let subject =
        modelpack_common::chunkindex::referrer::subject_of(&fetched.bytes, &fetched.digest);
    let found =
        modelpack_common::transfer::referrers::fetch(&client, &reference, &subject, &manifest)
            .await?;
    for w in &found.warnings {
        ctx.out.status(format!("warning: {}", esc(w)));
    }
    let pins = match ctx.existing_store() {
        Ok(store) => local::pins(&store, &fetched.digest)?,
        Err(_) => Vec::new(),
    };
    let view = ChunkView {
        referrers: found.referrers.iter().map(|(d, _)| d.clone()).collect(),
        indexes: found.indexes.into_iter().map(|(d, _, i)| (d, i)).collect(),
        pins,
    };
    print(
        &ctx,
        &describe(
            &reference.to_string(),
            &fetched.digest,
            &manifest,
            &config,
            &view,
        ),
    )?;
    Ok(ExitCode::SUCCESS)
}
