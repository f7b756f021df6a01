//! Chunk indexes as artifacts (docs/chunk-index.md): one canonical JSON blob
//! per uncompressed layer with its fixed-size chunk digests and, for tar
//! layers, where each file's data lies; bound to the model by a layer
//! annotation, published as an OCI referrer, and judged by one trust policy.
//!
//! - this module: the blob format, its bounded parser and the streaming
//!   [`Indexer`] fed from the same write stream as the layer hash;
//! - [`tar`]: file offsets from a tar stream;
//! - [`referrer`]: the referrer manifest and the referrers tag schema;
//! - [`trust`]: bound / pinned / unbound / none per layer;
//! - [`local`]: referrers and pins in the local store.

pub mod local;
pub mod referrer;
pub mod tar;
pub mod trust;

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkHasher, ChunkIndex, check_chunk_size};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Descriptor;
use crate::media::{self, LayerFormat, LayerType};

/// Largest index blob we read or write. At 74 bytes per chunk digest that is
/// ~225,000 chunks: a 0.9 TiB layer at 4 MiB chunks. A larger layer gets no
/// index (it stays eager) rather than an index nobody may read.
pub const MAX_INDEX_BLOB: u64 = 16 << 20;

/// The model layer an index describes, as in its descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LayerRef {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

impl LayerRef {
    pub fn of(d: &Descriptor) -> LayerRef {
        LayerRef {
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            size: d.size,
        }
    }
}

/// One regular file of a tar layer: its data is `offset..offset+size` of the blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Permission bits from the tar header (`& 0o7777`).
    pub mode: u32,
    pub offset: u64,
    pub path: String,
    pub size: u64,
}

/// How the indexed blob is laid out: one file, or an uncompressed tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexFormat {
    Raw,
    Tar,
}

impl IndexFormat {
    /// The index format for a layer media type; `None` for compressed layers,
    /// whose chunk digests would describe compressed bytes no lazy read can use.
    pub fn for_media_type(media_type: &str) -> Option<IndexFormat> {
        match LayerType::decode_format(media_type) {
            LayerFormat::Raw => Some(IndexFormat::Raw),
            LayerFormat::Tar => Some(IndexFormat::Tar),
            LayerFormat::TarGzip | LayerFormat::TarZstd => None,
        }
    }
}

/// The chunk index blob of one layer. Fields are declared in the order
/// RFC 8785 (JCS) sorts their names, so serde's compact output is the
/// canonical form and any JCS implementation reproduces our bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LayerIndex {
    pub chunk_size: u64,
    pub chunks: Vec<Digest>,
    /// Regular files of a tar layer in archive order; empty for raw layers.
    pub files: Vec<FileEntry>,
    pub format: IndexFormat,
    pub layer: LayerRef,
    pub media_type: String,
}

