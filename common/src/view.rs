//! `ModelView`: the typed model contract both binaries share — which file
//! lives at which path, in which layer blob, at which offset, with which
//! size and mode; the chain IDs the layers stack to; and, per layer, the
//! snapshot labels (`labels::ModelLayerLabels`) `pull --containerd` sends and
//! the snapshotter parses. Built from a verified manifest and config, and
//! checked on the way: one diffId per layer, a raw or uncompressed tar
//! layer's diffId equal to its digest, every path safe and claimed once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::ModelConfig;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::extract::{layer_format, layer_name, safe_relative_path};
use crate::labels::{ModelLayerLabels, chain_ids};
use crate::manifest::{Descriptor, Manifest};
use crate::media::LayerFormat;
use crate::reference::Reference;

/// Files in a model view are read-only; this is the mode they show.
pub const VIEW_FILE_MODE: u32 = 0o444;

/// One file of the model as a lazy or eager reader serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewFile {
    /// Safe relative path under the model root.
    pub path: PathBuf,
    /// The layer blob holding the bytes.
    pub blob: Digest,
    /// Where the file's bytes start in the (uncompressed) blob.
    pub offset: u64,
    pub size: u64,
    pub mode: u32,
}

/// One layer: its descriptor, how it is encoded, and where it stacks.
#[derive(Debug, Clone)]
pub struct ViewLayer {
    pub descriptor: Descriptor,
    pub format: LayerFormat,
    /// The filepath annotation, checked safe (a directory for tar layers).
    pub filepath: String,
    pub diff_id: Digest,
    pub chain_id: Digest,
    /// Files whose offsets are known without reading the blob: the one file
    /// of a raw layer (tar layers list theirs once a chunk index or an
    /// extraction has read the tar headers).
    pub files: Vec<ViewFile>,
}

#[derive(Debug, Clone)]
pub struct ModelView {
    pub reference: Reference,
    pub manifest_digest: Digest,
    pub layers: Vec<ViewLayer>,
}

impl ModelView {
    /// Builds the view of a manifest (whose bytes hash to `manifest_digest`)
    /// and its parsed config.
    pub fn new(
        reference: Reference,
        manifest_digest: Digest,
        manifest: &Manifest,
        config: &ModelConfig,
    ) -> Result<ModelView> {
        let diff_ids = &config.modelfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::Artifact(format!(
                "{reference}: the config lists {} diffIds for {} layers",
                diff_ids.len(),
                manifest.layers.len()
            )));
        }
        let chains = chain_ids(diff_ids);
        let mut claimed: BTreeMap<PathBuf, Digest> = BTreeMap::new();
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for (i, desc) in manifest.layers.iter().enumerate() {
            let name = layer_name(desc);
            let filepath = desc.filepath().ok_or_else(|| {
                Error::Artifact(format!(
                    "layer {name} of {reference} has no file path annotation"
                ))
            })?;
            let rel = safe_relative_path(&name, filepath)?;
            let format = layer_format(desc);
            let diff_id = diff_ids[i].clone();
            if format.is_uncompressed() && diff_id != desc.digest {
                return Err(Error::Artifact(format!(
                    "layer {name} of {reference}: an uncompressed layer's diffId must be its digest ({} is not {})",
                    diff_id, desc.digest
                )));
            }
            let files = if format == LayerFormat::Raw {
                if let Some(other) = claimed.insert(rel.clone(), desc.digest.clone()) {
                    return Err(Error::Artifact(format!(
                        "{reference}: {} is provided by two layers ({other} and {})",
                        rel.display(),
                        desc.digest
                    )));
                }
                vec![ViewFile {
                    path: rel,
                    blob: desc.digest.clone(),
                    offset: 0,
                    size: desc.size,
                    mode: VIEW_FILE_MODE,
                }]
            } else {
                Vec::new()
            };
            layers.push(ViewLayer {
                descriptor: desc.clone(),
                format,
                filepath: filepath.to_string(),
                diff_id,
                chain_id: chains[i].clone(),
                files,
            });
        }
        if layers.is_empty() {
            return Err(Error::Artifact(format!("{reference} has no layers")));
        }
        Ok(ModelView {
            reference,
            manifest_digest,
            layers,
        })
    }

    /// The chain ID of the whole stack (what a container's view is keyed by).
    pub fn top_chain_id(&self) -> &Digest {
        &self.layers.last().expect("a view has layers").chain_id
    }

    /// The snapshot labels for layer `i`'s Prepare.
    pub fn labels(&self, i: usize) -> ModelLayerLabels {
        let l = &self.layers[i];
        ModelLayerLabels {
            chain_id: l.chain_id.clone(),
            reference: self.reference.clone(),
            manifest_digest: Some(self.manifest_digest.clone()),
            layer_digest: l.descriptor.digest.clone(),
            layer_size: l.descriptor.size,
            media_type: l.descriptor.media_type.clone(),
            filepath: l.filepath.clone(),
            diff_id: l.diff_id.clone(),
        }
    }

    /// The parent snapshot name of layer `i` (empty for the first).
    pub fn parent(&self, i: usize) -> String {
        if i == 0 {
            String::new()
        } else {
            self.layers[i - 1].chain_id.to_string()
        }
    }

    /// Every file whose place is known, by path.
    pub fn files(&self) -> impl Iterator<Item = &ViewFile> {
        self.layers.iter().flat_map(|l| l.files.iter())
    }
}

