//! Lints the JSON Schema cannot express (L1–L13).
//!
//! Severity rule (docs/validation.md): an **error** only where the schema or
//! a known consumer breaks on the value — extractors cannot name a file, a
//! digest does not parse, diffIds do not match the layers (KitOps and
//! containerd's chain IDs), sizes lie, a date does not parse as the schema's
//! `date-time`. Where only the spec's prose is stricter than the schema
//! (paramSize's one decimal, the precision list, SPDX syntax) it is a
//! **warning** with the JSON path: Docker Model Runner writes `8.03B`, and a
//! validator that rejects the main producers' output is not used.
//! `validate --strict` turns warnings into failures for publishers.

use std::collections::HashMap;

use serde_json::Value;

use crate::digest::Digest;
use crate::media::{self, Family, LayerFormat, LayerType};
use crate::modelfile::{PRECISIONS, valid_param_size};

use super::blobs::{BlobAccess, Decompressed};
use super::spdx::{self, Check};
use super::{Report, seg};

fn rfc3339(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

pub fn lint_config(v: &Value, r: &mut Report) {
    let param_key =
        if v.pointer("/config/paramSize").is_none() && v.pointer("/config/param_size").is_some() {
            "param_size"
        } else {
            "paramSize"
        };
    if let Some(p) = v
        .pointer(&format!("/config/{param_key}"))
        .and_then(Value::as_str)
        && !valid_param_size(p)
    {
        r.warn(format!("config:/config/{param_key}"), Some("L1"), format!("{p:?} does not follow the spec's parameter-count grammar (digits, at most one decimal, unit Q/T/B/M/K, like 8B, 6.7B or 500M){}", crate::modelfile::round_param_size(p).map(|s| format!("; write {s:?}")).unwrap_or_default()));
    }
    if let Some(p) = v.pointer("/config/precision").and_then(Value::as_str) {
        for part in p.split(',').map(str::trim) {
            if !PRECISIONS.contains(&part) {
                r.warn(
                    "config:/config/precision",
                    Some("L2"),
                    format!(
                        "{part:?} is not a spec precision ({})",
                        PRECISIONS.join(", ")
                    ),
                );
            }
        }
    }
    if let Some(ls) = v.pointer("/descriptor/licenses").and_then(Value::as_array) {
        for (i, l) in ls.iter().enumerate() {
            let Some(l) = l.as_str() else { continue };
            match spdx::check(l) {
                Check::Ok => {}
                Check::Unknown(ids) => r.warn(format!("config:/descriptor/licenses/{i}"), Some("L3"), format!("{} not a known SPDX identifier (use LicenseRef-<name> for custom licenses)", ids.join(", "))),
                Check::Invalid(why) => r.warn(format!("config:/descriptor/licenses/{i}"), Some("L3"), format!("{l:?} is not an SPDX license expression: {why}")),
            }
        }
    }
    let diff_key = diff_ids_key(v);
    if let Some(ids) = v
        .pointer(&format!("/modelfs/{diff_key}"))
        .and_then(Value::as_array)
    {
        for (i, d) in ids.iter().enumerate() {
            if let Some(s) = d.as_str()
                && let Err(e) = s.parse::<Digest>()
            {
                r.error(
                    format!("config:/modelfs/{diff_key}/{i}"),
                    Some("L4"),
                    e.to_string(),
                );
            }
        }
    }
    for (ptr, name) in [
        ("/descriptor/createdAt", "createdAt"),
        ("/config/capabilities/knowledgeCutoff", "knowledgeCutoff"),
    ] {
        if let Some(s) = v.pointer(ptr).and_then(Value::as_str)
            && !rfc3339(s)
        {
            r.error(
                format!("config:{ptr}"),
                Some("L12"),
                format!("{name} {s:?} is not an RFC 3339 date-time (e.g. 2025-01-01T00:00:00Z)"),
            );
        }
    }
}

/// A value as a message shows it: quoted, or "none" when it is missing.
fn got(v: Option<&str>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "none".into(),
    }
}

/// The spelling of the diffIds key a config uses: `diff_ids` only when that
/// is what it has, so a camelCase config missing the key is pointed at `diffIds`.
fn diff_ids_key(config: &Value) -> &'static str {
    if config.pointer("/modelfs/diff_ids").is_some() && config.pointer("/modelfs/diffIds").is_none()
    {
        "diff_ids"
    } else {
        "diffIds"
    }
}

