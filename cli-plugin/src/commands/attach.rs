//! `attach FILE -s SRC -t DST`: SRC plus (or replacing, with --force) one file.
//! Local by default; `--output-remote` works registry→registry, mounting SRC's
//! blobs server-side so no weights are pulled.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::media::{LayerFormat, LayerKind};
use modelpack_common::transfer::{attach_local, attach_remote};

use super::remote::RegistryArgs;
use super::{Ctx, parse_ref};

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// File to add
    pub file: PathBuf,
    /// Source model
    #[arg(short = 's', long = "source", value_name = "REF")]
    pub source: String,
    /// Reference of the new model
    #[arg(short = 't', long = "target", value_name = "REF")]
    pub target: String,
    /// Directory inside the model to put the file in
    #[arg(short = 'd', long, value_name = "DIR")]
    pub destination_dir: Option<String>,
    /// Replace a layer with the same path
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Layer kind [default: classified like `modelfile generate`]
    #[arg(long, value_parser = parse_kind)]
    pub kind: Option<LayerKind>,
    /// Layer encoding
    #[arg(long, default_value = "raw", value_parser = parse_format)]
    pub layer_format: LayerFormat,
    /// Read SRC from and write DST to the registry
    #[arg(long)]
    pub output_remote: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub transfer: super::remote::TransferArgs,
}

fn parse_kind(s: &str) -> Result<LayerKind, String> {
    Ok(match s {
        "config" | "weight.config" => LayerKind::WeightConfig,
        "model" | "weight" => LayerKind::Weight,
        "code" => LayerKind::Code,
        "doc" => LayerKind::Doc,
        "dataset" => LayerKind::Dataset,
        _ => {
            return Err(format!(
                "unknown kind {s:?}: config, weight, code, doc or dataset"
            ));
        }
    })
}

fn parse_format(s: &str) -> Result<LayerFormat, String> {
    s.parse()
        .map_err(|e: modelpack_common::Error| e.to_string())
}

pub async fn run(args: AttachArgs, ctx: Ctx) -> Result<ExitCode> {
    let (src, dst) = (parse_ref(&args.source)?, parse_ref(&args.target)?);
    let store = ctx.store()?;
    let (digest, sent) = if args.output_remote {
        let client = args.registry.transfer_client(&ctx, &args.transfer)?;
        attach_remote(
            &client,
            &store,
            &args.file,
            &src,
            &dst,
            args.destination_dir.as_deref(),
            args.kind,
            args.layer_format,
            args.force,
        )
        .await?
    } else {
        let (file, dir, kind, format, force) = (
            args.file.clone(),
            args.destination_dir.clone(),
            args.kind,
            args.layer_format,
            args.force,
        );
        let (s2, d2) = (src.clone(), dst.clone());
        (
            super::blocking(move || {
                Ok(attach_local(
                    &store,
                    &file,
                    &s2,
                    &d2,
                    dir.as_deref(),
                    kind,
                    format,
                    force,
                )?)
            })
            .await?,
            0,
        )
    };
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({"reference": dst.to_string(), "digest": digest.to_string(), "bytesSent": sent}))?;
    } else {
        ctx.out.status(format!(
            "attached {} to {src} as {dst}",
            args.file.display()
        ));
        ctx.out.data(format!("{digest}"));
    }
    Ok(ExitCode::SUCCESS)
}
