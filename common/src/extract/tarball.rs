//! Tar, tar+gzip and tar+zstd layers (ModelPack tar layers, oras directories).
//!
//! Entries are staged under hidden temp names beside their destinations while
//! the blob is hashed; only when the whole blob matches the layer digest are
//! they renamed into place. A corrupt or hostile layer therefore leaves
//! nothing at a final path: its temp files and the directories it created
//! are removed again.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use crate::confined::{self, ConfinedDir};
use crate::digest::HashingReader;
use crate::error::{Error, IoContext, Result};
use crate::manifest::Descriptor;
use crate::media::LayerFormat;

use super::path::{check_symlink_target, clean_relative};
use super::{Created, ExtractStats, Target, layer_name, refuse_dir_in_way, split, system_time};

/// More entries than any model directory has; bounds memory and handles.
pub const MAX_TAR_ENTRIES: usize = 1_000_000;

struct Staged {
    dir: Arc<ConfinedDir>,
    tmp: OsString,
    name: OsString,
}

/// Everything one tar layer has written so far, not yet visible.
struct Stage<'a> {
    target: &'a Target,
    layer: String,
    staged: Vec<Staged>,
    /// Regular files of this layer by path → index in `staged` (hardlink sources).
    files: HashMap<PathBuf, usize>,
    dir_modes: Vec<(Arc<ConfinedDir>, u32)>,
    created: Created,
}

impl Stage<'_> {
    fn refuse(&self, reason: String) -> Error {
        Error::UnsafePath {
            layer: self.layer.clone(),
            reason,
        }
    }

    fn rollback(self) {
        for s in &self.staged {
            let _ = s.dir.remove_file(&s.tmp);
        }
        self.target.undo(self.created);
    }

    fn commit(self) -> Result<()> {
        for s in &self.staged {
            s.dir.rename(&s.tmp, &s.dir, &s.name)?;
        }
        for (d, mode) in &self.dir_modes {
            d.chmod(*mode)?;
        }
        Ok(())
    }
}

pub(super) fn extract_tar(
    target: &Target,
    layer: &Descriptor,
    blob: impl Read,
    format: LayerFormat,
) -> Result<ExtractStats> {
    let name = layer_name(layer);
    let mut stage = Stage {
        target,
        layer: name.clone(),
        staged: Vec::new(),
        files: HashMap::new(),
        dir_modes: Vec::new(),
        created: Created::default(),
    };
    let result = (|| {
        let mut hashing =
            HashingReader::new(io::BufReader::with_capacity(crate::digest::COPY_BUF, blob));
        let stats = {
            let decoded: Box<dyn Read + '_> = match format {
                LayerFormat::Tar | LayerFormat::Raw => Box::new(&mut hashing),
                LayerFormat::TarGzip => Box::new(flate2::read::GzDecoder::new(&mut hashing)),
                LayerFormat::TarZstd => Box::new(
                    zstd::Decoder::new(&mut hashing)
                        .map_err(|e| Error::io("decompress layer", target.path(), e))?,
                ),
            };
            unpack(&mut stage, decoded)?
        };
        // Drain trailing bytes (compressor footers, tar padding) so the digest covers the whole blob.
        io::copy(&mut hashing, &mut io::sink()).ctx("read layer", target.path())?;
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
    })();
    match result {
        Ok(stats) => {
            stage.commit()?;
            Ok(stats)
        }
        Err(e) => {
            stage.rollback();
            Err(e)
        }
    }
}

