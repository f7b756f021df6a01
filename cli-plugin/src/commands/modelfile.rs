//! `modelfile generate [DIR]`: write a Modelfile inferred from a model directory
//! (classification as modctl does it, plus FORMAT/PARAMSIZE/PRECISION/QUANTIZATION
//! from weight headers and config.json).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use modelpack_common::modelfile::{self, GenerateOptions};

use super::Ctx;

#[derive(Debug, Subcommand)]
pub enum ModelfileCommand {
    /// Generate a Modelfile for a model directory
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model directory
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Where to write: a directory (writes DIR/Modelfile) or a file path [default: the model directory]
    #[arg(short = 'O', long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Replace an existing Modelfile
    #[arg(long)]
    pub overwrite: bool,
    /// Print the Modelfile to stdout instead of writing it
    #[arg(long)]
    pub stdout: bool,
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    #[arg(long)]
    pub arch: Option<String>,
    #[arg(long)]
    pub family: Option<String>,
    #[arg(long)]
    pub format: Option<String>,
    #[arg(long)]
    pub param_size: Option<String>,
    #[arg(long)]
    pub precision: Option<String>,
    #[arg(long)]
    pub quantization: Option<String>,
    /// Only consider files matching these globs (repeatable)
    #[arg(long)]
    pub include: Vec<String>,
    /// Skip files matching these globs (repeatable)
    #[arg(long)]
    pub exclude: Vec<String>,
}

pub async fn run(cmd: ModelfileCommand, ctx: Ctx) -> Result<ExitCode> {
    let ModelfileCommand::Generate(a) = cmd;
    let opts = GenerateOptions {
        name: a.name,
        arch: a.arch,
        family: a.family,
        format: a.format,
        param_size: a.param_size,
        precision: a.precision,
        quantization: a.quantization,
        include: a.include,
        exclude: a.exclude,
    };
    if a.stdout {
        print!("{}", modelfile::generate(&a.dir, &opts)?.to_text());
        return Ok(ExitCode::SUCCESS);
    }
    let output = a.output.clone().unwrap_or_else(|| a.dir.clone());
    let written = modelfile::write_generated(&a.dir, &output, a.overwrite, &opts)?;
    if ctx.out.json {
        ctx.out
            .print_json(&serde_json::json!({"modelfile": written}))?;
    } else {
        ctx.out.status(format!("wrote {}", written.display()));
    }
    Ok(ExitCode::SUCCESS)
}
