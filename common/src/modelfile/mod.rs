//! The Modelfile language, build-context resolution, and `modelfile generate`.
//!
//! - [`parse`]: modctl-compatible syntax with errors that name file and line.
//! - [`resolve`]: patterns → files (`**` globs, directories, dedupe, symlink rules).
//! - [`generate`]: classify a directory and infer config fields from weight headers.

mod classify;
mod context;
mod generate;
mod headers;
mod parser;
mod sample;

pub use classify::classify;
pub use context::{ContextFile, resolve};
pub use generate::{GenerateOptions, generate, round_param_size, write_generated};
pub use headers::{
    TensorSummary, gguf_summary_from_bytes, read_gguf_summary, read_safetensors_summary,
    safetensors_summary_from_bytes,
};
pub use parser::{Entry, Modelfile, PRECISIONS, parse, valid_param_size};
pub use sample::write_sample_model;

#[cfg(test)]
mod proptests;
