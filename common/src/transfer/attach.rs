//! `attach`: a new artifact = SRC plus (or replacing) one file layer, with the
//! config's diffIds updated and SRC's manifest annotations kept. Remote→remote
//! never pulls weights: SRC's blobs are mounted server-side into DST.

use std::path::Path;

use crate::config::ModelConfig;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Descriptor, Manifest};
use crate::media::{self, LayerKind};
use crate::pack::{self, PackFile, PackOptions};
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::store::Store;

/// Inserts or replaces `layer` (by file path), keeping group order (config, weights, code, docs, datasets; then path).
pub fn attach_layer(
    manifest: &Manifest,
    config: &[u8],
    layer: Descriptor,
    diff_id: Digest,
    force: bool,
) -> Result<(Manifest, Vec<u8>)> {
    let mut cfg = ModelConfig::parse(config, "model config")?;
    let path = layer.filepath().unwrap_or_default().to_string();
    let mut pairs: Vec<(Descriptor, Digest)> = manifest
        .layers
        .iter()
        .cloned()
        .zip(cfg.modelfs.diff_ids.iter().cloned())
        .collect();
    if pairs.len() != manifest.layers.len() {
        return Err(Error::Artifact(format!(
            "the source has {} diffIds for {} layers",
            cfg.modelfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    if let Some(i) = pairs
        .iter()
        .position(|(d, _)| d.filepath() == Some(path.as_str()))
    {
        if !force {
            return Err(Error::Invalid(format!(
                "{path} is already in the model\nhint: pass --force to replace it"
            )));
        }
        pairs.remove(i);
    }
    let rank = |d: &Descriptor| {
        d.layer_type()
            .map(|t| {
                LayerKind::ALL
                    .iter()
                    .position(|k| *k == t.kind)
                    .unwrap_or(9)
            })
            .unwrap_or(9)
    };
    let (r, p) = (rank(&layer), path.clone());
    let at = pairs
        .iter()
        .position(|(d, _)| (rank(d), d.filepath().unwrap_or_default().to_string()) > (r, p.clone()))
        .unwrap_or(pairs.len());
    pairs.insert(at, (layer, diff_id));
    cfg.modelfs.diff_ids = pairs.iter().map(|(_, d)| d.clone()).collect();
    let config_bytes = cfg.to_bytes();
    let mut m = manifest.clone();
    m.layers = pairs.into_iter().map(|(d, _)| d).collect();
    m.config = Descriptor::new(
        manifest.config.media_type.clone(),
        Digest::of(&config_bytes),
        config_bytes.len() as u64,
    );
    Ok((m, config_bytes))
}

fn pack_file(file: &Path, dest_dir: Option<&str>, kind: Option<LayerKind>) -> Result<PackFile> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).map_err(|e| Error::io("stat", file, e))?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "{} is not a regular file",
            file.display()
        )));
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let rel = match dest_dir
        .map(|d| d.trim_matches('/'))
        .filter(|d| !d.is_empty())
    {
        Some(d) => format!("{d}/{name}"),
        None => name,
    };
    crate::extract::safe_relative_path("attached file", &rel)?;
    let (k, guessed) = match kind {
        Some(k) => (k, false),
        None => crate::modelfile::classify(&rel, meta.len()),
    };
    Ok(PackFile {
        rel_path: rel,
        abs_path: file.to_path_buf(),
        kind: k,
        size: meta.len(),
        mode: meta.permissions().mode(),
        untested: guessed,
    })
}

/// No chunk index: the new manifest has a new digest, so SRC's bound
/// indexes would need re-publishing too; `modelpack index DST` adds them.
fn opts_for(manifest: &Manifest, format: crate::media::LayerFormat) -> PackOptions {
    PackOptions {
        family: manifest.model_family().unwrap_or_default(),
        format,
        chunk_size: None,
        ..Default::default()
    }
}

/// Local: SRC and DST in the store.
#[allow(clippy::too_many_arguments)]
pub fn attach_local(
    store: &Store,
    file: &Path,
    src: &Reference,
    dst: &Reference,
    dest_dir: Option<&str>,
    kind: Option<LayerKind>,
    format: crate::media::LayerFormat,
    force: bool,
) -> Result<Digest> {
    let _lease = store.lease()?;
    let loaded = store.load_manifest(src)?;
    let config = store.read_blob(&loaded.manifest.config.digest)?;
    let opts = opts_for(&loaded.manifest, format);
    let pf = pack_file(file, dest_dir, kind)?;
    let mut w = store.blob_writer()?;
    let enc = pack::encode_layer(&pf, &opts, &mut w, &|_| {})?.enc;
    w.commit(Some(&enc.digest))?;
    let desc = pack::layer_descriptor(&pf, &enc, &opts);
    let (m, config_bytes) =
        attach_layer(&loaded.manifest, &config, desc, enc.diff_id.clone(), force)?;
    store.put_bytes(&config_bytes)?;
    let bytes = m.to_bytes();
    let d = store.put_bytes(&bytes)?;
    let mut entry = Descriptor::new(media::OCI_MANIFEST, d.clone(), bytes.len() as u64);
    entry.artifact_type = m.artifact_type.clone();
    store.tag(dst, &entry)?;
    Ok(d)
}

