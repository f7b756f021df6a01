//! OCI manifest, index and descriptor types with byte-stable serialisation.
//!
//! oci-spec's types keep annotations in a `HashMap`, whose iteration order
//! changes from run to run; a manifest written through them would not have a
//! reproducible digest. These types use `BTreeMap` and a fixed field order,
//! serialise compactly, and are tolerant on read (unknown fields ignored,
//! Docker v2 manifests accepted). Digests of stored or received manifests are
//! always taken over the raw bytes, never over a re-serialisation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::media::{self, Family, LayerType};

pub type Annotations = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: Annotations,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    /// The name a peer's reader gives a layer that has no path annotation
    /// (Docker Model Runner's typed layers, see [`crate::peer::dmr`]); set by
    /// [`Manifest::parse`], never serialised.
    #[serde(skip)]
    pub derived_filepath: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            artifact_type: None,
            data: None,
            annotations: Annotations::new(),
            platform: None,
            derived_filepath: None,
        }
    }

    /// The OCI empty descriptor (`{}`), used as config of referrer artifacts.
    pub fn empty() -> Self {
        let mut d = Descriptor::new(media::OCI_EMPTY, Digest::of(b"{}"), 2);
        d.data = Some("e30=".into());
        d
    }

    /// The file path of a layer: `org.cncf.model.filepath`, then the cnai key,
    /// then the ORAS title, then the name its producer's reader derives from
    /// its type. The path is not sanitised here; extract does that.
    pub fn filepath(&self) -> Option<&str> {
        self.annotations
            .get(&Family::Cncf.filepath_annotation())
            .or_else(|| self.annotations.get(&Family::Cnai.filepath_annotation()))
            .or_else(|| self.annotations.get(media::ANNOTATION_TITLE))
            .map(String::as_str)
            .or(self.derived_filepath.as_deref())
    }

    /// The parsed `file.metadata+json` annotation of either family, if present and valid.
    pub fn file_metadata(&self) -> Option<crate::config::FileMetadata> {
        let raw = self
            .annotations
            .get(&Family::Cncf.metadata_annotation())
            .or_else(|| self.annotations.get(&Family::Cnai.metadata_annotation()))?;
        serde_json::from_str(raw).ok()
    }

    pub fn layer_type(&self) -> Option<LayerType> {
        LayerType::parse(&self.media_type)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: Annotations,
}

impl Manifest {
    /// A ModelPack manifest in the given family.
    pub fn model(family: Family, config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            artifact_type: Some(family.artifact_type()),
            config,
            layers,
            subject: None,
            annotations: Annotations::new(),
        }
    }

    /// Parses manifest bytes and names the layers a peer's reader would name
    /// by type ([`crate::peer::derive_names`]).
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        let mut m: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::json(what, e))?;
        crate::peer::derive_names(&mut m);
        Ok(m)
    }

    /// Compact, fixed-order JSON: the bytes whose digest names this manifest.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifest serialisation cannot fail")
    }

    /// The family of a ModelPack manifest (by artifactType, then config media type).
    pub fn model_family(&self) -> Option<Family> {
        self.artifact_type
            .as_deref()
            .and_then(Family::of_media_type)
            .or_else(|| Family::of_media_type(&self.config.media_type))
    }

    /// The same ModelPack manifest in the other identifier family: artifactType,
    /// config and layer media types, and `org.<family>.model.*` /
    /// `org.<family>.modctl.*` annotation keys are switched; blobs (and so
    /// the config, whose camelCase body both families read) are unchanged.
    /// `None` when it is not a ModelPack manifest or already in `family`.
    pub fn in_family(&self, family: Family) -> Option<Manifest> {
        let from = self.model_family()?;
        if from == family {
            return None;
        }
        let rekey = |a: &Annotations| -> Annotations {
            a.iter()
                .map(|(k, v)| {
                    let k = [
                        (
                            from.model_annotation_prefix(),
                            family.model_annotation_prefix(),
                        ),
                        (
                            from.modctl_annotation_prefix(),
                            family.modctl_annotation_prefix(),
                        ),
                    ]
                    .iter()
                    .find_map(|(old, new)| k.strip_prefix(old).map(|rest| format!("{new}{rest}")))
                    .unwrap_or_else(|| k.clone());
                    (k, v.clone())
                })
                .collect()
        };
        let mut m = self.clone();
        m.artifact_type = Some(family.artifact_type());
        m.config.media_type = family.config_media_type();
        m.annotations = rekey(&self.annotations);
        for l in &mut m.layers {
            if let Some(mut t) = LayerType::parse(&l.media_type) {
                t.family = family;
                if !t.legacy_dmr {
                    l.media_type = t.media_type();
                }
            }
            l.annotations = rekey(&l.annotations);
        }
        Some(m)
    }

    /// A model of any kind we read: ModelPack, Docker Model Runner or KitOps.
    pub fn is_model(&self) -> bool {
        crate::peer::ArtifactKind::of(self).is_some()
    }

    /// Total bytes referenced: config + layers (what `ls` and `inspect` show as
    /// size, and the total of push's progress bar).
    ///
    /// Sizes come from the manifest, i.e. from whoever built it, and a remote
    /// one can claim `u64::MAX` per layer. The sum saturates rather than
    /// failing: it is only ever displayed, and every byte actually transferred
    /// is checked against its own descriptor's size, never against this total.
    pub fn content_size(&self) -> u64 {
        self.layers
            .iter()
            .fold(self.config.size, |acc, l| acc.saturating_add(l.size))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: Annotations,
}

