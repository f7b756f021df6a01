//! ModelPack media types and annotation keys, in both identifier families.
//!
//! We write the CNCF family (`application/vnd.cncf.model.*`, `org.cncf.model.*`)
//! by default and the legacy CNAI family on request (Harbor 2.13 dispatches on
//! it). Readers accept both, plus Docker Model Runner's legacy `.v1.gguf` /
//! `.v1.safetensors` weight types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const OCI_EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// `org.opencontainers.image.title`: the file name `oras pull` writes.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// oras marks directory layers (tar+gzip) it expects clients to unpack.
pub const ANNOTATION_ORAS_UNPACK: &str = "io.deis.oras.content.unpack";

/// A chunk index blob (docs/chunk-index.md): fixed-size chunk digests of one
/// uncompressed layer, and the offsets of a tar layer's files. Also the
/// `artifactType` of the referrer manifest that carries a model's indexes.
pub const CHUNK_INDEX: &str = "application/vnd.modelpack.chunks.v1+json";
/// On a model layer descriptor: the digest of that layer's chunk index blob.
/// It binds the index to the model digest (the annotation is in the manifest).
pub const ANNOTATION_CHUNKS_DIGEST: &str = "org.modelpack.chunks.digest";
/// On a referrer's layer: the digest of the model layer that index describes.
pub const ANNOTATION_CHUNKS_LAYER: &str = "org.modelpack.chunks.layer";

/// The identifier family an artifact uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[default]
    Cncf,
    Cnai,
}

impl Family {
    fn media_prefix(self) -> &'static str {
        match self {
            Family::Cncf => "application/vnd.cncf.model.",
            Family::Cnai => "application/vnd.cnai.model.",
        }
    }

    fn annotation_prefix(self) -> &'static str {
        match self {
            Family::Cncf => "org.cncf.model.",
            Family::Cnai => "org.cnai.model.",
        }
    }

    /// `org.cncf.model.` / `org.cnai.model.`
    pub fn model_annotation_prefix(self) -> &'static str {
        self.annotation_prefix()
    }

    /// `org.cncf.modctl.` / `org.cnai.modctl.`
    pub fn modctl_annotation_prefix(self) -> &'static str {
        match self {
            Family::Cncf => "org.cncf.modctl.",
            Family::Cnai => "org.cnai.modctl.",
        }
    }

    pub fn artifact_type(self) -> String {
        format!("{}manifest.v1+json", self.media_prefix())
    }

    pub fn config_media_type(self) -> String {
        format!("{}config.v1+json", self.media_prefix())
    }

    pub fn filepath_annotation(self) -> String {
        format!("{}filepath", self.annotation_prefix())
    }

    pub fn metadata_annotation(self) -> String {
        format!("{}file.metadata+json", self.annotation_prefix())
    }

    pub fn untested_annotation(self) -> String {
        format!("{}file.mediatype.untested", self.annotation_prefix())
    }

    /// The annotation modctl stores the Modelfile under.
    pub fn modelfile_annotation(self) -> &'static str {
        match self {
            Family::Cncf => "org.cncf.modctl.modelfile",
            Family::Cnai => "org.cnai.modctl.modelfile",
        }
    }

    /// Which family a config media type or artifactType belongs to, if any.
    pub fn of_media_type(media_type: &str) -> Option<Family> {
        [Family::Cncf, Family::Cnai]
            .into_iter()
            .find(|f| media_type.starts_with(f.media_prefix()))
    }
}

/// What a layer holds, the `<kind>` part of `application/vnd.cncf.model.<kind>.v1.<fmt>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// tokenizer.json, config.json and similar (`weight.config`).
    #[serde(rename = "weight.config")]
    WeightConfig,
    Weight,
    Code,
    Doc,
    Dataset,
}

impl LayerKind {
    pub const ALL: [LayerKind; 5] = [
        LayerKind::WeightConfig,
        LayerKind::Weight,
        LayerKind::Code,
        LayerKind::Doc,
        LayerKind::Dataset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::WeightConfig => "weight.config",
            LayerKind::Weight => "weight",
            LayerKind::Code => "code",
            LayerKind::Doc => "doc",
            LayerKind::Dataset => "dataset",
        }
    }

    /// The Modelfile command that produces this kind.
    pub fn modelfile_command(self) -> &'static str {
        match self {
            LayerKind::WeightConfig => "CONFIG",
            LayerKind::Weight => "MODEL",
            LayerKind::Code => "CODE",
            LayerKind::Doc => "DOC",
            LayerKind::Dataset => "DATASET",
        }
    }
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a layer's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum LayerFormat {
    /// Exactly one file, not archived.
    #[default]
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "tar")]
    Tar,
    #[serde(rename = "tar+gzip")]
    TarGzip,
    #[serde(rename = "tar+zstd")]
    TarZstd,
}

