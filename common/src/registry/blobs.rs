//! Blob transfer: HEAD-skip, cross-repo mount, monolithic upload for small
//! blobs, resumable chunked upload (after a dropped connection the session's
//! `Range` says where to continue), and Range-resumed, verified downloads.

use std::io::SeekFrom;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::reference::Reference;

use super::{
    Access, Attempt, Endpoint, Progress, PushOutcome, RegistryClient, status_error, transient,
};

const OCTET: &str = "application/octet-stream";

fn absolute(ep: &Endpoint, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        loc.to_string()
    } else {
        format!("{}{loc}", ep.base)
    }
}

fn with_digest(loc: &str, d: &Digest) -> String {
    format!(
        "{loc}{}digest={d}",
        if loc.contains('?') { '&' } else { '?' }
    )
}

fn location(
    r: &Reference,
    ep: &Endpoint,
    resp: &reqwest::Response,
) -> std::result::Result<String, Attempt> {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| absolute(ep, l))
        .ok_or_else(|| {
            Attempt::from(Error::Registry {
                status: None,
                registry: r.registry.clone(),
                message: "upload response has no Location header".into(),
            })
        })
}

/// A body streaming `len` bytes of `path` from `offset`, counting what it sends into `sent`.
async fn file_body(
    path: &Path,
    offset: u64,
    len: u64,
    sent: &Arc<AtomicU64>,
) -> Result<reqwest::Body> {
    let mut f = tokio::fs::File::open(path).await.ctx("open", path)?;
    f.seek(SeekFrom::Start(offset)).await.ctx("seek", path)?;
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 1 << 20);
    let sent = sent.clone();
    Ok(reqwest::Body::wrap_stream(stream.map(move |chunk| {
        if let Ok(c) = &chunk {
            sent.fetch_add(c.len() as u64, Ordering::Relaxed);
        }
        chunk
    })))
}

/// Awaits `fut` while forwarding the growth of `sent` to `progress` (the body
/// stream lives in the HTTP connection task, so it cannot hold `progress`).
async fn tracking<T>(
    fut: impl std::future::Future<Output = T>,
    sent: &AtomicU64,
    reported: &mut u64,
    progress: &dyn Progress,
) -> T {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            out = &mut fut => {
                let now = sent.load(Ordering::Relaxed);
                progress.advance(now - *reported);
                *reported = now;
                return out;
            }
            _ = tick.tick() => {
                let now = sent.load(Ordering::Relaxed);
                progress.advance(now - *reported);
                *reported = now;
            }
        }
    }
}

impl RegistryClient {
    pub(super) fn server(&self, r: &Reference) -> Result<Endpoint> {
        Ok(self
            .endpoints(&r.registry)?
            .iter()
            .find(|e| !e.mirror)
            .expect("server endpoint")
            .clone())
    }