fn check_digest(r: &mut Report, path: String, v: Option<&Value>) {
    match v.and_then(Value::as_str) {
        Some(s) => {
            if let Err(e) = s.parse::<Digest>() {
                r.error(path, Some("L4"), e.to_string());
            }
        }
        None => r.error(path, None, "digest is missing"),
    }
}

pub fn lint_manifest(v: &Value, r: &mut Report) {
    if v.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        r.error("manifest:/schemaVersion", None, "schemaVersion must be 2");
    }
    match v.get("mediaType").and_then(Value::as_str) {
        Some(media::OCI_MANIFEST) => {}
        other => r.error(
            "manifest:/mediaType",
            Some("L7"),
            format!("must be {} (got {})", media::OCI_MANIFEST, got(other)),
        ),
    }
    let at = v.get("artifactType").and_then(Value::as_str);
    match at.and_then(Family::of_media_type) {
        Some(f) if at == Some(f.artifact_type().as_str()) => {
            if f == Family::Cnai {
                r.warn("manifest:/artifactType", Some("L7"), "legacy cnai identifiers (model-spec ≤ v0.0.6, Harbor 2.13); current is application/vnd.cncf.model.manifest.v1+json");
            }
        }
        _ => r.error(
            "manifest:/artifactType",
            Some("L7"),
            format!("must be {} (got {})", Family::Cncf.artifact_type(), got(at)),
        ),
    }
    let cmt = v.pointer("/config/mediaType").and_then(Value::as_str);
    if ![
        Family::Cncf.config_media_type(),
        Family::Cnai.config_media_type(),
    ]
    .iter()
    .any(|m| Some(m.as_str()) == cmt)
    {
        r.error(
            "manifest:/config/mediaType",
            Some("L7"),
            format!(
                "must be {} (got {})",
                Family::Cncf.config_media_type(),
                got(cmt)
            ),
        );
    }
    check_digest(
        r,
        "manifest:/config/digest".into(),
        v.pointer("/config/digest"),
    );
    let Some(layers) = v.get("layers").and_then(Value::as_array) else {
        r.error("manifest:/layers", None, "layers must be an array");
        return;
    };
    if layers.is_empty() {
        r.error("manifest:/layers", None, "a model needs at least one layer");
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut untitled = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let base = format!("manifest:/layers/{i}");
        check_digest(r, format!("{base}/digest"), l.get("digest"));
        let mt = l.get("mediaType").and_then(Value::as_str).unwrap_or("");
        match LayerType::parse(mt) {
            Some(t) if t.legacy_dmr => r.warn(format!("{base}/mediaType"), Some("L8"), format!("{mt} is a Docker Model Runner legacy type; the spec uses …weight.v1.raw with config.format")),
            Some(_) => {}
            None => r.warn(format!("{base}/mediaType"), Some("L8"), format!("{mt:?} is not one of the 20 ModelPack layer media types")),
        }
        let ann = l.get("annotations").and_then(Value::as_object);
        let get = |k: &str| ann.and_then(|a| a.get(k)).and_then(Value::as_str);
        let cncf = Family::Cncf.filepath_annotation();
        let cnai = Family::Cnai.filepath_annotation();
        let (key, path) = match (get(&cncf), get(&cnai), get(media::ANNOTATION_TITLE)) {
            (Some(p), _, _) => (cncf.clone(), Some(p)),
            (None, Some(p), _) => (cnai.clone(), Some(p)),
            (None, None, Some(p)) => {
                r.warn(
                    format!("{base}/annotations"),
                    Some("L9"),
                    format!("no {cncf} annotation; falling back to the title"),
                );
                (media::ANNOTATION_TITLE.to_string(), Some(p))
            }
            _ => {
                r.error(
                    format!("{base}/annotations"),
                    Some("L9"),
                    format!("no {cncf} annotation: extractors cannot name this file"),
                );
                (cncf.clone(), None)
            }
        };
        if let Some(p) = path {
            let ppath = format!("{base}/annotations/{}", seg(&key));
            if let Some(why) = unsafe_path(p) {
                r.error(ppath.clone(), Some("L9"), format!("{p:?} {why}"));
            }
            if let Some(first) = seen.insert(p.to_string(), i) {
                r.error(
                    ppath,
                    Some("L9"),
                    format!("{p:?} is also the path of layer {first}"),
                );
            }
        }
        // Only a raw layer's title names its file; tar layers rightly have none.
        let is_raw = LayerType::parse(mt).is_none_or(|t| t.format == LayerFormat::Raw);
        if is_raw && get(media::ANNOTATION_TITLE).is_none() {
            untitled.push(i);
        }
        let meta_key = [
            Family::Cncf.metadata_annotation(),
            Family::Cnai.metadata_annotation(),
        ]
        .into_iter()
        .find(|k| get(k).is_some());
        if let Some(k) = meta_key {
            let mpath = format!("{base}/annotations/{}", seg(&k));
            match serde_json::from_str::<crate::config::FileMetadata>(get(&k).unwrap_or_default()) {
                Err(e) => r.error(mpath, Some("L13"), format!("file metadata is not valid JSON of {{name, mode, uid, gid, size, mtime, typeflag}}: {e}")),
                Ok(m) => {
                    let raw = LayerType::parse(mt).map(|t| t.format == LayerFormat::Raw).unwrap_or(false);
                    let size = l.get("size").and_then(Value::as_u64);
                    if raw && size.is_some_and(|s| s != m.size) {
                        r.warn(mpath, Some("L13"), format!("metadata size {} differs from the layer size {}", m.size, size.unwrap_or(0)));
                    }
                }
            }
        }
    }
    let weights = layers.iter().any(|l| {
        LayerType::parse(l.get("mediaType").and_then(Value::as_str).unwrap_or(""))
            .is_some_and(|t| t.kind == crate::media::LayerKind::Weight)
    });
    if !layers.is_empty() && !weights {
        r.warn(
            "manifest:/layers",
            Some("L8"),
            "no weight layer (MODEL in the Modelfile): is this a model?",
        );
    }
    if let Some(first) = untitled.first() {
        r.warn(
            format!("manifest:/layers/{first}/annotations"),
            Some("L10"),
            format!(
                "{} of {} layers are raw files without org.opencontainers.image.title (layers {}): `oras pull` and CRI-O will not name them (modctl, DMR and KitOps never write it; `modelpack build` does)",
                untitled.len(),
                layers.len(),
                untitled.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
            ),
        );
    }
}