/// The file a raw layer provides, from its (already validated) Prepare labels.
pub fn raw_layer_file(labels: &ModelLayerLabels) -> Result<ViewFile> {
    let shown = format!("{} ({})", labels.layer_digest, labels.filepath);
    Ok(ViewFile {
        path: safe_relative_path(&shown, &labels.filepath)?,
        blob: labels.layer_digest.clone(),
        offset: 0,
        size: labels.layer_size,
        mode: VIEW_FILE_MODE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap as Map;

    fn layer(media: &str, data: &[u8], path: &str) -> Descriptor {
        let mut d = Descriptor::new(media, Digest::of(data), data.len() as u64);
        d.annotations = Map::from([("org.cncf.model.filepath".to_string(), path.to_string())]);
        d
    }

    fn manifest(layers: Vec<Descriptor>) -> Manifest {
        let cfg = Descriptor::new(
            "application/vnd.cncf.model.config.v1+json",
            Digest::of(b"{}"),
            2,
        );
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "config": cfg,
            "layers": layers,
        }))
        .unwrap()
    }

    fn config(diff_ids: Vec<Digest>) -> ModelConfig {
        let mut c: ModelConfig = serde_json::from_value(serde_json::json!({
            "descriptor": {}, "config": {}, "modelfs": {"type": "layers", "diffIds": []}
        }))
        .unwrap();
        c.modelfs.diff_ids = diff_ids;
        c
    }

    const RAW: &str = "application/vnd.cncf.model.weight.v1.raw";

    #[test]
    fn a_view_maps_files_to_blobs_and_labels_round_trip_through_the_snapshotter_parser() {
        let (a, b) = (
            layer(RAW, b"aaaa", "w/a.bin"),
            layer(RAW, b"bbbbbb", "b.bin"),
        );
        let m = manifest(vec![a.clone(), b.clone()]);
        let r: Reference = "127.0.0.1:5000/m/x:v1".parse().unwrap();
        let view = ModelView::new(
            r,
            Digest::of(b"manifest"),
            &m,
            &config(vec![a.digest.clone(), b.digest.clone()]),
        )
        .unwrap();
        let files: Vec<_> = view
            .files()
            .map(|f| (f.path.display().to_string(), f.size))
            .collect();
        assert_eq!(
            files,
            vec![("w/a.bin".to_string(), 4), ("b.bin".to_string(), 6)]
        );
        assert_eq!(
            view.top_chain_id(),
            &crate::labels::chain_id(Some(&a.digest), &b.digest)
        );
        for i in 0..2 {
            let sent = view.labels(i).to_labels();
            let parsed = ModelLayerLabels::parse(&sent, &view.parent(i)).unwrap();
            assert_eq!(parsed, view.labels(i));
            assert_eq!(raw_layer_file(&parsed).unwrap(), view.layers[i].files[0]);
        }
    }

    #[test]
    fn inconsistent_models_are_refused_with_the_layer_named() {
        let r: Reference = "127.0.0.1:5000/m/x:v1".parse().unwrap();
        let a = layer(RAW, b"aaaa", "a.bin");
        let err = ModelView::new(
            r.clone(),
            Digest::of(b"m"),
            &manifest(vec![a.clone()]),
            &config(vec![]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("0 diffIds for 1 layers"), "{err}");
        let err = ModelView::new(
            r.clone(),
            Digest::of(b"m"),
            &manifest(vec![a.clone()]),
            &config(vec![Digest::of(b"x")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("diffId must be its digest"),
            "{err}"
        );
        let evil = layer(RAW, b"e", "../etc/passwd");
        assert!(
            ModelView::new(
                r.clone(),
                Digest::of(b"m"),
                &manifest(vec![evil.clone()]),
                &config(vec![evil.digest.clone()])
            )
            .is_err()
        );
        let dup = layer(RAW, b"zz", "a.bin");
        let err = ModelView::new(
            r,
            Digest::of(b"m"),
            &manifest(vec![a.clone(), dup.clone()]),
            &config(vec![a.digest.clone(), dup.digest.clone()]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("two layers"), "{err}");
    }
}
