//! What the other ModelPack-family tools write, and how we read it.
//!
//! Owns one question for every reader (pull, extract, fetch, inspect, ls,
//! validate): *which kind of model artifact is this, how is each of its
//! layers decoded, and under which name does each file go?* The answers
//! come from the peers' own source (docs/compatibility.md cites it):
//! - ModelPack, either identifier family (our own output, modctl, DMR's
//!   `--format cncf`, `kit pack --use-model-pack`): the spec's rules.
//! - Docker Model Runner's own format ([`dmr`]): config
//!   `application/vnd.docker.ai.model.config.v0.1/v0.2+json`, layers typed by
//!   content; before DMR v1.0.4 (2025-11-12) no layer carries a file name, so
//!   names are derived from the media type exactly as DMR's unpacker does.
//! - KitOps ModelKits ([`kitops`]): the Kitfile as config, tar layers whose
//!   entries carry context-relative paths, untarred by header name.
//!
//! Anything else (a container image, an unknown artifact) is not a model:
//! `pull` refuses it before storing a byte.

pub mod dmr;
pub mod kitops;

use serde::Serialize;

use crate::config::ModelConfig;
use crate::manifest::Manifest;
use crate::media::{Family, LayerFormat};

/// Which producer's format a model manifest is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ArtifactKind {
    /// The CNCF ModelPack spec, in the current or the legacy identifiers.
    ModelPack(Family),
    /// Docker Model Runner's `v0.1` (typed layers) or `v0.2` (one file per layer) config.
    DockerModel(dmr::ConfigVersion),
    /// A KitOps ModelKit (Kitfile config).
    KitOps,
}

impl ArtifactKind {
    /// The kind of a manifest, by artifactType, then config media type; `None`
    /// for anything that is not a model (container images, unknown artifacts).
    pub fn of(manifest: &Manifest) -> Option<ArtifactKind> {
        if let Some(f) = manifest.model_family() {
            return Some(ArtifactKind::ModelPack(f));
        }
        if let Some(v) = dmr::ConfigVersion::of(&manifest.config.media_type) {
            return Some(ArtifactKind::DockerModel(v));
        }
        if kitops::is_modelkit(manifest) {
            return Some(ArtifactKind::KitOps);
        }
        None
    }

    /// For messages: "ModelPack", "Docker Model Runner (config v0.1)", …
    pub fn describe(self) -> String {
        match self {
            ArtifactKind::ModelPack(Family::Cncf) => "ModelPack".into(),
            ArtifactKind::ModelPack(Family::Cnai) => "ModelPack (legacy cnai identifiers)".into(),
            ArtifactKind::DockerModel(v) => format!("Docker Model Runner (config {})", v.as_str()),
            ArtifactKind::KitOps => "KitOps ModelKit".into(),
        }
    }

    pub fn is_modelpack(self) -> bool {
        matches!(self, ArtifactKind::ModelPack(_))
    }
}

/// The error text for a manifest that is not a model of any kind we read.
pub fn not_a_model(reference: &str, manifest: &Manifest) -> String {
    let what = match manifest.config.media_type.as_str() {
        "application/vnd.oci.image.config.v1+json"
        | "application/vnd.docker.container.image.v1+json" => " — it is a container image",
        _ => "",
    };
    format!(
        "{reference} is not a ModelPack artifact (artifactType {}, config {}){what}\nhint: modelpack reads ModelPack (cncf or cnai), Docker Model Runner and KitOps artifacts; pull images with docker or skopeo",
        manifest.artifact_type.as_deref().unwrap_or("none"),
        crate::extract::shown(&manifest.config.media_type),
    )
}

/// How a peer's layer type is decoded, for media types the ModelPack parser
/// does not know: DMR's config and directory archives and KitOps' tar layers
/// are tars (unpacked by header name at the model root); KitOps' raw layers
/// and DMR's typed files are one file each. `None`: not a peer type.
pub fn layer_format(media_type: &str) -> Option<LayerFormat> {
    dmr::layer_format(media_type).or_else(|| kitops::layer_format(media_type))
}

/// Gives each layer that carries no file path annotation the name its
/// producer's reader gives it (today: Docker Model Runner's typed layers).
/// Called by [`Manifest::parse`], so every reader sees the same names; the
/// names live in a field that is never serialised, so stored and pushed
/// manifests keep their bytes.
pub fn derive_names(manifest: &mut Manifest) {
    dmr::derive_names(manifest);
}

/// What `inspect` and `ls` show about a model, whoever produced it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSummary {
    /// "ModelPack", "Docker Model Runner (config v0.1)", "KitOps ModelKit".
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// The size the producer wrote into its config (DMR's `config.size`,
    /// e.g. "4.92 GB"), as written; the artifact's own byte count is `size`
    /// beside this summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared_size: Option<String>,
    /// A KitOps Kitfile's `model` entry (name, path, parts), which a
    /// ModelKit keeps apart from its `package` name and version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<KitModel>,
}

/// The `model` section of a Kitfile, as `inspect` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KitModel {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Paths of the model's `parts` (extra weight files).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
}

/// The summary of a manifest and its config bytes; fields the config does
/// not have (or a config that does not parse) are left empty.
pub fn summarize(manifest: &Manifest, config: &[u8]) -> ModelSummary {
    let kind = ArtifactKind::of(manifest);
    let mut s = match kind {
        Some(ArtifactKind::DockerModel(_)) => dmr::summarize(config),
        Some(ArtifactKind::KitOps) => kitops::summarize(config),
        _ => match ModelConfig::parse(config, "config") {
            Ok(c) => ModelSummary {
                name: c.descriptor.name,
                version: c.descriptor.version,
                family: c.descriptor.family,
                created: c.descriptor.created_at,
                architecture: c.config.architecture,
                format: c.config.format,
                param_size: c.config.param_size,
                precision: c.config.precision,
                quantization: c.config.quantization,
                description: c.descriptor.description,
                license: c.descriptor.licenses.map(|l| l.join(", ")),
                ..Default::default()
            },
            Err(_) => ModelSummary::default(),
        },
    };
    if s.created.is_none() {
        s.created = manifest
            .annotations
            .get(crate::media::ANNOTATION_CREATED)
            .cloned();
    }
    s.kind = kind.map_or_else(|| "unknown".into(), ArtifactKind::describe);
    s
}

#[cfg(test)]
mod tests;