impl LayerFormat {
    /// Raw and plain tar layers: the diffId is the blob digest.
    pub fn is_uncompressed(self) -> bool {
        matches!(self, LayerFormat::Raw | LayerFormat::Tar)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LayerFormat::Raw => "raw",
            LayerFormat::Tar => "tar",
            LayerFormat::TarGzip => "tar+gzip",
            LayerFormat::TarZstd => "tar+zstd",
        }
    }

    pub fn is_tar(self) -> bool {
        !matches!(self, LayerFormat::Raw)
    }

    pub fn is_compressed(self) -> bool {
        matches!(self, LayerFormat::TarGzip | LayerFormat::TarZstd)
    }
}

impl fmt::Display for LayerFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LayerFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "raw" => LayerFormat::Raw,
            "tar" => LayerFormat::Tar,
            "tar+gzip" | "tgz" | "gzip" => LayerFormat::TarGzip,
            "tar+zstd" | "zstd" => LayerFormat::TarZstd,
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown layer format {s:?}: expected raw, tar, tar+gzip or tar+zstd"
                )));
            }
        })
    }
}

/// A parsed ModelPack layer media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerType {
    pub family: Family,
    pub kind: LayerKind,
    pub format: LayerFormat,
    /// True for Docker Model Runner's `.v1.gguf`/`.v1.safetensors` (read-only support).
    pub legacy_dmr: bool,
}

impl LayerType {
    pub fn new(family: Family, kind: LayerKind, format: LayerFormat) -> Self {
        LayerType {
            family,
            kind,
            format,
            legacy_dmr: false,
        }
    }

    pub fn media_type(&self) -> String {
        format!(
            "{}{}.v1.{}",
            self.family.media_prefix(),
            self.kind,
            self.format
        )
    }

    /// Parses any of the 40 family/kind/format combinations, and DMR's legacy weight types.
    pub fn parse(media_type: &str) -> Option<LayerType> {
        let family = Family::of_media_type(media_type)?;
        let rest = &media_type[family.media_prefix().len()..];
        let (kind, format) = rest.split_once(".v1.")?;
        let kind = LayerKind::ALL.into_iter().find(|k| k.as_str() == kind)?;
        if kind == LayerKind::Weight && (format == "gguf" || format == "safetensors") {
            return Some(LayerType {
                family,
                kind,
                format: LayerFormat::Raw,
                legacy_dmr: true,
            });
        }
        let format = format.parse().ok()?;
        Some(LayerType::new(family, kind, format))
    }

    /// How to decode a foreign layer: ModelPack types by their suffix, plain OCI
    /// tar layers (oras directories) as tar, anything else as a raw file.
    pub fn decode_format(media_type: &str) -> LayerFormat {
        if let Some(t) = LayerType::parse(media_type) {
            return t.format;
        }
        if media_type.ends_with(".tar+gzip")
            || media_type.ends_with(".tar.gzip")
            || media_type.ends_with("tar+gz")
        {
            LayerFormat::TarGzip
        } else if media_type.ends_with(".tar+zstd") {
            LayerFormat::TarZstd
        } else if media_type.ends_with(".tar") {
            LayerFormat::Tar
        } else {
            LayerFormat::Raw
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_all_forty_types() {
        for family in [Family::Cncf, Family::Cnai] {
            for kind in LayerKind::ALL {
                for format in [
                    LayerFormat::Raw,
                    LayerFormat::Tar,
                    LayerFormat::TarGzip,
                    LayerFormat::TarZstd,
                ] {
                    let t = LayerType::new(family, kind, format);
                    assert_eq!(
                        LayerType::parse(&t.media_type()),
                        Some(t),
                        "{}",
                        t.media_type()
                    );
                }
            }
        }
    }

    #[test]
    fn known_strings() {
        assert_eq!(
            LayerType::new(Family::Cncf, LayerKind::WeightConfig, LayerFormat::Raw).media_type(),
            "application/vnd.cncf.model.weight.config.v1.raw"
        );
        assert_eq!(
            Family::Cnai.config_media_type(),
            "application/vnd.cnai.model.config.v1+json"
        );
        assert_eq!(
            Family::Cncf.filepath_annotation(),
            "org.cncf.model.filepath"
        );
    }

    #[test]
    fn dmr_legacy_weight_types_read_as_raw() {
        let t = LayerType::parse("application/vnd.cncf.model.weight.v1.gguf").unwrap();
        assert!(t.legacy_dmr);
        assert_eq!(t.format, LayerFormat::Raw);
        assert!(LayerType::parse("application/vnd.cncf.model.weight.v1.bogus").is_none());
        assert!(LayerType::parse("application/vnd.oci.image.layer.v1.tar").is_none());
    }
}
