//! The snapshot label contract between `pull --containerd` and
//! `modelpack-snapshotter`: one struct, formatted by the CLI and parsed (as
//! untrusted input — containerd passes labels from whoever calls Prepare) by
//! the snapshotter. The chain ID a model layer is committed under is
//! recomputed from the parent and the layer's diffId, so a model cannot
//! claim a base image's chain ID and poison the snapshot cache.

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::Reference;

/// containerd's name for the snapshot a Prepare should end up committed as.
pub const LABEL_REF: &str = "containerd.io/snapshot.ref";
pub const LABEL_REFERENCE: &str = "containerd.io/snapshot/modelpack.reference";
pub const LABEL_MANIFEST: &str = "containerd.io/snapshot/modelpack.manifest-digest";
pub const LABEL_LAYER_DIGEST: &str = "containerd.io/snapshot/modelpack.layer-digest";
pub const LABEL_LAYER_SIZE: &str = "containerd.io/snapshot/modelpack.layer-size";
pub const LABEL_MEDIA_TYPE: &str = "containerd.io/snapshot/modelpack.layer-media-type";
pub const LABEL_FILEPATH: &str = "containerd.io/snapshot/modelpack.filepath";
pub const LABEL_DIFF_ID: &str = "containerd.io/snapshot/modelpack.diff-id";
/// Set by the snapshotter (never read from a Prepare) on a model layer it
/// committed lazily: the digest of the bound chunk index its reads are
/// verified against.
pub const LABEL_CHUNK_INDEX: &str = "containerd.io/snapshot/modelpack.chunk-index";

/// No model layer is larger (a bound on an untrusted label, not a policy).
pub const MAX_LAYER_SIZE: u64 = 1 << 44;

/// Everything the snapshotter needs to provide one model layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLayerLabels {
    pub chain_id: Digest,
    pub reference: Reference,
    pub manifest_digest: Option<Digest>,
    pub layer_digest: Digest,
    pub layer_size: u64,
    pub media_type: String,
    pub filepath: String,
    pub diff_id: Digest,
}

/// OCI chain ID of a layer on top of `parent` (empty for the first layer).
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
    }
}

/// Chain IDs of a whole layer stack.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for d in diff_ids {
        let next = chain_id(out.last(), d);
        out.push(next);
    }
    out
}

impl ModelLayerLabels {
    /// True when a Prepare's labels ask for a model layer.
    pub fn is_model_prepare(labels: &BTreeMap<String, String>) -> bool {
        labels.contains_key(LABEL_REF)
            && labels.contains_key(LABEL_LAYER_DIGEST)
            && labels.contains_key(LABEL_REFERENCE)
    }

    pub fn to_labels(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([
            (LABEL_REF.to_string(), self.chain_id.to_string()),
            (LABEL_REFERENCE.to_string(), self.reference.to_string()),
            (
                LABEL_LAYER_DIGEST.to_string(),
                self.layer_digest.to_string(),
            ),
            (LABEL_LAYER_SIZE.to_string(), self.layer_size.to_string()),
            (LABEL_MEDIA_TYPE.to_string(), self.media_type.clone()),
            (LABEL_FILEPATH.to_string(), self.filepath.clone()),
            (LABEL_DIFF_ID.to_string(), self.diff_id.to_string()),
        ]);
        if let Some(d) = &self.manifest_digest {
            m.insert(LABEL_MANIFEST.to_string(), d.to_string());
        }
        m
    }