impl LayerIndex {
    /// The canonical bytes whose digest names this index.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("chunk index serialisation cannot fail")
    }

    /// The chunk digests in the form the lazy path verifies with.
    pub fn chunk_index(&self) -> ChunkIndex {
        ChunkIndex {
            chunk_size: self.chunk_size,
            size: self.layer.size,
            chunks: self.chunks.clone(),
        }
    }

    /// Parses an index from outside. Refused: more than [`MAX_INDEX_BLOB`]
    /// bytes, another media type, a chunk size [`check_chunk_size`] refuses,
    /// a chunk count other than ceil(size / chunkSize), files outside the
    /// blob or out of order, and any byte sequence that is not the canonical
    /// serialisation (so one index has exactly one digest).
    pub fn parse(bytes: &[u8], what: &str) -> Result<LayerIndex> {
        let bad = |reason: String| Error::ChunkIndex {
            what: what.to_string(),
            reason,
        };
        if bytes.len() as u64 > MAX_INDEX_BLOB {
            return Err(Error::TooLarge {
                what: format!("chunk index {what}"),
                limit: MAX_INDEX_BLOB,
                declared: Some(bytes.len() as u64),
            });
        }
        let idx: LayerIndex =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a chunk index: {e}")))?;
        if idx.media_type != media::CHUNK_INDEX {
            return Err(bad(format!(
                "mediaType {:?} is not {}",
                crate::text::escape_control(&idx.media_type),
                media::CHUNK_INDEX
            )));
        }
        idx.check().map_err(|e| bad(e.to_string()))?;
        if idx.to_bytes() != bytes {
            return Err(bad(
                "not in canonical form (compact JSON, keys in JCS order)".into(),
            ));
        }
        Ok(idx)
    }

    /// Self-consistency: chunk size and count, and files within the blob.
    pub fn check(&self) -> Result<()> {
        check_chunk_size(self.chunk_size)?;
        self.chunk_index().check()?;
        if self.format == IndexFormat::Raw && !self.files.is_empty() {
            return Err(Error::Invalid("a raw layer's index lists no files".into()));
        }
        if self.files.len() > tar::MAX_FILES {
            return Err(Error::Invalid(format!(
                "{} files (at most {})",
                self.files.len(),
                tar::MAX_FILES
            )));
        }
        let mut end = 0u64;
        for f in &self.files {
            let stop = f
                .offset
                .checked_add(f.size)
                .filter(|s| *s <= self.layer.size);
            let Some(stop) = stop else {
                return Err(Error::Invalid(format!(
                    "file {:?} ({} bytes at {}) lies outside the {}-byte layer",
                    crate::text::escape_control(&f.path),
                    f.size,
                    f.offset,
                    self.layer.size
                )));
            };
            // Tar data starts on a block boundary after its header.
            if f.offset % 512 != 0 || f.offset < end.saturating_add(512) || f.path.is_empty() {
                return Err(Error::Invalid(format!(
                    "file {:?} at {} is not a tar entry after the previous one",
                    crate::text::escape_control(&f.path),
                    f.offset
                )));
            }
            end = stop;
        }
        Ok(())
    }

    /// Checks that this index describes `layer` (digest, size and media type).
    pub fn describes(&self, layer: &Descriptor) -> Result<()> {
        if self.layer != LayerRef::of(layer) {
            return Err(Error::ChunkIndex {
                what: format!("for layer {}", layer.digest),
                reason: format!(
                    "describes {} ({} bytes, {}), not this layer",
                    self.layer.digest,
                    self.layer.size,
                    crate::text::escape_control(&self.layer.media_type)
                ),
            });
        }
        Ok(())
    }

    /// Where `path` lies in a tar layer (the last entry wins, as on extraction).
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().rev().find(|f| f.path == path)
    }
}

/// Builds a [`LayerIndex`] from the blob's bytes as they are written or
/// received, in any slicing: chunk digests, and tar file offsets for tar
/// layers. [`Indexer::threaded`] hashes on a thread of its own, so the
/// second hash of every byte does not lengthen a build's critical path.
#[derive(Debug)]
pub struct Indexer {
    inline: Option<Engine>,
    worker: Option<Worker>,
    fed: u64,
}

#[derive(Debug)]
struct Engine {
    chunks: ChunkHasher,
    tar: Option<tar::TarScanner>,
}

impl Engine {
    fn update(&mut self, data: &[u8]) {
        self.chunks.update(data);
        if let Some(t) = &mut self.tar {
            t.update(data);
        }
    }
}

/// Bytes handed to the hashing thread at a time, and how many batches may
/// wait for it (memory per indexed file: about `(QUEUE + 2) * BATCH`).
const BATCH: usize = 1 << 20;
const QUEUE: usize = 2;

#[derive(Debug)]
struct Worker {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    handle: Option<std::thread::JoinHandle<Engine>>,
}

impl Worker {
    fn send(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let next = self
            .back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let full = std::mem::replace(&mut self.buf, next);
        if let Some(tx) = &self.tx {
            // A send fails only when the thread is gone (it panicked): finish reports it.
            let _ = tx.send(full);
        }
    }
}

impl Indexer {
    /// `chunk_size` must have passed [`check_chunk_size`].
    pub fn new(chunk_size: u64, format: IndexFormat) -> Indexer {
        Indexer {
            inline: Some(Engine {
                chunks: ChunkHasher::new(chunk_size),
                tar: (format == IndexFormat::Tar).then(tar::TarScanner::new),
            }),
            worker: None,
            fed: 0,
        }
    }

