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

/// Is `rel` one of `ignore_paths` or under one of them (a directory)? A
/// signature's statement lists what it ignores; nothing else is ignored
/// (no built-in list: a file the signer did not choose to ignore counts).
pub fn ignored(rel: &str, ignore_paths: &[String]) -> bool {
    ignore_paths.iter().any(|e| {
        let e = e.trim_end_matches('/');
        rel == e || rel.strip_prefix(e).is_some_and(|r| r.starts_with('/'))
    })
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
/// directory): only `skip` (the signature file when it lies inside, and the
/// paths the signature ignores) is left out; a symlink is an error.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Descriptor;

    fn layer(media: &str, data: &[u8], path: &str) -> Descriptor {
        let mut d = Descriptor::new(media, Digest::of(data), data.len() as u64);
        d.annotations
            .insert("org.cncf.model.filepath".into(), path.into());
        d
    }

    /// Signing and verifying a raw model never opens a blob: the store here
    /// holds none of its layers, yet its files come out of the manifest and
    /// a signature over them verifies. A tar layer does need its bytes.
    #[test]
    fn raw_layers_are_read_from_the_manifest_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let raw = "application/vnd.cncf.model.weight.v1.raw";
        let m = Manifest::model(
            crate::media::Family::Cncf,
            Descriptor::empty(),
            vec![
                layer(raw, b"weights", "w.safetensors"),
                layer(raw, b"nested", "tokenizer/sub/vocab.json"),
            ],
        );
        let files = from_manifest(&store, &m).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files["tokenizer/sub/vocab.json"], Digest::of(b"nested"));
        assert!(
            !store.has_blob(&Digest::of(b"weights")),
            "no blob was needed"
        );
        let opened = std::cell::Cell::new(0);
        let counted = from_manifest_with(&m, &|d| {
            opened.set(opened.get() + 1);
            store.open_blob(d)
        })
        .unwrap();
        assert_eq!((counted, opened.get()), (files.clone(), 0));
        assert_eq!(
            super::super::files_from_raw_manifest(&m).unwrap(),
            Some(files.clone())
        );
        // And a signature made from them verifies against them.
        let key = crate::signing::keys::generated_p256();
        let b = super::super::bundle::sign(&files, &[], "m", &key).unwrap();
        let again = from_manifest(&store, &m).unwrap();
        super::super::verify_files(&b, &key.public_key().unwrap(), &again, None, "sig").unwrap();

        let tar = Manifest::model(
            crate::media::Family::Cncf,
            Descriptor::empty(),
            vec![layer(
                "application/vnd.cncf.model.weight.v1.tar",
                b"t",
                "dir",
            )],
        );
        let e = from_manifest(&store, &tar).unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }

    #[test]
    fn only_the_listed_paths_and_what_is_under_them_are_ignored() {
        let list: Vec<String> = [".git", "Modelfile", "docs/"].map(String::from).to_vec();
        for (p, want) in [
            (".git", true),
            (".git/config", true),
            (".github/workflows/x", false),
            ("Modelfile", true),
            ("sub/Modelfile", false),
            ("Modelfile.bak", false),
            ("docs/a.md", true),
            ("docs", true),
            ("docs-x", false),
        ] {
            assert_eq!(ignored(p, &list), want, "{p}");
        }
        assert!(!ignored("Modelfile", &[]), "nothing is ignored by default");
    }

    #[test]
    fn a_directory_yields_every_file_nested_or_not_but_what_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a/b", "a/c/d/e.bin", "a-b", "Modelfile", "model.sig"] {
            let f = d.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, p).unwrap();
        }
        let all = from_dir(d.path(), &[]).unwrap();
        let names: Vec<&str> = all.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["Modelfile", "a-b", "a/b", "a/c/d/e.bin", "model.sig"]
        );
        assert_eq!(all["a/c/d/e.bin"], Digest::of(b"a/c/d/e.bin"));
        let skipped = from_dir(d.path(), &["model.sig".into(), "a/c".into()]).unwrap();
        let names: Vec<&str> = skipped.keys().map(String::as_str).collect();
        assert_eq!(names, ["Modelfile", "a-b", "a/b"]);
        std::os::unix::fs::symlink("a/b", d.path().join("link")).unwrap();
        let e = from_dir(d.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("link") && e.contains("symlink"), "{e}");
    }
}