/// Why a file path is unsafe to extract, if it is.
fn unsafe_path(p: &str) -> Option<&'static str> {
    if p.is_empty() {
        Some("is empty")
    } else if p.starts_with('/') {
        Some("is absolute")
    } else if p.contains('\\') {
        Some("contains a backslash (paths are '/'-separated)")
    } else if p.split('/').any(|c| c == "..") {
        Some("contains '..'")
    } else if p.trim_end_matches('/').split('/').any(|c| c.is_empty()) {
        Some("contains an empty path component")
    } else {
        None
    }
}

pub fn lint_pair(
    m: &Value,
    c: &Value,
    config_bytes: &[u8],
    blobs: &dyn BlobAccess,
    r: &mut Report,
) {
    let layers = m
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let key = diff_ids_key(c);
    let ids = c
        .pointer(&format!("/modelfs/{key}"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ids.len() != layers.len() {
        r.error(
            format!("config:/modelfs/{key}"),
            Some("L5"),
            format!(
                "{} diffIds for {} layers; there must be one per layer",
                ids.len(),
                layers.len()
            ),
        );
    }
    let mut unverified = Vec::new();
    for (i, (l, d)) in layers.iter().zip(&ids).enumerate() {
        let mt = l.get("mediaType").and_then(Value::as_str).unwrap_or("");
        let fmt = LayerType::parse(mt).map(|t| t.format);
        let at = format!("config:/modelfs/{key}/{i}");
        let said = d.as_str().unwrap_or("?");
        match fmt {
            Some(LayerFormat::Raw | LayerFormat::Tar) => {
                if l.get("digest") == Some(d) {
                    continue;
                }
                r.error(at, Some("L6"), format!("diffId {said} differs from layer {i}'s digest {} (uncompressed layers have diffId = digest)", l.get("digest").and_then(Value::as_str).unwrap_or("?")));
            }
            Some(format) => {
                let layer_digest = l
                    .get("digest")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<Digest>().ok());
                match layer_digest.and_then(|ld| blobs.uncompressed_digest(&ld, format)) {
                    Some(Decompressed::Digest(actual)) => {
                        if said != actual.to_string() {
                            r.error(at, Some("L6"), format!("diffId {said} is not the sha256 of layer {i} decompressed ({actual}): containerd's chain IDs and KitOps would not match it"));
                        }
                    }
                    Some(Decompressed::Corrupt(why)) => r.error(
                        format!("manifest:/layers/{i}"),
                        Some("L6"),
                        format!("layer {i} ({mt}) does not decompress: {why}"),
                    ),
                    Some(Decompressed::TooLarge(limit)) => r.warn(at, Some("L6"), format!("diffId not verified: layer {i} decompresses to more than {limit} bytes ({}× its size), where validation stops hashing", super::blobs::MAX_RATIO)),
                    None => unverified.push(i.to_string()),
                }
            }
            None => {}
        }
    }
    if !unverified.is_empty() {
        r.warn(
            format!("config:/modelfs/{key}"),
            Some("L6"),
            format!(
                "diffIds of compressed layer{} {} not verified: their blobs are not here (`validate REF` of a stored model decompresses and checks them)",
                if unverified.len() == 1 { "" } else { "s" },
                unverified.join(", ")
            ),
        );
    }
    lint_sizes(m, config_bytes, &|d| blobs.size(d), r);
}

/// L11: the config descriptor against the config's bytes, and layer sizes
/// against blobs we have.
pub fn lint_sizes(
    m: &Value,
    config_bytes: &[u8],
    blob_size: &dyn Fn(&Digest) -> Option<u64>,
    r: &mut Report,
) {
    let layers = m
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let actual = Digest::of(config_bytes);
    if m.pointer("/config/digest").and_then(Value::as_str) != Some(actual.to_string().as_str()) {
        r.error(
            "manifest:/config/digest",
            Some("L11"),
            format!("the config's bytes hash to {actual}"),
        );
    }
    if m.pointer("/config/size").and_then(Value::as_u64) != Some(config_bytes.len() as u64) {
        r.error(
            "manifest:/config/size",
            Some("L11"),
            format!("the config is {} bytes", config_bytes.len()),
        );
    }
    for (i, l) in layers.iter().enumerate() {
        let (Some(d), Some(size)) = (
            l.get("digest")
                .and_then(Value::as_str)
                .and_then(|d| d.parse::<Digest>().ok()),
            l.get("size").and_then(Value::as_u64),
        ) else {
            continue;
        };
        if let Some(actual) = blob_size(&d)
            && actual != size
        {
            r.error(
                format!("manifest:/layers/{i}/size"),
                Some("L11"),
                format!("descriptor says {size} bytes, the blob has {actual}"),
            );
        }
    }
}

/// L14: a tar layer's filepath annotation must name what the tar holds —
/// each regular file at that path or below it. modctl's `attach
/// --destination-dir` writes the directory into the annotation but not into
/// the tar's entry names, so modctl, KitOps and DMR readers disagree on where
/// the file goes (we and modctl follow the header; DMR the annotation).
/// `tar_files` lists an uncompressed tar layer's regular files from its
/// headers, `None` where the blob is not at hand.
pub fn lint_tar_paths(
    manifest: &crate::manifest::Manifest,
    tar_files: &dyn Fn(&Digest) -> Option<Vec<String>>,
    r: &mut Report,
) {
    for (i, l) in manifest.layers.iter().enumerate() {
        if crate::extract::layer_format(l) != LayerFormat::Tar {
            continue;
        }
        let Some(annotated) = l.filepath() else {
            continue;
        };
        let Some(files) = tar_files(&l.digest) else {
            continue;
        };
        let dir = annotated.trim_end_matches('/');
        let outside: Vec<&String> = files
            .iter()
            .filter(|f| {
                let f = f.trim_start_matches("./");
                f != dir && !f.starts_with(&format!("{dir}/"))
            })
            .collect();
        if let Some(first) = outside.first() {
            r.warn(
                format!("manifest:/layers/{i}/annotations"),
                Some("L14"),
                format!(
                    "the filepath annotation says {annotated:?} but the tar holds {first:?}{}: readers that follow the annotation (DMR) and those that follow the tar (modctl, KitOps, modelpack) put the file in different places",
                    if outside.len() > 1 { format!(" and {} more", outside.len() - 1) } else { String::new() }
                ),
            );
        }
    }
}