    /// Like [`Indexer::new`], hashing on a background thread (bytes are
    /// copied to it in 1 MiB batches). Falls back to inline hashing when no
    /// thread can be started.
    pub fn threaded(chunk_size: u64, format: IndexFormat) -> Indexer {
        let mut engine = Indexer::new(chunk_size, format)
            .inline
            .expect("new is inline");
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let (back_tx, back) = std::sync::mpsc::channel::<Vec<u8>>();
        let spawned = std::thread::Builder::new()
            .name("chunk-index".into())
            .spawn(move || {
                for mut b in rx {
                    engine.update(&b);
                    b.clear();
                    let _ = back_tx.send(b);
                }
                engine
            });
        match spawned {
            Ok(handle) => Indexer {
                inline: None,
                worker: Some(Worker {
                    tx: Some(tx),
                    back,
                    buf: Vec::with_capacity(BATCH),
                    handle: Some(handle),
                }),
                fed: 0,
            },
            Err(e) => {
                tracing::debug!("chunk index thread not started ({e}); hashing inline");
                Indexer::new(chunk_size, format)
            }
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.fed += data.len() as u64;
        if let Some(e) = &mut self.inline {
            e.update(data);
            return;
        }
        let w = self.worker.as_mut().expect("inline or threaded");
        while !data.is_empty() {
            let n = (BATCH - w.buf.len()).min(data.len());
            w.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if w.buf.len() == BATCH {
                w.send();
            }
        }
    }

    pub fn len(&self) -> u64 {
        self.fed
    }

    pub fn is_empty(&self) -> bool {
        self.fed == 0
    }

    fn into_engine(mut self) -> Result<Engine> {
        if let Some(e) = self.inline.take() {
            return Ok(e);
        }
        let mut w = self.worker.take().expect("inline or threaded");
        w.send();
        drop(w.tx.take());
        w.handle
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| Error::Invalid("the chunk index thread panicked".into()))
    }

    /// The index of `layer` (whose size must be the byte count fed). A tar
    /// that cannot be scanned, or an index above [`MAX_INDEX_BLOB`], is an error.
    pub fn finish(self, layer: LayerRef) -> Result<LayerIndex> {
        let what = format!("of layer {}", layer.digest);
        if self.fed != layer.size {
            return Err(Error::SizeMismatch {
                what: format!("bytes indexed for layer {}", layer.digest),
                expected: layer.size,
                actual: self.fed,
            });
        }
        let engine = self.into_engine()?;
        let (format, files) = match engine.tar {
            None => (IndexFormat::Raw, Vec::new()),
            Some(t) => (
                IndexFormat::Tar,
                t.finish().map_err(|reason| Error::ChunkIndex {
                    what: what.clone(),
                    reason: format!("not a readable tar: {reason}"),
                })?,
            ),
        };
        let c = engine.chunks.finish();
        let idx = LayerIndex {
            chunk_size: c.chunk_size,
            chunks: c.chunks,
            files,
            format,
            layer,
            media_type: media::CHUNK_INDEX.into(),
        };
        let n = idx.to_bytes().len() as u64;
        if n > MAX_INDEX_BLOB {
            return Err(Error::TooLarge {
                what: format!("chunk index {what}"),
                limit: MAX_INDEX_BLOB,
                declared: Some(n),
            });
        }
        Ok(idx)
    }
}

/// A writer that feeds an [`Indexer`] (when there is one) with every byte it passes on.
pub struct IndexingWriter<'a, W: ?Sized> {
    inner: &'a mut W,
    pub indexer: Option<Indexer>,
}

impl<'a, W: Write + ?Sized> IndexingWriter<'a, W> {
    pub fn new(inner: &'a mut W, indexer: Option<Indexer>) -> Self {
        IndexingWriter { inner, indexer }
    }
}

impl<W: Write + ?Sized> Write for IndexingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(ix) = &mut self.indexer {
            ix.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
