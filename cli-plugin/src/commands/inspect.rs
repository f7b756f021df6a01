//! `inspect REF`: manifest, config and layers, as a table or `--json`.
//! The digest shown is that of the stored bytes, never of a re-serialisation.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::Digest;
use modelpack_common::config::ModelConfig;
use modelpack_common::manifest::Manifest;
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
    pub config: serde_json::Value,
    pub layers: Vec<LayerRow>,
    pub size: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRow {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub filepath: Option<String>,
}

pub fn describe(
    reference: &str,
    digest: &Digest,
    manifest: &Manifest,
    config_bytes: &[u8],
) -> InspectOutput {
    InspectOutput {
        reference: reference.to_string(),
        digest: digest.to_string(),
        artifact_type: manifest.artifact_type.clone(),
        config_digest: manifest.config.digest.to_string(),
        config: serde_json::from_slice(config_bytes).unwrap_or(serde_json::Value::Null),
        layers: manifest
            .layers
            .iter()
            .map(|l| LayerRow {
                media_type: l.media_type.clone(),
                digest: l.digest.to_string(),
                size: l.size,
                filepath: l.filepath().map(str::to_string),
            })
            .collect(),
        size: manifest.content_size(),
    }
}

/// Human output. Every string that came from the artifact (filepaths, media
/// types, config fields) goes through `esc`: a layer named `\x1b]0;...` must
/// not drive the user's terminal. JSON output is left to serde.
pub fn print(ctx: &Ctx, o: &InspectOutput) -> Result<()> {
    if ctx.out.json {
        return ctx.out.print_json(o);
    }
    let cfg: Option<ModelConfig> = serde_json::from_value(o.config.clone()).ok();
    println!("Reference:     {}", esc(&o.reference));
    println!("Digest:        {}", o.digest);
    println!(
        "Artifact type: {}",
        esc(o.artifact_type.as_deref().unwrap_or("-"))
    );
    println!("Config:        {}", o.config_digest);
    if let Some(c) = &cfg {
        let d = &c.descriptor;
        let s = &c.config;
        let field = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                println!("  {k:<13}{}", esc(v));
            }
        };
        field("name", &d.name);
        field("family", &d.family);
        field("createdAt", &d.created_at);
        field("architecture", &s.architecture);
        field("format", &s.format);
        field("paramSize", &s.param_size);
        field("precision", &s.precision);
        field("quantization", &s.quantization);
    }
    println!("Size:          {}", human_size(o.size));
    println!();
    let rows: Vec<Vec<String>> = o
        .layers
        .iter()
        .map(|l| {
            vec![
                esc(l.filepath.as_deref().unwrap_or("-")).into_owned(),
                human_size(l.size),
                l.digest[7..19].to_string(),
                esc(&l.media_type).into_owned(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["FILEPATH", "SIZE", "DIGEST", "MEDIA TYPE"], &rows)
    );
    Ok(())
}

pub async fn run(args: InspectArgs, ctx: Ctx) -> Result<ExitCode> {
    let reference = parse_ref(&args.reference)?;
    if args.remote {
        return run_remote(args, ctx, reference).await;
    }
    let store = ctx.store()?;
    let loaded = store.load_manifest(&reference)?;
    if args.manifest {
        println!("{}", String::from_utf8_lossy(&loaded.bytes));
        return Ok(ExitCode::SUCCESS);
    }
    let config = store.read_blob(&loaded.manifest.config.digest)?;
    if args.config {
        println!("{}", String::from_utf8_lossy(&config));
        return Ok(ExitCode::SUCCESS);
    }
    print(
        &ctx,
        &describe(
            &reference.to_string(),
            &loaded.digest,
            &loaded.manifest,
            &config,
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
        println!("{}", String::from_utf8_lossy(&fetched.bytes));
        return Ok(ExitCode::SUCCESS);
    }
    let manifest = Manifest::parse(&fetched.bytes, &format!("manifest of {reference}"))?;
    let config =
        modelpack_common::transfer::fetch_small_blob(&client, &reference, &manifest.config).await?;
    if args.config {
        println!("{}", String::from_utf8_lossy(&config));
        return Ok(ExitCode::SUCCESS);
    }
    print(
        &ctx,
        &describe(&reference.to_string(), &fetched.digest, &manifest, &config),
    )?;
    Ok(ExitCode::SUCCESS)
}
