//! Validation of Docker Model Runner and KitOps artifacts against their
//! producers' own rules, since the ModelPack schema does not apply to them:
//! what DMR's or kit's reader (and ours) would fail on is an error, the
//! format itself is one warning that says what it is.

use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::media::LayerFormat;
use crate::peer::{ArtifactKind, dmr};

use super::Report;

pub fn lint_peer(manifest: &Manifest, kind: ArtifactKind, config: &[u8], r: &mut Report) {
    r.warn(
        "manifest:/config/mediaType",
        Some("L7"),
        format!(
            "a {} artifact, not ModelPack: checked against its producer's rules (ModelPack's schema does not apply){}",
            kind.describe(),
            match kind {
                ArtifactKind::DockerModel(_) => "; `docker model package --format cncf` writes ModelPack",
                _ => "; `kit pack --use-model-pack` writes ModelPack",
            }
        ),
    );
    if let ArtifactKind::DockerModel(_) = kind {
        match dmr::diff_ids(config) {
            None => r.error(
                "config:/rootfs/diff_ids",
                None,
                "the Docker model config has no rootfs.diff_ids (or is not JSON)",
            ),
            Some(ids) => {
                if ids.len() != manifest.layers.len() {
                    r.error(
                        "config:/rootfs/diff_ids",
                        Some("L5"),
                        format!(
                            "{} diff_ids for {} layers",
                            ids.len(),
                            manifest.layers.len()
                        ),
                    );
                }
                for (i, (id, l)) in ids.iter().zip(&manifest.layers).enumerate() {
                    if id.parse::<Digest>().ok().as_ref() != Some(&l.digest) {
                        r.error(
                            format!("config:/rootfs/diff_ids/{i}"),
                            Some("L6"),
                            format!(
                                "{id:?} is not layer {i}'s digest {} (DMR layers are uncompressed)",
                                l.digest
                            ),
                        );
                    }
                }
            }
        }
    }
    if kind == ArtifactKind::KitOps {
        kitfile_digests(manifest, config, r);
    }
    for (i, l) in manifest.layers.iter().enumerate() {
        if crate::extract::layer_format(l) == LayerFormat::Raw {
            match l.filepath() {
                None => r.error(
                    format!("manifest:/layers/{i}/annotations"),
                    Some("L9"),
                    format!(
                        "{} layer with no org.cncf.model.filepath: no reader can name its file",
                        l.media_type
                    ),
                ),
                Some(p) => {
                    if let Err(e) = crate::extract::safe_relative_path(&format!("layer {i}"), p) {
                        r.error(
                            format!("manifest:/layers/{i}/annotations"),
                            Some("L9"),
                            e.to_string(),
                        );
                    }
                }
            }
        }
    }
    if let Err(e) = crate::extract::check_layer_paths(&manifest.layers) {
        r.error("manifest:/layers", Some("L9"), e.to_string());
    }
}

/// kit unpack fails ("digest in config and manifest do not match") when a
/// Kitfile entry's `digest` names no layer.
fn kitfile_digests(manifest: &Manifest, config: &[u8], r: &mut Report) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(config) else {
        r.error("config:", None, "the Kitfile config is not JSON");
        return;
    };
    let mut entries: Vec<(String, &serde_json::Value)> = Vec::new();
    if let Some(m) = v.get("model") {
        entries.push(("/model".into(), m));
        if let Some(parts) = m.get("parts").and_then(|p| p.as_array()) {
            entries.extend(
                parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("/model/parts/{i}"), p)),
            );
        }
    }
    for key in ["code", "datasets", "docs", "prompts"] {
        if let Some(list) = v.get(key).and_then(|p| p.as_array()) {
            entries.extend(
                list.iter()
                    .enumerate()
                    .map(|(i, p)| (format!("/{key}/{i}"), p)),
            );
        }
    }
    for (ptr, e) in entries {
        let Some(d) = e.get("digest").and_then(|d| d.as_str()) else {
            continue;
        };
        if !manifest.layers.iter().any(|l| l.digest.to_string() == d) {
            r.error(
                format!("config:{ptr}/digest"),
                Some("L6"),
                format!("{d} is not the digest of any layer (kit unpack refuses the ModelKit)"),
            );
        }
    }
}