    /// Parses and validates a model Prepare's labels; `parent` is the
    /// Prepare's parent snapshot name. Every value is checked: digests parse,
    /// the size is bounded, the file path is safe, a raw or uncompressed tar
    /// layer's diffId is its digest, and the chain ID is the one the parent
    /// and diffId give.
    pub fn parse(labels: &BTreeMap<String, String>, parent: &str) -> Result<ModelLayerLabels> {
        let get = |k: &str| {
            labels
                .get(k)
                .map(String::as_str)
                .ok_or_else(|| Error::Invalid(format!("label {k} is required for a model layer")))
        };
        let digest = |k: &str| -> Result<Digest> {
            get(k)?
                .parse()
                .map_err(|e: Error| Error::Invalid(format!("label {k}: {e}")))
        };
        let chain = digest(LABEL_REF)?;
        let layer_digest = digest(LABEL_LAYER_DIGEST)?;
        let reference: Reference = get(LABEL_REFERENCE)?
            .parse()
            .map_err(|e: Error| Error::Invalid(format!("label {LABEL_REFERENCE}: {e}")))?;
        let layer_size: u64 = get(LABEL_LAYER_SIZE)?
            .parse()
            .map_err(|_| Error::Invalid(format!("label {LABEL_LAYER_SIZE} is not a byte count")))?;
        if layer_size > MAX_LAYER_SIZE {
            return Err(Error::Invalid(format!(
                "label {LABEL_LAYER_SIZE}: {layer_size} bytes is more than {MAX_LAYER_SIZE}"
            )));
        }
        let media_type = labels
            .get(LABEL_MEDIA_TYPE)
            .cloned()
            .unwrap_or_else(|| "application/vnd.cncf.model.weight.v1.raw".into());
        if media_type.len() > 255 || media_type.chars().any(|c| c.is_control()) {
            return Err(Error::Invalid(format!(
                "label {LABEL_MEDIA_TYPE} is not a media type"
            )));
        }
        let filepath = get(LABEL_FILEPATH)?.to_string();
        crate::extract::safe_relative_path(&format!("label {LABEL_FILEPATH}"), &filepath)?;
        let manifest_digest = match labels.get(LABEL_MANIFEST) {
            Some(_) => Some(digest(LABEL_MANIFEST)?),
            None => None,
        };
        let uncompressed = {
            let mut d = crate::manifest::Descriptor::new(
                media_type.clone(),
                layer_digest.clone(),
                layer_size,
            );
            d.annotations
                .insert(crate::media::ANNOTATION_TITLE.into(), filepath.clone());
            crate::extract::layer_format(&d).is_uncompressed()
        };
        let diff_id = match labels.get(LABEL_DIFF_ID) {
            Some(_) => digest(LABEL_DIFF_ID)?,
            None if uncompressed => layer_digest.clone(),
            None => {
                return Err(Error::Invalid(format!(
                    "label {LABEL_DIFF_ID} is required for compressed layer {layer_digest}"
                )));
            }
        };
        if uncompressed && diff_id != layer_digest {
            return Err(Error::Invalid(format!(
                "layer {layer_digest} is uncompressed, so its diffId must be its digest, not {diff_id}"
            )));
        }
        let parent_chain = if parent.is_empty() {
            None
        } else {
            Some(parent.parse::<Digest>().map_err(|e| {
                Error::Invalid(format!("parent snapshot {parent:?} is not a chain ID: {e}"))
            })?)
        };
        let expected = chain_id(parent_chain.as_ref(), &diff_id);
        if expected != chain {
            return Err(Error::Invalid(format!(
                "label {LABEL_REF} is {chain}, but parent {parent:?} and diffId {diff_id} give chain ID {expected}"
            )));
        }
        Ok(ModelLayerLabels {
            chain_id: chain,
            reference,
            manifest_digest,
            layer_digest,
            layer_size,
            media_type,
            filepath,
            diff_id,
        })
    }
}