/// Remote→remote: only the new file is uploaded; SRC's blobs are mounted into DST.
#[allow(clippy::too_many_arguments)]
pub async fn attach_remote(
    client: &RegistryClient,
    store: &Store,
    file: &Path,
    src: &Reference,
    dst: &Reference,
    dest_dir: Option<&str>,
    kind: Option<LayerKind>,
    format: crate::media::LayerFormat,
    force: bool,
) -> Result<(Digest, u64)> {
    let fetched = client.get_manifest(src).await?;
    let manifest = Manifest::parse(&fetched.bytes, &format!("manifest of {src}"))?;
    let config = super::fetch_small_blob(client, src, &manifest.config).await?;
    let opts = opts_for(&manifest, format);
    let pf = pack_file(file, dest_dir, kind)?;
    let (enc, temp) = if format == crate::media::LayerFormat::Raw {
        let (d, size) = crate::digest::hash_file(file)?;
        (
            pack::LayerEncoding {
                diff_id: d.clone(),
                digest: d,
                size,
                chunks: None,
            },
            None,
        )
    } else {
        let (path, f) = crate::store::tempfile_in(&store.tmp_dir())?;
        let mut w = std::io::BufWriter::new(f);
        let enc = pack::encode_layer(&pf, &opts, &mut w, &|_| {})?.enc;
        std::io::Write::flush(&mut w).map_err(|e| Error::io("write", &path, e))?;
        (enc, Some(path))
    };
    let desc = pack::layer_descriptor(&pf, &enc, &opts);
    let (m, config_bytes) = attach_layer(&manifest, &config, desc, enc.diff_id.clone(), force)?;
    if src.registry != dst.registry {
        return Err(Error::Invalid(format!(
            "attach across registries ({} → {}) would copy every blob; pull and push instead",
            src.registry, dst.registry
        )));
    }
    let mut sent = 0;
    for l in &manifest.layers {
        if !m.layers.iter().any(|x| x.digest == l.digest)
            || client.blob_exists(dst, &l.digest).await?.is_some()
        {
            continue;
        }
        if !client.mount_blob(dst, &l.digest, &src.repository).await? {
            return Err(Error::Registry {
                status: None,
                registry: dst.registry.clone(),
                message: format!(
                    "could not mount {} from {} into {}",
                    l.digest, src.repository, dst.repository
                ),
            });
        }
    }
    let source = temp.clone().unwrap_or_else(|| file.to_path_buf());
    let out = client
        .push_blob_file(
            dst,
            &enc.digest,
            enc.size,
            &source,
            std::slice::from_ref(&src.repository),
            &(),
        )
        .await;
    if let Some(t) = temp {
        let _ = std::fs::remove_file(t);
    }
    if let crate::registry::PushOutcome::Uploaded { bytes_sent } = out? {
        sent += bytes_sent;
    }
    client.push_blob_bytes(dst, &config_bytes).await?;
    let d = client
        .put_manifest(
            &dst.with_tag(dst.tag_or_default().unwrap_or("latest")),
            &m.to_bytes(),
            media::OCI_MANIFEST,
        )
        .await?;
    Ok((d, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_inserts_in_group_order_and_replaces_with_force() {
        let mk = |kind: &str, path: &str, b: &[u8]| {
            let mut d = Descriptor::new(
                format!("application/vnd.cncf.model.{kind}.v1.raw"),
                Digest::of(b),
                b.len() as u64,
            );
            d.annotations
                .insert("org.cncf.model.filepath".into(), path.into());
            d
        };
        let layers = vec![
            mk("weight.config", "config.json", b"c"),
            mk("weight", "w.safetensors", b"w"),
            mk("doc", "README.md", b"r"),
        ];
        let cfg = ModelConfig {
            modelfs: crate::config::ModelFs {
                fs_type: "layers".into(),
                diff_ids: layers.iter().map(|l| l.digest.clone()).collect(),
            },
            ..Default::default()
        };
        let m = Manifest::model(
            crate::media::Family::Cncf,
            Descriptor::new(
                "application/vnd.cncf.model.config.v1+json",
                Digest::of(b"x"),
                1,
            ),
            layers,
        );
        let new = mk("weight.config", "tokenizer.json", b"t");
        let (m2, c2) =
            attach_layer(&m, &cfg.to_bytes(), new.clone(), new.digest.clone(), false).unwrap();
        let paths: Vec<_> = m2.layers.iter().map(|l| l.filepath().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "config.json",
                "tokenizer.json",
                "w.safetensors",
                "README.md"
            ]
        );
        let c2 = ModelConfig::parse(&c2, "c").unwrap();
        assert_eq!(c2.modelfs.diff_ids[1], new.digest);
        assert_eq!(m2.config.digest, Digest::of(&c2.to_bytes()));
        let again = mk("weight", "w.safetensors", b"w2");
        assert!(
            attach_layer(
                &m2,
                &c2.to_bytes(),
                again.clone(),
                again.digest.clone(),
                false
            )
            .unwrap_err()
            .to_string()
            .contains("--force")
        );
        let (m3, _) = attach_layer(
            &m2,
            &c2.to_bytes(),
            again.clone(),
            again.digest.clone(),
            true,
        )
        .unwrap();
        assert_eq!(m3.layers.len(), 4);
        assert!(m3.layers.iter().any(|l| l.digest == again.digest));
    }
}
