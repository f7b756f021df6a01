//! The registry as a [`BlobSource`]: Range GETs of one blob. A server that
//! ignores `Range` (200 with the whole blob) is read only up to the end of
//! the wanted range — bytes before it are skipped as they stream by, and the
//! connection is dropped after it — so nothing is buffered beyond the range.
//! A 206 that starts elsewhere or runs longer than asked is an error.

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};

use crate::cas::{BlobSource, ByteStream};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::Reference;

use super::{Access, Attempt, RegistryClient, status_error};

/// One blob of one repository, read in ranges.
#[derive(Clone)]
pub struct RegistryBlob {
    client: RegistryClient,
    reference: Reference,
    digest: Digest,
    size: u64,
}

impl RegistryBlob {
    /// `size` is the descriptor's (from a verified manifest); the source never yields more.
    pub fn new(client: RegistryClient, reference: Reference, digest: Digest, size: u64) -> Self {
        RegistryBlob {
            client,
            reference,
            digest,
            size,
        }
    }
}

impl BlobSource for RegistryBlob {
    fn digest(&self) -> &Digest {
        &self.digest
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn describe(&self) -> String {
        format!("blob {} from {}", self.digest, self.reference)
    }

    fn read_range(&self, offset: u64, len: u64) -> BoxFuture<'_, Result<ByteStream>> {
        Box::pin(async move {
            let what = || format!("bytes {offset}+{len} of {}", self.describe());
            let end = offset
                .checked_add(len)
                .filter(|e| *e <= self.size)
                .ok_or_else(|| Error::Invalid(format!("{}: outside the blob", what())))?;
            if len == 0 {
                return Ok(futures::stream::empty().boxed());
            }
            let whole = offset == 0 && end == self.size;
            let r = &self.reference;
            let ep = self.client.server(r)?;
            let path = format!("/v2/{}/blobs/{}", r.repository, self.digest);
            let resp = self
                .client
                .retry("read blob range", || async {
                    let resp = self
                        .client
                        .send(r, &ep, &Access::Pull, &|c, base| {
                            let req = c.get(format!("{base}{path}"));
                            if whole {
                                req
                            } else {
                                req.header(RANGE, format!("bytes={offset}-{}", end - 1))
                            }
                        })
                        .await?;
                    match resp.status() {
                        StatusCode::PARTIAL_CONTENT => {
                            let start = resp
                                .headers()
                                .get(CONTENT_RANGE)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.strip_prefix("bytes "))
                                .and_then(|v| v.split('-').next())
                                .and_then(|v| v.trim().parse::<u64>().ok());
                            if start != Some(offset) {
                                return Err(Attempt::from(Error::Registry {
                                    status: None,
                                    registry: r.registry.clone(),
                                    message: format!(
                                        "{}: the server answered with Content-Range {:?}",
                                        what(),
                                        resp.headers().get(CONTENT_RANGE)
                                    ),
                                }));
                            }
                            Ok(resp)
                        }
                        StatusCode::OK => Ok(resp),
                        StatusCode::NOT_FOUND => Err(Attempt::from(Error::NotFound {
                            what: format!(
                                "blob {} in {}/{}",
                                self.digest, r.registry, r.repository
                            ),
                            hint: None,
                        })),
                        _ => Err(status_error(r, "read blob range", resp).await),
                    }
                })
                .await?;
            // 200 to a ranged request: the whole blob follows; skip to `offset`.
            let skip = if resp.status() == StatusCode::OK {
                offset
            } else {
                0
            };
            let registry = r.registry.clone();
            let state = (resp.bytes_stream(), skip, len, registry);
            let stream = futures::stream::unfold(
                state,
                |(mut body, mut skip, mut left, registry)| async move {
                    loop {
                        if left == 0 {
                            // Done: the rest of a whole-blob answer is dropped unread.
                            return None;
                        }
                        let piece: Bytes = match body.next().await {
                            None => return None,
                            Some(Err(e)) => {
                                let err = Error::Registry {
                                    status: None,
                                    registry: registry.clone(),
                                    message: format!("connection failed: {}", e.without_url()),
                                };
                                return Some((Err(err), (body, 0, 0, registry)));
                            }
                            Some(Ok(b)) => b,
                        };
                        let mut piece = piece;
                        if skip > 0 {
                            let n = skip.min(piece.len() as u64);
                            piece = piece.slice(n as usize..);
                            skip -= n;
                        }
                        if piece.is_empty() {
                            continue;
                        }
                        let n = left.min(piece.len() as u64);
                        left -= n;
                        // Anything past the range is cut off; consumers count bytes anyway.
                        return Some((Ok(piece.slice(..n as usize)), (body, skip, left, registry)));
                    }
                },
            );
            Ok(stream.boxed())
        })
    }
}