impl ModelLayerLabels {
    /// The layer of `manifest` (verified: fetched by `manifest_digest`) that
    /// these labels name. The labels come from whoever called Prepare, so
    /// each value that decides what is served is checked against the
    /// manifest: the digest and size name one of its layers, the media type
    /// (raw or tar decides how the blob is laid out) is that layer's, and the
    /// path the file is served at is that layer's file path annotation.
    /// Without this a signed manifest's digest could vouch for a foreign blob
    /// or put a signed blob at a path the signature never covered.
    pub fn layer_in<'m>(
        &self,
        manifest: &'m crate::manifest::Manifest,
        manifest_digest: &Digest,
    ) -> Result<&'m crate::manifest::Descriptor> {
        let mismatch = |label: &'static str, value: String, reason: String| Error::LabelMismatch {
            label,
            value,
            manifest: manifest_digest.to_string(),
            reason,
        };
        let same_blob: Vec<_> = manifest
            .layers
            .iter()
            .filter(|l| l.digest == self.layer_digest)
            .collect();
        if same_blob.is_empty() {
            return Err(mismatch(
                LABEL_LAYER_DIGEST,
                self.layer_digest.to_string(),
                "has no such layer".into(),
            ));
        }
        let sized: Vec<_> = same_blob
            .into_iter()
            .filter(|l| l.size == self.layer_size)
            .collect();
        if sized.is_empty() {
            return Err(mismatch(
                LABEL_LAYER_SIZE,
                self.layer_size.to_string(),
                format!("gives layer {} another size", self.layer_digest),
            ));
        }
        // One blob may be two layers (the same bytes at two paths): the
        // label's path must be one of them, with that layer's media type.
        let Some(layer) = sized
            .iter()
            .find(|l| l.filepath() == Some(self.filepath.as_str()))
        else {
            let paths: Vec<String> = sized
                .iter()
                .map(|l| format!("{:?}", l.filepath().unwrap_or("")))
                .collect();
            return Err(mismatch(
                LABEL_FILEPATH,
                self.filepath.clone(),
                format!(
                    "puts layer {} at {}",
                    self.layer_digest,
                    paths.join(" and ")
                ),
            ));
        };
        if layer.media_type != self.media_type {
            return Err(mismatch(
                LABEL_MEDIA_TYPE,
                self.media_type.clone(),
                format!(
                    "gives layer {} media type {:?}",
                    self.layer_digest, layer.media_type
                ),
            ));
        }
        Ok(layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelLayerLabels {
        let d = Digest::of(b"weights");
        ModelLayerLabels {
            chain_id: d.clone(),
            reference: "127.0.0.1:5000/m:v1".parse().unwrap(),
            manifest_digest: Some(Digest::of(b"m")),
            layer_digest: d.clone(),
            layer_size: 7,
            media_type: "application/vnd.cncf.model.weight.v1.raw".into(),
            filepath: "w.bin".into(),
            diff_id: d,
        }
    }

    #[test]
    fn round_trips_and_checks_the_chain() {
        let l = sample();
        assert_eq!(ModelLayerLabels::parse(&l.to_labels(), "").unwrap(), l);
        // Claiming another layer's chain ID is refused.
        let mut evil = l.to_labels();
        evil.insert(
            LABEL_REF.into(),
            Digest::of(b"base image layer").to_string(),
        );
        let e = ModelLayerLabels::parse(&evil, "").unwrap_err().to_string();
        assert!(e.contains("chain ID"), "{e}");
        // On a parent, the chain is recomputed from it.
        let parent = Digest::of(b"p");
        let mut on_parent = l.clone();
        on_parent.chain_id = chain_id(Some(&parent), &l.diff_id);
        assert!(ModelLayerLabels::parse(&on_parent.to_labels(), &parent.to_string()).is_ok());
        assert!(ModelLayerLabels::parse(&on_parent.to_labels(), "").is_err());
    }

    #[test]
    fn hostile_values_are_refused() {
        let l = sample();
        for (k, v) in [
            (LABEL_FILEPATH, "../../etc/passwd"),
            (LABEL_FILEPATH, "/abs"),
            (LABEL_LAYER_SIZE, "18446744073709551615"),
            (LABEL_LAYER_SIZE, "-1"),
            (LABEL_LAYER_DIGEST, "sha256:zz"),
            (LABEL_DIFF_ID, &Digest::of(b"other").to_string()),
        ] {
            let mut m = l.to_labels();
            m.insert(k.into(), v.into());
            assert!(ModelLayerLabels::parse(&m, "").is_err(), "{k}={v}");
        }
    }

    fn manifest_with(layers: serde_json::Value) -> crate::manifest::Manifest {
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.cncf.model.config.v1+json",
                       "digest": Digest::of(b"{}").to_string(), "size": 2},
            "layers": layers
        }))
        .unwrap()
    }

    #[test]
    fn labels_must_name_a_layer_of_the_manifest_at_its_path() {
        let l = sample();
        let md = Digest::of(b"m");
        let raw = "application/vnd.cncf.model.weight.v1.raw";
        let layer = |path: &str, media: &str| {
            serde_json::json!({"mediaType": media, "digest": l.layer_digest.to_string(), "size": 7,
                "annotations": {"org.cncf.model.filepath": path}})
        };
        let m = manifest_with(serde_json::json!([layer("w.bin", raw)]));
        assert_eq!(l.layer_in(&m, &md).unwrap().filepath(), Some("w.bin"));
        // The same blob at two paths: either path is the manifest's.
        let two = manifest_with(serde_json::json!([
            layer("a.bin", raw),
            layer("w.bin", raw)
        ]));
        assert!(l.layer_in(&two, &md).is_ok());

        let refused = |l: &ModelLayerLabels, m: &crate::manifest::Manifest, label: &str| {
            let e = l.layer_in(m, &md).unwrap_err();
            assert!(matches!(e, Error::LabelMismatch { .. }), "{e}");
            assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
            let s = e.to_string();
            assert!(s.contains(label) && s.contains(&md.to_string()), "{s}");
            s
        };
        // A foreign blob under a manifest's digest.
        let mut foreign = l.clone();
        foreign.layer_digest = Digest::of(b"not in the manifest");
        let s = refused(&foreign, &m, LABEL_LAYER_DIGEST);
        assert!(s.contains("has no such layer"), "{s}");
        // The manifest's blob served at another path.
        let mut moved = l.clone();
        moved.filepath = "config.json".into();
        let s = refused(&moved, &m, LABEL_FILEPATH);
        assert!(
            s.contains("\"config.json\"") && s.contains("\"w.bin\""),
            "{s}"
        );
        // Another size, another media type (raw vs tar decides the layout).
        let mut sized = l.clone();
        sized.layer_size = 8;
        refused(&sized, &m, LABEL_LAYER_SIZE);
        let tar = manifest_with(serde_json::json!([layer(
            "w.bin",
            "application/vnd.cncf.model.weight.v1.tar"
        )]));
        refused(&l, &tar, LABEL_MEDIA_TYPE);
    }
}
