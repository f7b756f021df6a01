//! Tar, tar+gzip and tar+zstd layers (ModelPack tar layers, oras directories).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use crate::digest::HashingReader;
use crate::error::{Error, IoContext, Result};
use crate::manifest::Descriptor;
use crate::media::LayerFormat;

use super::{ExtractOptions, ExtractStats, layer_name, path::prepare_parent, safe_relative_path};

pub(super) fn extract_tar(
    layer: &Descriptor,
    blob: File,
    format: LayerFormat,
    out: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractStats> {
    let name = layer_name(layer);
    let mut hashing =
        HashingReader::new(io::BufReader::with_capacity(crate::digest::COPY_BUF, blob));
    let stats = {
        let decoded: Box<dyn Read + '_> = match format {
            LayerFormat::Tar | LayerFormat::Raw => Box::new(&mut hashing),
            LayerFormat::TarGzip => Box::new(flate2::read::GzDecoder::new(&mut hashing)),
            LayerFormat::TarZstd => Box::new(
                zstd::Decoder::new(&mut hashing)
                    .map_err(|e| Error::io("decompress layer", out, e))?,
            ),
        };
        unpack(&name, decoded, out, opts)?
    };
    // Drain trailing bytes (compressor footers, tar padding) so the digest covers the whole blob.
    io::copy(&mut hashing, &mut io::sink()).ctx("read layer", out)?;
    let (digest, size) = hashing.finish();
    if digest != layer.digest {
        return Err(Error::DigestMismatch {
            what: format!("layer {name}"),
            expected: layer.digest.to_string(),
            actual: digest.to_string(),
        });
    }
    if size != layer.size {
        return Err(Error::SizeMismatch {
            what: format!("layer {name}"),
            expected: layer.size,
            actual: size,
        });
    }
    Ok(stats)
}

fn unpack(name: &str, r: impl Read, out: &Path, opts: &ExtractOptions) -> Result<ExtractStats> {
    let mut stats = ExtractStats::default();
    let mut archive = tar::Archive::new(r);
    let bad =
        |e: io::Error| Error::Artifact(format!("layer {name} is not a valid tar archive: {e}"));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw_path = entry.path().map_err(bad)?.to_string_lossy().to_string();
        let rel = safe_relative_path(name, &raw_path)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().ok().map(|m| m & 0o777);
        let mtime = header.mtime().ok().map(|t| t as i64);
        match kind {
            tar::EntryType::Directory => {
                let dest = prepare_parent(name, out, &rel)?;
                if !dest.is_dir() {
                    fs::create_dir(&dest).ctx("create directory", &dest)?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let dest = prepare_parent(name, out, &rel)?;
                let dir = dest.parent().expect("has parent");
                let (tmp, mut f) = crate::store::tempfile_in(dir)?;
                let guard = super::TempGuard(Some(tmp.clone()));
                let n = io::copy(&mut entry, &mut f).map_err(bad)?;
                drop(f);
                fs::rename(&tmp, &dest).ctx("rename into place", &dest)?;
                guard.disarm();
                if opts.apply_metadata {
                    use std::os::unix::fs::PermissionsExt;
                    if let Some(m) = mode.filter(|m| *m != 0) {
                        fs::set_permissions(&dest, fs::Permissions::from_mode(m))
                            .ctx("chmod", &dest)?;
                    }
                    if let Some(t) = mtime {
                        super::set_mtime(&dest, t)?;
                    }
                }
                stats.files_written += 1;
                stats.bytes_written += n;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| bad(io::Error::other("symlink without target")))?;
                check_link_inside(name, &rel, &target)?;
                let dest = prepare_parent(name, out, &rel)?;
                let _ = fs::remove_file(&dest);
                std::os::unix::fs::symlink(&target, &dest).ctx("create symlink", &dest)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| bad(io::Error::other("hardlink without target")))?;
                let target_rel =
                    safe_relative_path(name, &target.to_string_lossy()).map_err(|_| {
                        Error::UnsafePath {
                            layer: name.to_string(),
                            reason: format!(
                                "hardlink {raw_path:?} points outside the output directory ({})",
                                target.display()
                            ),
                        }
                    })?;
                let src = prepare_parent(name, out, &target_rel)?;
                let src_meta = fs::symlink_metadata(&src).map_err(|_| Error::UnsafePath {
                    layer: name.to_string(),
                    reason: format!(
                        "hardlink {raw_path:?} points to {} which was not extracted before it",
                        target.display()
                    ),
                })?;
                if !src_meta.is_file() {
                    return Err(Error::UnsafePath {
                        layer: name.to_string(),
                        reason: format!("hardlink {raw_path:?} must point to a regular file"),
                    });
                }
                let dest = prepare_parent(name, out, &rel)?;
                let _ = fs::remove_file(&dest);
                fs::hard_link(&src, &dest).ctx("create hardlink", &dest)?;
                stats.files_written += 1;
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            other => {
                return Err(Error::UnsafePath {
                    layer: name.to_string(),
                    reason: format!(
                        "entry {raw_path:?} is a {} (device nodes, fifos and other special files are refused)",
                        describe(other)
                    ),
                });
            }
        }
    }
    Ok(stats)
}

fn describe(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "fifo",
        _ => "special file",
    }
}

/// A symlink at `rel` pointing to `target` must stay inside the output directory.
fn check_link_inside(layer: &str, rel: &Path, target: &Path) -> Result<()> {
    let refuse = || Error::UnsafePath {
        layer: layer.to_string(),
        reason: format!(
            "symlink {} -> {} points outside the output directory",
            rel.display(),
            target.display()
        ),
    };
    if target.is_absolute() {
        return Err(refuse());
    }
    let mut depth: Vec<PathBuf> = rel
        .parent()
        .map(|p| {
            p.components()
                .map(|c| PathBuf::from(c.as_os_str()))
                .collect()
        })
        .unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(n) => depth.push(PathBuf::from(n)),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return Err(refuse());
                }
            }
            _ => return Err(refuse()),
        }
    }
    Ok(())
}
