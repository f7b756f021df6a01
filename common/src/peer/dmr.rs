//! Docker Model Runner's own artifact format (docker/model-runner
//! `pkg/distribution/types/config.go`, `internal/bundle/unpack.go`).
//!
//! DMR's manifests have no artifactType; the config media type says v0.1
//! (typed layers: one `gguf.v3` per shard, `license`, `mmproj`, chat
//! template, and for safetensors before v1.0.19 a `vllm.config.tar` of the
//! config files) or v0.2 (one `model.file`-style layer per file with its
//! relative path). Since v1.0.4 every layer carries `org.cncf.model.filepath`;
//! before that none does, and DMR's unpacker names files by type. We give
//! such layers the same names, so a model extracts to what `docker model`
//! would run:
//!
//! | layer type | name without an annotation |
//! |---|---|
//! | `gguf.v3` | `model.gguf`, or `model-00001-of-00003.gguf` … in layer order |
//! | `safetensors` | `model.safetensors`, or `model-0000i-of-0000n.safetensors` |
//! | `dduf` | `model.dduf` (DMR uses the blob's hex name, which means nothing to a user) |
//! | `mmproj` | `model.mmproj` |
//! | `chat.template.jinja` | `template.jinja` |
//! | `license` | `LICENSE`, or `LICENSE-0000i-of-0000n` (DMR never unpacks licences; we keep them) |
//! | `vllm.config.tar`, `dir.tar` | a tar, unpacked at the model root by its header names |
//! | `model.file` | none: refused, since no name can be derived |

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::media::LayerFormat;

use super::ModelSummary;

pub const CONFIG_V01: &str = "application/vnd.docker.ai.model.config.v0.1+json";
pub const CONFIG_V02: &str = "application/vnd.docker.ai.model.config.v0.2+json";
pub const GGUF: &str = "application/vnd.docker.ai.gguf.v3";
pub const SAFETENSORS: &str = "application/vnd.docker.ai.safetensors";
pub const DDUF: &str = "application/vnd.docker.ai.dduf";
pub const MMPROJ: &str = "application/vnd.docker.ai.mmproj";
pub const LICENSE: &str = "application/vnd.docker.ai.license";
pub const CHAT_TEMPLATE: &str = "application/vnd.docker.ai.chat.template.jinja";
pub const MODEL_FILE: &str = "application/vnd.docker.ai.model.file";
pub const VLLM_CONFIG_TAR: &str = "application/vnd.docker.ai.vllm.config.tar";
pub const DIR_TAR: &str = "application/vnd.docker.ai.dir.tar";

const PREFIX: &str = "application/vnd.docker.ai.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConfigVersion {
    #[serde(rename = "v0.1")]
    V01,
    #[serde(rename = "v0.2")]
    V02,
}

impl ConfigVersion {
    pub fn of(config_media_type: &str) -> Option<ConfigVersion> {
        match config_media_type {
            CONFIG_V01 => Some(ConfigVersion::V01),
            CONFIG_V02 => Some(ConfigVersion::V02),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConfigVersion::V01 => "v0.1",
            ConfigVersion::V02 => "v0.2",
        }
    }
}

/// Archives are tars; every other DMR type is one file.
pub fn layer_format(media_type: &str) -> Option<LayerFormat> {
    match media_type {
        VLLM_CONFIG_TAR | DIR_TAR => Some(LayerFormat::Tar),
        m if m.starts_with(PREFIX) && !m.starts_with("application/vnd.docker.ai.model.config") => {
            Some(LayerFormat::Raw)
        }
        _ => None,
    }
}

/// The stem and extension DMR's unpacker names a typed layer by.
fn naming(media_type: &str) -> Option<(&'static str, &'static str)> {
    Some(match media_type {
        GGUF => ("model", ".gguf"),
        SAFETENSORS => ("model", ".safetensors"),
        DDUF => ("model", ".dduf"),
        MMPROJ => ("model", ".mmproj"),
        CHAT_TEMPLATE => ("template", ".jinja"),
        LICENSE => ("LICENSE", ""),
        _ => return None,
    })
}

/// Names every unannotated typed layer: `stem.ext` when it is the only
/// layer of its type, else `stem-%05d-of-%05d.ext` numbered in layer order
/// over all layers of that type (DMR's `model-%05d-of-%05d.gguf`).
pub(super) fn derive_names(manifest: &mut Manifest) {
    let types: Vec<String> = manifest
        .layers
        .iter()
        .map(|l| l.media_type.clone())
        .collect();
    for (i, layer) in manifest.layers.iter_mut().enumerate() {
        if layer.filepath().is_some() {
            continue;
        }
        let Some((stem, ext)) = naming(&layer.media_type) else {
            continue;
        };
        let of_type = types.iter().filter(|t| **t == layer.media_type).count();
        let nth = types[..i]
            .iter()
            .filter(|t| **t == layer.media_type)
            .count()
            + 1;
        layer.derived_filepath = Some(if of_type == 1 {
            format!("{stem}{ext}")
        } else {
            format!("{stem}-{nth:05}-of-{of_type:05}{ext}")
        });
    }
}

/// DMR's config (`types.ConfigFile`; snake_case, `parameters` with two decimals).
#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    config: DockerSettings,
    #[serde(default)]
    descriptor: DockerDescriptor,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Debug, Default, Deserialize)]
struct DockerSettings {
    format: Option<String>,
    quantization: Option<String>,
    parameters: Option<String>,
    architecture: Option<String>,
    size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct DockerDescriptor {
    created: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

pub(super) fn summarize(config: &[u8]) -> ModelSummary {
    let Ok(c) = serde_json::from_slice::<DockerConfig>(config) else {
        return ModelSummary::default();
    };
    ModelSummary {
        created: c.descriptor.created,
        architecture: c.config.architecture,
        format: c.config.format,
        param_size: c.config.parameters,
        quantization: c.config.quantization,
        declared_size: c.config.size,
        ..Default::default()
    }
}

/// The diffIds a DMR config lists (`rootfs.diff_ids`), if it parses.
pub fn diff_ids(config: &[u8]) -> Option<Vec<String>> {
    serde_json::from_slice::<DockerConfig>(config)
        .ok()?
        .rootfs
        .map(|r| r.diff_ids)
}
