//! The files a signature covers, path → sha256, from the three places a
//! model lives: its manifest in the store (a raw layer's digest *is* its
//! file's sha256, so nothing is read; a tar layer is streamed once), an
//! extracted directory (every file hashed, as `model_signing verify` does),
//! and — for the signature's own check — the statement.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::media::LayerFormat;
use crate::store::Store;

/// Files a signature never covers in a model directory: git's, and our Modelfile.
pub fn ignored(rel: &str, extra: &[String]) -> bool {
    let first = rel.split('/').next().unwrap_or(rel);
    super::bundle::DEFAULT_IGNORE.contains(&first)
        || rel == "Modelfile"
        || extra
            .iter()
            .any(|e| e == rel || rel.starts_with(&format!("{e}/")))
}

/// The model's files from its manifest; tar layers are read from the store.
pub fn from_manifest(store: &Store, manifest: &Manifest) -> Result<BTreeMap<String, Digest>> {
    from_manifest_with(manifest, &|d| store.open_blob(d))
}

/// [`from_manifest`] with tar layers opened by `open` (a pull checks them
/// while they are still staged, before anything is kept). Raw layers are
/// never opened: their digest is their file's sha256.
pub fn from_manifest_with(
    manifest: &Manifest,
    open: &dyn Fn(&Digest) -> Result<std::fs::File>,
) -> Result<BTreeMap<String, Digest>> {
    let mut out = BTreeMap::new();
    for l in &manifest.layers {
        let name = crate::extract::layer_name(l);
        match crate::extract::layer_format(l) {
            LayerFormat::Raw => {
                let p = l.filepath().ok_or_else(|| {
                    Error::Artifact(format!(
                        "layer {name} has no file path, so it cannot be signed"
                    ))
                })?;
                let rel = crate::extract::safe_relative_path(&name, p)?;
                insert(&mut out, rel.display().to_string(), l.digest.clone(), &name)?;
            }
            format => {
                let f = open(&l.digest)?;
                tar_files(f, format, &name, &mut out)?;
            }
        }
    }
    Ok(out)
}

fn insert(out: &mut BTreeMap<String, Digest>, path: String, d: Digest, layer: &str) -> Result<()> {
    if ignored(&path, &[]) {
        return Ok(());
    }
    if out.insert(path.clone(), d).is_some() {
        return Err(Error::Artifact(format!(
            "{path} appears twice in the model (again in layer {layer})"
        )));
    }
    Ok(())
}

/// Hashes each regular file of one tar layer (symlinks are refused: OMS
/// signatures with `allow_symlinks: false` cannot cover them).
fn tar_files(
    blob: std::fs::File,
    format: LayerFormat,
    layer: &str,
    out: &mut BTreeMap<String, Digest>,
) -> Result<()> {
    let buffered = std::io::BufReader::with_capacity(crate::digest::COPY_BUF, blob);
    let decoded: Box<dyn Read> = match format {
        LayerFormat::TarGzip => Box::new(flate2::read::GzDecoder::new(buffered)),
        LayerFormat::TarZstd => Box::new(
            zstd::Decoder::new(buffered)
                .map_err(|e| Error::Artifact(format!("layer {layer}: {e}")))?,
        ),
        _ => Box::new(buffered),
    };
    let mut ar = tar::Archive::new(decoded);
    let bad = |e: std::io::Error| Error::Artifact(format!("layer {layer}: {e}"));
    for entry in ar.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        let path = entry.path().map_err(bad)?.to_string_lossy().to_string();
        let clean = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if kind.is_dir() || clean.is_empty() {
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(Error::Artifact(format!(
                "layer {layer} holds the link {clean}: a model signature (allow_symlinks: false) covers regular files only"
            )));
        }
        if !kind.is_file() {
            continue;
        }
        let rel = crate::extract::safe_relative_path(layer, &clean)?;
        let mut h = HashingReader::new(entry);
        std::io::copy(&mut h, &mut std::io::sink()).map_err(bad)?;
        let (d, _) = h.finish();
        insert(out, rel.display().to_string(), d, layer)?;
    }
    Ok(())
}

/// Every file under `dir`, hashed (as `model_signing verify` reads a
/// directory): git files, our Modelfile and `skip` (the signature file when
/// it lies inside) are left out; a symlink is an error.
pub fn from_dir(dir: &Path, skip: &[String]) -> Result<BTreeMap<String, Digest>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false).min_depth(1) {
        let e = e.map_err(|e| Error::Workspace(format!("cannot read {}: {e}", dir.display())))?;
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap_or(e.path())
            .to_string_lossy()
            .replace('\\', "/");
        if ignored(&rel, skip) {
            continue;
        }
        if e.file_type().is_symlink() {
            return Err(Error::Workspace(format!(
                "{} is a symlink: a model signature (allow_symlinks: false) covers regular files only",
                e.path().display()
            )));
        }
        if !e.file_type().is_file() {
            continue;
        }
        let (d, _) = crate::digest::hash_file(e.path())?;
        out.insert(rel, d);
    }
    Ok(out)
}