fn unpack(stage: &mut Stage<'_>, r: impl Read) -> Result<ExtractStats> {
    let name = stage.layer.clone();
    let target = stage.target;
    let apply = target.opts.apply_metadata;
    let mut stats = ExtractStats::default();
    let mut archive = tar::Archive::new(r);
    let bad =
        |e: io::Error| Error::Artifact(format!("layer {name} is not a valid tar archive: {e}"));
    for (count, entry) in archive.entries().map_err(bad)?.enumerate() {
        if count >= MAX_TAR_ENTRIES {
            return Err(stage.refuse(format!("has more than {MAX_TAR_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(bad)?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        let rel = clean_relative(&name, &raw_path)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().ok().map(|m| m & 0o777).filter(|m| *m != 0);
        let mtime = header.mtime().ok().and_then(|t| i64::try_from(t).ok());
        if rel.as_os_str().is_empty() {
            // `./` itself: real tars have it; it names the output directory.
            if kind == tar::EntryType::Directory {
                continue;
            }
            return Err(stage.refuse(format!("entry {raw_path:?} names the output directory")));
        }
        match kind {
            tar::EntryType::Directory => {
                target.claims.dir(&name, &rel)?;
                let d = target.dir(&rel, &mut stage.created)?;
                if apply && let Some(m) = mode {
                    stage.dir_modes.push((d, confined::sanitize_mode(m, true)));
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                target.claims.file(&name, &rel)?;
                let (parent, fname) = split(&rel);
                let dir = target.dir(parent, &mut stage.created)?;
                refuse_dir_in_way(&dir, fname, &name)?;
                let (tmp, mut f) = dir.create_temp("modelpack")?;
                stage.files.insert(rel.clone(), stage.staged.len());
                stage.staged.push(Staged {
                    dir: dir.clone(),
                    tmp: tmp.clone(),
                    name: fname.to_os_string(),
                });
                let n = {
                    let mut w = io::BufWriter::with_capacity(crate::digest::COPY_BUF, &mut f);
                    let n = io::copy(&mut entry, &mut w).map_err(bad)?;
                    io::Write::flush(&mut w).ctx("write", dir.shown(&tmp))?;
                    n
                };
                use std::os::unix::fs::PermissionsExt;
                let m = if apply { mode.unwrap_or(0o644) } else { 0o644 };
                f.set_permissions(std::fs::Permissions::from_mode(confined::sanitize_mode(
                    m, false,
                )))
                .ctx("chmod", dir.shown(&tmp))?;
                if apply && let Some(t) = mtime {
                    f.set_modified(system_time(t))
                        .ctx("set mtime", dir.shown(&tmp))?;
                }
                stats.files_written += 1;
                stats.bytes_written += n;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| bad(io::Error::other("symlink without target")))?;
                check_symlink_target(&name, &rel, &link)?;
                target.claims.file(&name, &rel)?;
                let (parent, fname) = split(&rel);
                let dir = target.dir(parent, &mut stage.created)?;
                refuse_dir_in_way(&dir, fname, &name)?;
                let tmp = temp_name();
                dir.symlink(&link, &tmp)?;
                stage.staged.push(Staged {
                    dir,
                    tmp,
                    name: fname.to_os_string(),
                });
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| bad(io::Error::other("hardlink without target")))?;
                let link_str = link.to_string_lossy().to_string();
                let outside = || {
                    stage.refuse(format!(
                        "hardlink {raw_path:?} -> {link_str:?} must name a regular file earlier in the same layer"
                    ))
                };
                let src_rel = clean_relative(&name, &link_str).map_err(|_| outside())?;
                let Some(&src) = stage.files.get(&src_rel) else {
                    return Err(outside());
                };
                target.claims.file(&name, &rel)?;
                let (parent, fname) = split(&rel);
                let dir = target.dir(parent, &mut stage.created)?;
                refuse_dir_in_way(&dir, fname, &name)?;
                let tmp = temp_name();
                let (src_dir, src_tmp) =
                    (stage.staged[src].dir.clone(), stage.staged[src].tmp.clone());
                dir.hard_link(&src_dir, &src_tmp, &tmp)?;
                stage.staged.push(Staged {
                    dir,
                    tmp,
                    name: fname.to_os_string(),
                });
                stats.files_written += 1;
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            other => {
                return Err(stage.refuse(format!(
                    "entry {:?} is a {} (device nodes, fifos, sparse and other special files are refused)",
                    super::shown(&raw_path),
                    describe(other)
                )));
            }
        }
    }
    Ok(stats)
}

fn temp_name() -> OsString {
    OsString::from(format!(
        ".modelpack-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ))
}

fn describe(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "fifo",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "special file",
    }
}
