//! `BlobSource`: where a blob's bytes come from, as ranges. The registry
//! client implements it with Range GETs (`registry::RegistryBlob`), a local
//! file with `pread` ([`LocalBlob`]), and [`MemoryBlob`] in memory — the test
//! double that counts requests and can corrupt or cut a reply, so the
//! fetch/resume/verify logic is tested without a registry.
//!
//! A source is untrusted: it may send fewer or more bytes than asked, or
//! wrong ones. Consumers count and verify; a source only promises not to
//! buffer more than it was asked for.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// A stream of a range's bytes; an `Err` item means the transfer broke off
/// (the consumer may resume from the bytes it has).
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

pub trait BlobSource: Send + Sync {
    /// The digest the bytes must hash to.
    fn digest(&self) -> &Digest;
    /// The size the descriptor declared.
    fn size(&self) -> u64;
    /// Names the source in logs and errors (`blob sha256:… from REF`).
    fn describe(&self) -> String;
    /// Starts streaming bytes `offset..offset+len`. Errors returned here are
    /// final (the implementation already retried what it could); errors in
    /// the stream are interruptions.
    fn read_range(&self, offset: u64, len: u64) -> BoxFuture<'_, Result<ByteStream>>;
}

/// Reads a range fully into `out` (cleared first; a reused buffer's pages
/// are already mapped), refusing more than `len` bytes and failing on
/// fewer. Meant for chunks (bounded by the chunk size).
pub async fn read_range_into(
    src: &dyn BlobSource,
    offset: u64,
    len: u64,
    out: &mut Vec<u8>,
) -> Result<()> {
    let want = usize::try_from(len)
        .map_err(|_| Error::Invalid(format!("range of {len} bytes is too large for memory")))?;
    out.clear();
    out.reserve_exact(want);
    let mut stream = src.read_range(offset, len).await?;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        if out.len() + piece.len() > want {
            return Err(Error::SizeMismatch {
                what: format!("bytes {offset}+{len} of {}", src.describe()),
                expected: len,
                actual: (out.len() + piece.len()) as u64,
            });
        }
        out.extend_from_slice(&piece);
    }
    if out.len() != want {
        return Err(Error::SizeMismatch {
            what: format!("bytes {offset}+{len} of {}", src.describe()),
            expected: len,
            actual: out.len() as u64,
        });
    }
    Ok(())
}

/// Where [`copy_source_into`] puts a blob's bytes, in order.
pub trait ByteSink: Send {
    fn put(&mut self, bytes: Bytes) -> impl std::future::Future<Output = Result<()>> + Send;
}

/// A synchronous writer as a sink (it writes on the calling task).
struct WriteSink<'a>(&'a mut (dyn Write + Send), String);

impl ByteSink for WriteSink<'_> {
    async fn put(&mut self, bytes: Bytes) -> Result<()> {
        self.0
            .write_all(&bytes)
            .map_err(|e| Error::io("write", &self.1, e))
    }
}

impl ByteSink for super::sink::FileSink {
    async fn put(&mut self, bytes: Bytes) -> Result<()> {
        self.write(bytes).await
    }
}

/// Streams a whole blob from `src` into `sink` (an [`super::Ingest`] or any
/// hashing writer), resuming from the bytes already written when the stream
/// breaks off, at most `retries` times. Never writes more than `src.size()`.
pub async fn copy_source(
    src: &dyn BlobSource,
    sink: &mut (dyn Write + Send),
    retries: u32,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<u64> {
    let mut sink = WriteSink(sink, src.describe());
    copy_source_into(src, &mut sink, retries, progress).await
}

/// [`copy_source`] into any [`ByteSink`] (a [`super::sink::FileSink`]
/// writes and hashes on threads of its own).
pub async fn copy_source_into(
    src: &dyn BlobSource,
    sink: &mut impl ByteSink,
    retries: u32,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<u64> {
    let size = src.size();
    let mut have = 0u64;
    let mut failures = 0u32;
    loop {
        let mut stream = src.read_range(have, size - have).await?;
        let mut broke = None;
        while let Some(piece) = stream.next().await {
            match piece {
                Ok(b) => {
                    let total = have.saturating_add(b.len() as u64);
                    if total > size {
                        return Err(Error::SizeMismatch {
                            what: src.describe(),
                            expected: size,
                            actual: total,
                        });
                    }
                    let n = b.len() as u64;
                    sink.put(b).await?;
                    have = total;
                    progress(n);
                }
                Err(e) => {
                    broke = Some(e);
                    break;
                }
            }
        }
        if have == size {
            return Ok(have);
        }
        failures += 1;
        let why = broke
            .map(|e| e.to_string())
            .unwrap_or_else(|| "the stream ended early".into());
        if failures > retries {
            return Err(Error::SizeMismatch {
                what: format!("{} ({why})", src.describe()),
                expected: size,
                actual: have,
            });
        }
        tracing::info!(
            "{} interrupted at byte {have}: {why}; resuming",
            src.describe()
        );
        tokio::time::sleep(std::time::Duration::from_millis(
            50 * 2u64.pow(failures.min(5)),
        ))
        .await;
    }
}

/// A complete blob in a local file (the store's own, or any verified file).
pub struct LocalBlob {
    digest: Digest,
    size: u64,
    file: Arc<std::fs::File>,
    shown: std::path::PathBuf,
}

impl LocalBlob {
    pub fn open(path: &std::path::Path, digest: Digest) -> Result<LocalBlob> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        Ok(LocalBlob {
            digest,
            size,
            file: Arc::new(file),
            shown: path.to_path_buf(),
        })
    }
}

impl BlobSource for LocalBlob {
    fn digest(&self) -> &Digest {
        &self.digest
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn describe(&self) -> String {
        format!("blob {} at {}", self.digest, self.shown.display())
    }
    fn read_range(&self, offset: u64, len: u64) -> BoxFuture<'_, Result<ByteStream>> {
        let (file, shown) = (self.file.clone(), self.shown.clone());
        Box::pin(async move {
            let end = offset
                .checked_add(len)
                .filter(|e| *e <= self.size)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "range {offset}+{len} is outside {}",
                        self.describe()
                    ))
                })?;
            const PIECE: u64 = 1 << 20;
            let stream = futures::stream::unfold(offset, move |pos| {
                let (file, shown) = (file.clone(), shown.clone());
                async move {
                    if pos >= end {
                        return None;
                    }
                    let n = PIECE.min(end - pos) as usize;
                    let read = tokio::task::spawn_blocking(move || {
                        use std::os::unix::fs::FileExt;
                        let mut buf = vec![0u8; n];
                        file.read_exact_at(&mut buf, pos)
                            .map(|_| buf)
                            .map_err(|e| Error::io("read", shown, e))
                    })
                    .await
                    .map_err(|e| Error::Invalid(format!("read task failed: {e}")))
                    .and_then(|r| r);
                    Some((read.map(Bytes::from), pos + n as u64))
                }
            });
            Ok(stream.boxed())
        })
    }
}