impl Index {
    pub fn new() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.into()),
            ..Default::default()
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("index serialisation cannot fail")
    }
}

/// Peeks at the `mediaType` of a manifest-ish document.
pub fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sniff {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let s: Sniff = serde_json::from_slice(bytes).ok()?;
    s.media_type
        .or_else(|| s.manifests.map(|_| media::OCI_INDEX.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialisation_is_stable_and_compact() {
        let mut l = Descriptor::new(
            "application/vnd.cncf.model.weight.v1.raw",
            Digest::of(b"x"),
            1,
        );
        l.annotations.insert("z".into(), "1".into());
        l.annotations.insert("a".into(), "2".into());
        let m = Manifest::model(
            Family::Cncf,
            Descriptor::new(Family::Cncf.config_media_type(), Digest::of(b"c"), 1),
            vec![l],
        );
        let s = String::from_utf8(m.to_bytes()).unwrap();
        assert!(s.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.cncf.model.manifest.v1+json","config":"#));
        assert!(s.find("\"a\"").unwrap() < s.find("\"z\"").unwrap());
        assert_eq!(Manifest::parse(s.as_bytes(), "m").unwrap(), m);
    }

    #[test]
    fn parses_spec_example_manifest() {
        let raw = include_str!("../spec/modelpack-example-manifest.json");
        let m = Manifest::parse(raw.as_bytes(), "example").unwrap();
        assert_eq!(m.model_family(), Some(Family::Cncf));
        assert_eq!(m.layers.len(), 4);
    }

    #[test]
    fn content_size_saturates_on_hostile_sizes() {
        let huge = Descriptor::new("x", Digest::of(b"x"), u64::MAX);
        let m = Manifest::model(
            Family::Cncf,
            Descriptor::new(Family::Cncf.config_media_type(), Digest::of(b"c"), 10),
            vec![huge.clone(), huge],
        );
        assert_eq!(m.content_size(), u64::MAX);
        let small = Manifest::model(
            Family::Cncf,
            Descriptor::new(Family::Cncf.config_media_type(), Digest::of(b"c"), 10),
            vec![Descriptor::new("x", Digest::of(b"x"), 5)],
        );
        assert_eq!(small.content_size(), 15);
    }

    #[test]
    fn filepath_falls_back_to_cnai_then_title() {
        let mut l = Descriptor::new("x", Digest::of(b"x"), 1);
        l.annotations
            .insert(media::ANNOTATION_TITLE.into(), "t".into());
        assert_eq!(l.filepath(), Some("t"));
        l.annotations
            .insert("org.cnai.model.filepath".into(), "c".into());
        assert_eq!(l.filepath(), Some("c"));
        l.annotations
            .insert("org.cncf.model.filepath".into(), "n".into());
        assert_eq!(l.filepath(), Some("n"));
    }
}