    /// HEAD: the blob's size when the repository has it.
    pub async fn blob_exists(&self, r: &Reference, d: &Digest) -> Result<Option<u64>> {
        let ep = self.server(r)?;
        let path = format!("/v2/{}/blobs/{d}", r.repository);
        self.retry("check blob", || async {
            let resp = self
                .send(r, &ep, &Access::Pull, &|c, base| {
                    c.head(format!("{base}{path}"))
                })
                .await?;
            match resp.status() {
                s if s.is_success() => Ok(Some(
                    resp.headers()
                        .get(CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                )),
                StatusCode::NOT_FOUND => Ok(None),
                _ => Err(status_error(r, "check blob", resp).await),
            }
        })
        .await
    }

    /// Asks the registry to link `d` from `from_repository`; false when it would rather take an upload.
    pub async fn mount_blob(
        &self,
        r: &Reference,
        d: &Digest,
        from_repository: &str,
    ) -> Result<bool> {
        let ep = self.server(r)?;
        let path = format!(
            "/v2/{}/blobs/uploads/?mount={d}&from={from_repository}",
            r.repository
        );
        let access = Access::PushMountFrom(from_repository.to_string());
        self.retry("mount blob", || async {
            let resp = self
                .send(r, &ep, &access, &|c, base| {
                    c.post(format!("{base}{path}")).header(CONTENT_LENGTH, 0)
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => Ok(true),
                StatusCode::ACCEPTED => {
                    // The registry opened an upload session instead; cancel it.
                    if let Ok(loc) = location(r, &ep, &resp) {
                        let _ = self
                            .send(r, &ep, &Access::Push, &|c, _| c.delete(loc.clone()))
                            .await;
                    }
                    Ok(false)
                }
                _ => Err(status_error(r, "mount blob", resp).await),
            }
        })
        .await
    }

    async fn start_upload(
        &self,
        r: &Reference,
        ep: &Endpoint,
    ) -> std::result::Result<String, Attempt> {
        let path = format!("/v2/{}/blobs/uploads/", r.repository);
        let resp = self
            .send(r, ep, &Access::Push, &|c, base| {
                c.post(format!("{base}{path}")).header(CONTENT_LENGTH, 0)
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(r, "start blob upload", resp).await);
        }
        location(r, ep, &resp)
    }

    /// Pushes one blob from a file: skip if present, mount if known elsewhere, else upload.
    pub async fn push_blob_file(
        &self,
        r: &Reference,
        d: &Digest,
        size: u64,
        path: &Path,
        mount_from: &[String],
        progress: &dyn Progress,
    ) -> Result<PushOutcome> {
        if self.blob_exists(r, d).await?.is_some() {
            progress.advance(size);
            return Ok(PushOutcome::Exists);
        }
        for from in mount_from {
            match self.mount_blob(r, d, from).await {
                Ok(true) => {
                    progress.advance(size);
                    return Ok(PushOutcome::Mounted);
                }
                Ok(false) => {}
                Err(e) => tracing::debug!("mount of {d} from {from} failed: {e}"),
            }
        }
        let ep = self.server(r)?;
        let sent = Arc::new(AtomicU64::new(0));
        let reported = std::sync::Mutex::new(0u64);
        if size <= self.options().chunk_size {
            self.retry(&format!("upload {d}"), || async {
                let loc = self.start_upload(r, &ep).await?;
                let url = with_digest(&loc, d);
                let body = file_body(path, 0, size, &sent).await?;
                let body = std::sync::Mutex::new(Some(body));
                let mut rep = *reported.lock().unwrap();
                let resp = tracking(
                    self.send(r, &ep, &Access::Push, &|c, _| {
                        let b = body
                            .lock()
                            .unwrap()
                            .take()
                            .unwrap_or_else(|| reqwest::Body::from(Vec::new()));
                        c.put(url.clone())
                            .header(CONTENT_TYPE, OCTET)
                            .header(CONTENT_LENGTH, size)
                            .body(b)
                    }),
                    &sent,
                    &mut rep,
                    progress,
                )
                .await;
                *reported.lock().unwrap() = rep;
                let resp = resp?;
                if resp.status() != StatusCode::CREATED {
                    return Err(status_error(r, &format!("upload {d}"), resp).await);
                }
                Ok(())
            })
            .await?;
        } else {
            self.chunked_upload(r, &ep, d, size, path, progress, &sent)
                .await?;
        }
        Ok(PushOutcome::Uploaded {
            bytes_sent: sent.load(Ordering::Relaxed),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn chunked_upload(
        &self,
        r: &Reference,
        ep: &Endpoint,
        d: &Digest,
        size: u64,
        path: &Path,
        progress: &dyn Progress,
        sent: &Arc<AtomicU64>,
    ) -> Result<()> {
        let mut reported = 0u64;
        let chunk = self.options().chunk_size.max(1);
        let mut loc = self
            .retry("start blob upload", || self.start_upload(r, ep))
            .await?;
        let mut offset = 0u64;
        let mut failures = 0u32;
        while offset < size {
            let len = chunk.min(size - offset);
            let body = file_body(path, offset, len, sent).await?;
            let body = std::sync::Mutex::new(Some(body));
            let url = loc.clone();
            let res = tracking(
                self.send(r, ep, &Access::Push, &|c, _| {
                    let b = body
                        .lock()
                        .unwrap()
                        .take()
                        .unwrap_or_else(|| reqwest::Body::from(Vec::new()));
                    c.patch(url.clone())
                        .header(CONTENT_TYPE, OCTET)
                        .header(CONTENT_LENGTH, len)
                        .header("Content-Range", format!("{offset}-{}", offset + len - 1))
                        .body(b)
                }),
                sent,
                &mut reported,
                progress,
            )
            .await;
            let outcome = match res {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    loc = location(r, ep, &resp).map_err(|a| a.err)?;
                    offset += len;
                    failures = 0;
                    continue;
                }
                Ok(resp) => status_error(r, "upload chunk", resp).await,
                Err(a) => a,
            };
            if !outcome.retry || failures >= self.options().retries {
                return Err(outcome.err);
            }
            failures += 1;
            tracing::warn!(
                "upload of {d} interrupted at byte {offset}: {} — resuming",
                outcome.err
            );
            tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(failures.min(5)))).await;
            // Ask the session how much it has; continue from there.
            match self.upload_status(r, ep, &loc).await {
                Ok((next, new_loc)) => {
                    offset = next;
                    loc = new_loc;
                }
                Err(e) => {
                    tracing::warn!("upload session for {d} lost ({e}); starting a new one");
                    loc = self
                        .retry("start blob upload", || self.start_upload(r, ep))
                        .await?;
                    offset = 0;
                }
            }
        }
        let url = with_digest(&loc, d);
        self.retry("finish blob upload", || async {
            let resp = self
                .send(r, ep, &Access::Push, &|c, _| {
                    c.put(url.clone())
                        .header(CONTENT_TYPE, OCTET)
                        .header(CONTENT_LENGTH, 0)
                })
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(status_error(r, "finish blob upload", resp).await);
            }
            Ok(())
        })
        .await
    }

    /// GET on an upload session: the next offset (from `Range: 0-N`) and its location.
    async fn upload_status(
        &self,
        r: &Reference,
        ep: &Endpoint,
        loc: &str,
    ) -> Result<(u64, String)> {
        let resp = self
            .send(r, ep, &Access::Push, &|c, _| c.get(loc.to_string()))
            .await
            .map_err(|a| a.err)?;
        if resp.status() != StatusCode::NO_CONTENT {
            return Err(status_error(r, "query upload session", resp).await.err);
        }
        let next = resp
            .headers()
            .get(RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('-').next())
            .and_then(|n| n.parse::<u64>().ok())
            .and_then(|n| n.checked_add(1))
            .unwrap_or(0);
        let new_loc = location(r, ep, &resp).unwrap_or_else(|_| loc.to_string());
        Ok((next, new_loc))
    }

    /// Pushes a small in-memory blob (config); returns its digest.
    pub async fn push_blob_bytes(&self, r: &Reference, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        if self.blob_exists(r, &d).await?.is_some() {
            return Ok(d);
        }
        let ep = self.server(r)?;
        let body = bytes.to_vec();
        self.retry("upload blob", || async {
            let loc = self.start_upload(r, &ep).await?;
            let url = with_digest(&loc, &d);
            let resp = self
                .send(r, &ep, &Access::Push, &|c, _| {
                    c.put(url.clone())
                        .header(CONTENT_TYPE, OCTET)
                        .body(body.clone())
                })
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(status_error(r, "upload blob", resp).await);
            }
            Ok(())
        })
        .await?;
        Ok(d)
    }

