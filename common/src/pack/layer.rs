//! Encoding one file as one layer (raw, tar, tar+gzip, tar+zstd) in a single
//! streaming pass that yields the layer digest and the uncompressed diffId.

use std::fs::File;
use std::io::{self, Read, Write};

use crate::digest::{COPY_BUF, Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::media::LayerFormat;

use super::{PackFile, PackOptions, normalized_mode};

/// Digest and size of the encoded layer blob, plus its diffId (digest of the
/// uncompressed content, equal to `digest` for raw and tar).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerEncoding {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// gzip level and zstd level are fixed so the same input always compresses to the same bytes.
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

/// Streams `file` into `out` in the chosen format. `progress` gets source bytes read.
pub fn encode_layer(
    file: &PackFile,
    opts: &PackOptions,
    out: &mut dyn Write,
    progress: &dyn Fn(u64),
) -> Result<LayerEncoding> {
    let mut blob = HashingWriter::new(out);
    let diff_id = encode_into(file, opts, &mut blob, progress)?;
    let (_, digest, size) = blob.finish();
    Ok(LayerEncoding {
        diff_id: diff_id.unwrap_or_else(|| digest.clone()),
        digest,
        size,
    })
}

/// Like [`encode_layer`] for a sink that hashes what it receives itself (the
/// store's `BlobWriter`): the blob bytes are hashed once, by the sink. Returns
/// the diffId of compressed layers (for raw and tar it is the blob digest).
pub fn encode_layer_unhashed(
    file: &PackFile,
    opts: &PackOptions,
    out: &mut dyn Write,
    progress: &dyn Fn(u64),
) -> Result<Option<Digest>> {
    encode_into(file, opts, out, progress)
}

fn encode_into(
    file: &PackFile,
    opts: &PackOptions,
    blob: &mut dyn Write,
    progress: &dyn Fn(u64),
) -> Result<Option<Digest>> {
    let src = File::open(&file.abs_path).ctx("open", &file.abs_path)?;
    let actual = src.metadata().ctx("stat", &file.abs_path)?.len();
    if actual != file.size {
        return Err(Error::Workspace(format!(
            "{} changed while building ({} bytes expected, {} found)",
            file.abs_path.display(),
            file.size,
            actual
        )));
    }
    let reader = ProgressReader {
        inner: src,
        progress,
    };
    let err = |e: io::Error| Error::io("pack", &file.abs_path, e);
    let diff_id = match opts.format {
        LayerFormat::Raw => {
            copy(reader, blob).map_err(err)?;
            None
        }
        LayerFormat::Tar => {
            write_tar(file, opts, reader, blob).map_err(err)?;
            None
        }
        LayerFormat::TarGzip => {
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut *blob, flate2::Compression::new(GZIP_LEVEL));
            let mut tar_hash = HashingWriter::new(gz);
            write_tar(file, opts, reader, &mut tar_hash).map_err(err)?;
            let (gz, diff, _) = tar_hash.finish();
            gz.finish().map_err(err)?;
            Some(diff)
        }
        LayerFormat::TarZstd => {
            let mut enc = zstd::Encoder::new(&mut *blob, ZSTD_LEVEL).map_err(err)?;
            enc.include_checksum(false).map_err(err)?;
            let mut tar_hash = HashingWriter::new(enc);
            write_tar(file, opts, reader, &mut tar_hash).map_err(err)?;
            let (enc, diff, _) = tar_hash.finish();
            enc.finish().map_err(err)?;
            Some(diff)
        }
    };
    blob.flush().map_err(err)?;
    Ok(diff_id)
}

/// One canonical tar entry: the file at its relative path, uid/gid 0, no user
/// or group names, fixed mtime, normalised mode, GNU long-name records for
/// paths over 100 bytes, and the standard two-block end of archive.
fn write_tar(
    file: &PackFile,
    opts: &PackOptions,
    data: impl Read,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(file.size);
    header.set_mode(normalized_mode(file.mode));
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(opts.mtime.max(0) as u64);
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.append_data(&mut header, &file.rel_path, data)?;
    builder.into_inner()?;
    Ok(())
}

fn copy(mut r: impl Read, w: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a dyn Fn(u64),
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}
