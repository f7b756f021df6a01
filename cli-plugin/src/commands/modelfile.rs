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
    #[command(
        after_help = "Examples:\n  modelpack modelfile generate ./Qwen3-0.6B\n  modelpack modelfile generate --stdout --name qwen3 --family qwen3 ./Qwen3-0.6B\n  modelpack modelfile generate --exclude '*.pth' -O ./Modelfile.qwen ./Qwen3-0.6B"
    )]
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
    /// NAME: the model's name [default: the directory's name]
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// ARCH: its architecture, e.g. transformer [default: none]
    #[arg(long)]
    pub arch: Option<String>,
    /// FAMILY: e.g. llama, qwen3 [default: none]
    #[arg(long)]
    pub family: Option<String>,
    /// FORMAT of the weights, e.g. safetensors, gguf [default: from the weight files' extensions]
    #[arg(long)]
    pub format: Option<String>,
    /// PARAMSIZE, e.g. 8B, 6.7B, 500M [default: counted from safetensors/GGUF headers]
    #[arg(long)]
    pub param_size: Option<String>,
    /// PRECISION, e.g. bfloat16 [default: the most common tensor type in the headers]
    #[arg(long)]
    pub precision: Option<String>,
    /// QUANTIZATION, e.g. Q4_K_M [default: from GGUF headers]
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
