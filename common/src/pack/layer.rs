//! Encoding one file as one layer (raw, tar, tar+gzip, tar+zstd) in a single
//! streaming pass that yields the layer digest, the uncompressed diffId and,
//! for raw and tar layers, the chunk index (fed from the same write stream).

use std::fs::File;
use std::io::{self, Read, Write};

use crate::chunkindex::{IndexFormat, Indexer, IndexingWriter, LayerIndex, LayerRef};
use crate::digest::{COPY_BUF, Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::media::{LayerFormat, LayerType};

use super::{PackFile, PackOptions, normalized_mode};

/// Digest and size of the encoded layer blob, plus its diffId (digest of the
/// uncompressed content, equal to `digest` for raw and tar).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerEncoding {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    /// Digest of the layer's chunk index blob, when one was made; it becomes
    /// the layer's `org.modelpack.chunks.digest` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Digest>,
}

/// An encoded layer and, for raw and tar layers with indexing on, its index.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub enc: LayerEncoding,
    pub index: Option<LayerIndex>,
}

/// gzip level and zstd level are fixed so the same input always compresses to the same bytes.
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

/// Streams `file` into `out` in the chosen format. `progress` gets source bytes read.
/// The chunk index (when `opts.chunk_size` is set) is computed from the
/// same bytes on their way to `out`.
pub fn encode_layer(
    file: &PackFile,
    opts: &PackOptions,
    out: &mut dyn Write,
    progress: &dyn Fn(u64),
) -> Result<Encoded> {
    let mut blob = HashingWriter::new(out);
    let (diff_id, indexer) = encode_into(file, opts, &mut blob, progress)?;
    let (_, digest, size) = blob.finish();
    let index = finish_index(indexer, file, opts, &digest, size);
    Ok(Encoded {
        enc: LayerEncoding {
            diff_id: diff_id.unwrap_or_else(|| digest.clone()),
            digest,
            size,
            chunks: None,
        },
        index,
    })
}

/// Like [`encode_layer`] for a sink that hashes what it receives itself (the
/// store's `BlobWriter`): the blob bytes are hashed once, by the sink. Returns
/// the diffId of compressed layers (for raw and tar it is the blob digest)
/// and the indexer to finish with [`finish_index`] once the digest is known.
pub fn encode_layer_unhashed(
    file: &PackFile,
    opts: &PackOptions,
    out: &mut dyn Write,
    progress: &dyn Fn(u64),
) -> Result<(Option<Digest>, Option<Indexer>)> {
    encode_into(file, opts, out, progress)
}

/// The layer media type `layer_descriptor` writes for `file`.
pub fn layer_media_type(file: &PackFile, opts: &PackOptions) -> String {
    LayerType::new(opts.family, file.kind, opts.format).media_type()
}

/// Completes an index once the layer digest is known. An index that cannot
/// be made (a layer too large for [`crate::chunkindex::MAX_INDEX_BLOB`] at
/// this chunk size) only costs laziness: the layer stays eager, with a warning.
pub fn finish_index(
    indexer: Option<Indexer>,
    file: &PackFile,
    opts: &PackOptions,
    digest: &Digest,
    size: u64,
) -> Option<LayerIndex> {
    let layer = LayerRef {
        digest: digest.clone(),
        media_type: layer_media_type(file, opts),
        size,
    };
    match indexer?.finish(layer) {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::warn!("{}: no chunk index: {e}", file.rel_path);
            None
        }
    }
}

/// A raw layer straight into the store: the file's bytes are copied by the
/// kernel into the blob's temp file and hashed from there
/// ([`crate::store::BlobWriter::copy_from_file`]), the chunk index fed from
/// the same bytes. Returns the indexer to finish with [`finish_index`].
pub fn encode_raw_into_store(
    file: &PackFile,
    opts: &PackOptions,
    out: &mut crate::store::BlobWriter,
    progress: &dyn Fn(u64),
) -> Result<Option<Indexer>> {
    let src = open_checked(file)?;
    let mut indexer = opts
        .chunk_size
        .map(|cs| Indexer::threaded(cs, IndexFormat::Raw));
    // One byte more than planned: a file that grew is refused, not cut.
    let copied = out.copy_from_file(
        &src,
        &file.abs_path,
        file.size + 1,
        opts.reflink,
        &mut |b| {
            if let Some(ix) = &mut indexer {
                ix.update(b);
            }
            progress(b.len() as u64);
        },
    )?;
    if copied != file.size {
        return Err(changed_while_building(file, copied));
    }
    Ok(indexer)
}

fn open_checked(file: &PackFile) -> Result<File> {
    let src = File::open(&file.abs_path).ctx("open", &file.abs_path)?;
    let actual = src.metadata().ctx("stat", &file.abs_path)?.len();
    if actual != file.size {
        return Err(changed_while_building(file, actual));
    }
    Ok(src)
}

fn changed_while_building(file: &PackFile, actual: u64) -> Error {
    Error::Workspace(format!(
        "{} changed while building ({} bytes expected, {} found)",
        file.abs_path.display(),
        file.size,
        actual
    ))
}

fn encode_into(
    file: &PackFile,
    opts: &PackOptions,
    blob: &mut dyn Write,
    progress: &dyn Fn(u64),
) -> Result<(Option<Digest>, Option<Indexer>)> {
    let src = open_checked(file)?;
    let reader = ProgressReader {
        inner: src,
        progress,
    };
    let err = |e: io::Error| Error::io("pack", &file.abs_path, e);
    let format = match opts.format {
        LayerFormat::Raw => Some(IndexFormat::Raw),
        LayerFormat::Tar => Some(IndexFormat::Tar),
        _ => None,
    };
    let indexer = format
        .zip(opts.chunk_size)
        .map(|(f, cs)| Indexer::threaded(cs, f));
    let (diff_id, indexer) = match opts.format {
        LayerFormat::Raw | LayerFormat::Tar => {
            let mut w = IndexingWriter::new(&mut *blob, indexer);
            if opts.format == LayerFormat::Raw {
                copy(reader, &mut w).map_err(err)?;
            } else {
                write_tar(file, opts, reader, &mut w).map_err(err)?;
            }
            (None, w.indexer)
        }
        LayerFormat::TarGzip => {
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut *blob, flate2::Compression::new(GZIP_LEVEL));
            let mut tar_hash = HashingWriter::new(gz);
            write_tar(file, opts, reader, &mut tar_hash).map_err(err)?;
            let (gz, diff, _) = tar_hash.finish();
            gz.finish().map_err(err)?;
            (Some(diff), None)
        }
        LayerFormat::TarZstd => {
            let mut enc = zstd::Encoder::new(&mut *blob, ZSTD_LEVEL).map_err(err)?;
            enc.include_checksum(false).map_err(err)?;
            let mut tar_hash = HashingWriter::new(enc);
            write_tar(file, opts, reader, &mut tar_hash).map_err(err)?;
            let (enc, diff, _) = tar_hash.finish();
            enc.finish().map_err(err)?;
            (Some(diff), None)
        }
    };
    blob.flush().map_err(err)?;
    Ok((diff_id, indexer))
}

/// One canonical tar entry: the file at its relative path, uid/gid 0, no user
/// or group names, the chosen mtime, normalised mode, GNU long-name records for
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
    let mtime = match opts.mtime {
        Some(t) => t,
        None => super::source_mtime(file)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64),
    };
    header.set_mtime(mtime.max(0) as u64);
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