    /// Downloads a blob into `partial` (an open, exclusively locked file the
    /// caller created without following symlinks; `shown` names it in
    /// errors), resuming what is already there with `Range`, and verifies
    /// size and digest over exactly the file's bytes (the prefix is re-read,
    /// the rest hashed as written through this handle). On a mismatch the
    /// file is truncated so no later resume builds on bad bytes, and
    /// `DigestMismatch` names the layer.
    pub async fn pull_blob_to_file(
        &self,
        r: &Reference,
        d: &Digest,
        size: u64,
        partial: &std::fs::File,
        shown: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut hasher = Hasher::new();
        let mut have = partial.metadata().ctx("stat", shown)?.len();
        if have > size {
            partial.set_len(0).ctx("truncate", shown)?;
            have = 0;
        }
        if have > 0 {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0u64;
            while off < have {
                let want = buf.len().min((have - off) as usize);
                let n = partial.read_at(&mut buf[..want], off).ctx("read", shown)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                off += n as u64;
            }
            have = off;
            progress.advance(have);
            tracing::info!("resuming {d} at byte {have} of {size}");
        }
        partial.set_len(have).ctx("truncate", shown)?;
        let mut file = partial.try_clone().ctx("open", shown)?;
        std::io::Seek::seek(&mut file, SeekFrom::Start(have)).ctx("seek", shown)?;
        // Writes and the hash run on the sink's thread; this task only receives.
        let mut sink = crate::cas::sink::FileSink::start(file, hasher, shown.to_path_buf())?;
        let eps = self.endpoints(&r.registry)?;
        let pull_eps: Vec<&Endpoint> = eps.iter().filter(|e| e.pull).collect();
        let mut ep_index = 0;
        let mut failures = 0u32;
        let path = format!("/v2/{}/blobs/{d}", r.repository);
        while have < size || size == 0 {
            let ep = pull_eps[ep_index];
            let start = have;
            let res: std::result::Result<(), Attempt> = async {
                let resp = self
                    .send(r, ep, &Access::Pull, &|c, base| {
                        let req = c.get(format!("{base}{path}"));
                        if start > 0 {
                            req.header(RANGE, format!("bytes={start}-"))
                        } else {
                            req
                        }
                    })
                    .await?;
                match resp.status() {
                    StatusCode::PARTIAL_CONTENT => {}
                    StatusCode::OK => {
                        if start > 0 {
                            // The server ignored Range: start over.
                            sink.restart().await.map_err(Attempt::from)?;
                            have = 0;
                        }
                    }
                    StatusCode::NOT_FOUND => {
                        return Err(Attempt {
                            err: Error::NotFound {
                                what: format!("blob {d} in {}/{}", r.registry, r.repository),
                                hint: None,
                            },
                            retry: false,
                        });
                    }
                    _ => return Err(status_error(r, &format!("download {d}"), resp).await),
                }
                let mut stream = resp.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| transient(&r.registry, e))?;
                    let total = have.saturating_add(chunk.len() as u64);
                    if total > size {
                        return Err(Attempt::from(Error::SizeMismatch {
                            what: format!("layer {d} from {r}"),
                            expected: size,
                            actual: total,
                        }));
                    }
                    let n = chunk.len() as u64;
                    sink.write(chunk).await.map_err(Attempt::from)?;
                    have += n;
                    progress.advance(n);
                }
                Ok(())
            }
            .await;
            match res {
                Ok(()) if size == 0 || have == size => break,
                Ok(()) => {
                    // Stream ended early: treat like a dropped connection.
                    failures += 1;
                    if failures > self.options().retries {
                        // Every queued byte on disk before the caller looks at the file.
                        let _ = sink.finish().await;
                        return Err(Error::SizeMismatch {
                            what: format!("layer {d} from {r}"),
                            expected: size,
                            actual: have,
                        });
                    }
                }
                Err(a) if ep.mirror && ep_index + 1 < pull_eps.len() => {
                    tracing::info!(
                        "mirror {} failed for {d}: {}; trying the next endpoint",
                        ep.base,
                        a.err
                    );
                    ep_index += 1;
                }
                Err(a) if a.retry && failures < self.options().retries => {
                    failures += 1;
                    tracing::warn!(
                        "download of {d} interrupted at byte {have}: {} — resuming",
                        a.err
                    );
                    tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(failures.min(5))))
                        .await;
                }
                Err(a) => {
                    let _ = sink.finish().await;
                    if let Error::SizeMismatch { .. } = a.err {
                        let _ = partial.set_len(0);
                    }
                    return Err(a.err);
                }
            }
        }
        let actual = sink.finish().await?.finish();
        if &actual != d {
            let _ = partial.set_len(0);
            return Err(Error::DigestMismatch {
                what: format!("layer {d} from {r}"),
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// A byte range of a blob (lazy chunk fetch); not verified here — callers verify chunk digests.
    /// Never holds more than `len` bytes: a 206 longer than asked for is an
    /// error, and a server that ignores `Range` (200, whole blob) is read
    /// only up to `offset + len`, then the connection is dropped.
    pub async fn pull_blob_range(
        &self,
        r: &Reference,
        d: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let what = || format!("bytes {offset}+{len} of blob {d} from {r}");
        let last = offset
            .checked_add(len - 1)
            .ok_or_else(|| Error::Invalid(format!("{}: the range overflows", what())))?;
        let want = usize::try_from(len)
            .map_err(|_| Error::Invalid(format!("{}: too large for memory", what())))?;
        let ep = self.server(r)?;
        let path = format!("/v2/{}/blobs/{d}", r.repository);
        self.retry("read blob range", || async {
            let resp = self
                .send(r, &ep, &Access::Pull, &|c, base| {
                    c.get(format!("{base}{path}"))
                        .header(RANGE, format!("bytes={offset}-{last}"))
                })
                .await?;
            let mut skip = match resp.status() {
                StatusCode::PARTIAL_CONTENT => {
                    // The range we got must start where we asked.
                    let start = resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    if start.is_some_and(|s| s != offset) {
                        return Err(Attempt::from(Error::Registry {
                            status: None,
                            registry: r.registry.clone(),
                            message: format!(
                                "{}: the server sent a range starting at {}",
                                what(),
                                start.unwrap_or_default()
                            ),
                        }));
                    }
                    0
                }
                StatusCode::OK => offset,
                _ => return Err(status_error(r, "read blob range", resp).await),
            };
            let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
            let mut out = Vec::with_capacity(want.min(8 << 20));
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| transient(&r.registry, e))?;
                let mut data = &chunk[..];
                if skip > 0 {
                    let n = skip.min(data.len() as u64);
                    data = &data[n as usize..];
                    skip -= n;
                }
                let room = want - out.len();
                if data.len() > room && partial {
                    return Err(Attempt::from(Error::SizeMismatch {
                        what: what(),
                        expected: len,
                        actual: (out.len() as u64).saturating_add(data.len() as u64),
                    }));
                }
                out.extend_from_slice(&data[..data.len().min(room)]);
                if out.len() == want && !partial {
                    // Whole-blob answer: we have our bytes; drop the rest unread.
                    break;
                }
            }
            if out.len() != want {
                // A short body: the connection dropped or the blob is smaller.
                return Err(Attempt {
                    err: Error::SizeMismatch {
                        what: what(),
                        expected: len,
                        actual: out.len() as u64,
                    },
                    retry: true,
                });
            }
            Ok(out)
        })
        .await
    }

    /// A config blob, in memory: refused before any request when the
    /// descriptor's size is above [`TransportOptions::max_config_size`], read
    /// with that cap (a server may send more than the descriptor says), and
    /// verified against its digest.
    ///
    /// [`TransportOptions::max_config_size`]: super::TransportOptions::max_config_size
    pub async fn pull_config(&self, r: &Reference, d: &Digest, size: u64) -> Result<Vec<u8>> {
        let limit = self.options().max_config_size;
        self.pull_small_blob(r, d, size, limit, &format!("config {d} of {r}"))
            .await
    }

    /// A small blob (config, chunk index) in memory: refused before any
    /// request when the descriptor's `size` is above `limit`, read with a
    /// cap of `size` (a server may send more than the descriptor says), and
    /// verified against its digest. `what` names it in errors.
    pub async fn pull_small_blob(
        &self,
        r: &Reference,
        d: &Digest,
        size: u64,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        let what = what.to_string();
        if size > limit {
            return Err(Error::TooLarge {
                what,
                limit,
                declared: Some(size),
            });
        }
        let eps = self.endpoints(&r.registry)?;
        let path = format!("/v2/{}/blobs/{d}", r.repository);
        let mut last_err = None;
        for ep in eps.iter().filter(|e| e.pull) {
            let res = self
                .retry(&format!("fetch {what}"), || async {
                    let resp = self
                        .send(r, ep, &Access::Pull, &|c, base| {
                            c.get(format!("{base}{path}"))
                        })
                        .await?;
                    if !resp.status().is_success() {
                        return Err(status_error(r, &format!("fetch {what}"), resp).await);
                    }
                    super::read_capped(&r.registry, resp, size, &what).await
                })
                .await;
            match res {
                Ok(bytes) => {
                    let actual = Digest::of(&bytes);
                    if &actual != d {
                        return Err(Error::DigestMismatch {
                            what,
                            expected: d.to_string(),
                            actual: actual.to_string(),
                        });
                    }
                    return Ok(bytes);
                }
                Err(e) if ep.mirror => {
                    tracing::info!("mirror {} failed for {what}: {e}; trying the next", ep.base);
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or(Error::NotFound { what, hint: None }))
    }

    /// Streams a blob through `sink` without storing it: every byte of the
    /// body goes to `sink` exactly once, in order, while the whole blob is
    /// hashed and counted. More bytes than `size` stop the download; at the
    /// end the size and digest must match or the result is an error (the
    /// caller must then discard whatever it built from the bytes). A dropped
    /// connection resumes with `Range`; a server that then ignores `Range`
    /// has the bytes already seen skipped, so `sink` never sees one twice.
    pub async fn stream_blob(
        &self,
        r: &Reference,
        d: &Digest,
        size: u64,
        sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
        progress: &dyn Progress,
    ) -> Result<()> {
        let ep = self.server(r)?;
        let path = format!("/v2/{}/blobs/{d}", r.repository);
        let mut hasher = Hasher::new();
        let mut have = 0u64;
        let mut failures = 0u32;
        let what = format!("blob {d} from {r}");
        loop {
            let start = have;
            let res: std::result::Result<(), Attempt> = async {
                let resp = self
                    .send(r, &ep, &Access::Pull, &|c, base| {
                        let req = c.get(format!("{base}{path}"));
                        if start > 0 {
                            req.header(RANGE, format!("bytes={start}-"))
                        } else {
                            req
                        }
                    })
                    .await?;
                let mut skip = match resp.status() {
                    StatusCode::PARTIAL_CONTENT if start > 0 => 0,
                    StatusCode::OK => start,
                    StatusCode::NOT_FOUND => {
                        return Err(Attempt::from(Error::NotFound {
                            what: format!("blob {d} in {}/{}", r.registry, r.repository),
                            hint: None,
                        }));
                    }
                    _ => return Err(status_error(r, &format!("download {d}"), resp).await),
                };
                let mut stream = resp.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| transient(&r.registry, e))?;
                    let mut data = &chunk[..];
                    if skip > 0 {
                        let n = skip.min(data.len() as u64);
                        data = &data[n as usize..];
                        skip -= n;
                    }
                    let total = have.saturating_add(data.len() as u64);
                    if total > size {
                        return Err(Attempt::from(Error::SizeMismatch {
                            what: what.clone(),
                            expected: size,
                            actual: total,
                        }));
                    }
                    hasher.update(data);
                    sink(data)?;
                    have = total;
                    progress.advance(data.len() as u64);
                }
                Ok(())
            }
            .await;
            match res {
                Ok(()) if have == size => break,
                Ok(()) => {
                    failures += 1;
                    if failures > self.options().retries {
                        return Err(Error::SizeMismatch {
                            what,
                            expected: size,
                            actual: have,
                        });
                    }
                }
                Err(a) if a.retry && failures < self.options().retries => {
                    failures += 1;
                    tracing::warn!(
                        "download of {d} interrupted at byte {have}: {} — resuming",
                        a.err
                    );
                    tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(failures.min(5))))
                        .await;
                }
                Err(a) => return Err(a.err),
            }
        }
        let actual = hasher.finish();
        if &actual != d {
            return Err(Error::DigestMismatch {
                what,
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }
}
