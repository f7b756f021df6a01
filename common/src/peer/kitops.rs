//! KitOps ModelKits (kitops-ml/kitops `pkg/lib/constants`, `pkg/artifact/kitfile.go`,
//! `pkg/lib/filesystem/tar.go`).
//!
//! A ModelKit's config is the Kitfile as JSON (`package`, `model`, `code`,
//! `datasets`, `docs`, `prompts`; each entry also carries the `digest` and
//! `diffId` of its layer). Layers are `application/vnd.kitops.modelkit.<type>.v1.<tar|raw>[+gzip|+zstd]`;
//! tar entries are named relative to the packed directory (`models`,
//! `models/x.gguf`, directory entries included, uid 1000), so a tar layer
//! is unpacked at the model root by its header names through the same safe
//! engine as every other tar. Newer kit versions also annotate layers with
//! `org.cncf.model.filepath`; raw layers always have it. Compressed raw
//! layers are refused (no reader in the wild writes them).

use serde::Deserialize;

use crate::manifest::Manifest;
use crate::media::LayerFormat;

use super::{KitModel, ModelSummary};

pub const ARTIFACT_TYPE: &str = "application/vnd.kitops.modelkit.manifest.v1+json";
pub const CONFIG: &str = "application/vnd.kitops.modelkit.config.v1+json";
const LAYER_PREFIX: &str = "application/vnd.kitops.modelkit.";
const LAYER_TYPES: &[&str] = &[
    "model",
    "modelpart",
    "dataset",
    "code",
    "docs",
    "prompts",
    "mcpb",
];

/// kit's own test: artifactType or config media type.
pub fn is_modelkit(manifest: &Manifest) -> bool {
    manifest.artifact_type.as_deref() == Some(ARTIFACT_TYPE) || manifest.config.media_type == CONFIG
}

/// `…<type>.v1.tar[+gzip|+zstd]` → the tar format; `…<type>.v1.raw` → raw.
pub fn layer_format(media_type: &str) -> Option<LayerFormat> {
    let rest = media_type.strip_prefix(LAYER_PREFIX)?;
    let (kind, format) = rest.split_once(".v1.")?;
    if !LAYER_TYPES.contains(&kind) {
        return None;
    }
    Some(match format {
        "tar" => LayerFormat::Tar,
        "tar+gzip" => LayerFormat::TarGzip,
        "tar+zstd" => LayerFormat::TarZstd,
        "raw" => LayerFormat::Raw,
        _ => return None,
    })
}

/// The Kitfile fields `inspect` and `ls` show. Unknown fields are ignored here
/// (kit itself rejects them; we only read).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kitfile {
    #[serde(default)]
    package: Package,
    #[serde(default)]
    model: Option<Model>,
}

#[derive(Debug, Default, Deserialize)]
struct Package {
    name: Option<String>,
    version: Option<String>,
    description: Option<String>,
    license: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Model {
    name: Option<String>,
    path: Option<String>,
    license: Option<String>,
    framework: Option<String>,
    format: Option<String>,
    version: Option<String>,
    description: Option<String>,
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Default, Deserialize)]
struct Part {
    path: Option<String>,
}

pub(super) fn summarize(config: &[u8]) -> ModelSummary {
    let Ok(k) = serde_json::from_slice::<Kitfile>(config) else {
        return ModelSummary::default();
    };
    let m = k.model.unwrap_or_default();
    // The package names the kit; the model entry keeps its own name, path and
    // parts, shown apart so neither hides the other.
    let model = KitModel {
        name: m.name.clone(),
        path: m.path,
        version: m.version.clone(),
        framework: m.framework.clone(),
        format: m.format.clone(),
        license: m.license.clone(),
        parts: m.parts.into_iter().filter_map(|p| p.path).collect(),
    };
    ModelSummary {
        name: k.package.name.or(m.name),
        version: k.package.version.or(m.version),
        family: m.framework,
        format: m.format,
        description: k.package.description.or(m.description),
        license: k.package.license.or(m.license),
        model: (model != KitModel::default()).then_some(model),
        ..Default::default()
    }
}