/// What a [`MemoryBlob`] does to its replies (for tests of hostile sources).
#[derive(Debug, Clone, Default)]
pub enum Fault {
    #[default]
    None,
    /// Flip a byte at this blob offset in every reply that covers it.
    Corrupt(u64),
    /// Break every stream off after this many bytes (then an error item).
    CutAfter(u64),
    /// Send the whole blob whatever range was asked (a server ignoring Range).
    IgnoreRange,
}

/// An in-memory source: the test double for registries. Counts requests
/// and bytes served so tests can assert "one fetch per chunk".
pub struct MemoryBlob {
    digest: Digest,
    data: Bytes,
    fault: std::sync::Mutex<Fault>,
    pub requests: AtomicU64,
    pub bytes_served: AtomicU64,
    /// Delay before each reply, so concurrent readers really overlap.
    pub delay: std::time::Duration,
}

impl MemoryBlob {
    pub fn new(data: impl Into<Bytes>) -> MemoryBlob {
        let data = data.into();
        MemoryBlob {
            digest: Digest::of(&data),
            data,
            fault: std::sync::Mutex::new(Fault::None),
            requests: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
            delay: std::time::Duration::ZERO,
        }
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn bytes_served(&self) -> u64 {
        self.bytes_served.load(Ordering::SeqCst)
    }
}

impl BlobSource for MemoryBlob {
    fn digest(&self) -> &Digest {
        &self.digest
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn describe(&self) -> String {
        format!("in-memory blob {}", self.digest)
    }
    fn read_range(&self, offset: u64, len: u64) -> BoxFuture<'_, Result<ByteStream>> {
        Box::pin(async move {
            self.requests.fetch_add(1, Ordering::SeqCst);
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let size = self.data.len() as u64;
            let end = offset
                .checked_add(len)
                .filter(|e| *e <= size)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "range {offset}+{len} is outside {}",
                        self.describe()
                    ))
                })?;
            let fault = self.fault.lock().unwrap().clone();
            let (start, end) = match fault {
                Fault::IgnoreRange => (0, size),
                _ => (offset, end),
            };
            let mut body = self.data.slice(start as usize..end as usize).to_vec();
            if let Fault::Corrupt(at) = fault
                && (start..end).contains(&at)
            {
                body[(at - start) as usize] ^= 0xff;
            }
            let mut items: Vec<Result<Bytes>> = Vec::new();
            let cut = match fault {
                Fault::CutAfter(n) => Some(n as usize),
                _ => None,
            };
            let sent = cut.map_or(body.len(), |n| n.min(body.len()));
            self.bytes_served.fetch_add(sent as u64, Ordering::SeqCst);
            // Several pieces, as a network stream would deliver them.
            for piece in body[..sent].chunks(64 << 10) {
                items.push(Ok(Bytes::copy_from_slice(piece)));
            }
            if cut.is_some_and(|n| n < body.len()) {
                items.push(Err(Error::Registry {
                    status: None,
                    registry: "memory".into(),
                    message: "connection reset (injected)".into(),
                }));
            }
            Ok(futures::stream::iter(items).boxed())
        })
    }
}
