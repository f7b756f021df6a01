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
}
