//! Accepting gRPC clients that send a socket path as `:authority`.
//!
//! grpc-go before 1.34ish (containerd 1.6's clients, kubelet's CSI client of
//! that era) dials a unix socket given as a bare path and sends that path
//! (`/var/lib/kubelet/plugins/…/csi.sock`) as the HTTP/2 `:authority`. h2
//! parses the authority as a URI authority, fails on the `/`, and resets the
//! stream with PROTOCOL_ERROR before tonic sees the request. containerd
//! itself dials `unix://PATH` and sends `localhost`.
//!
//! So every connection on our sockets goes through this bridge. It looks at
//! the client's first header block: a valid authority (every modern client)
//! means the connection is copied through untouched. Otherwise the whole
//! client→server direction is re-framed: each header block is HPACK-decoded
//! with the client's table, a bad `:authority` becomes `localhost`, and the
//! block is encoded again with our own encoder — so the server's table
//! follows our encoder from the first block on, and nothing else changes.
//! loona-hpack (the maintained fork of the `hpack` crate, used by the loona
//! HTTP/2 server) does the HPACK coding; h2 keeps its own private.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a server may advertise; what we emit.
const MAX_FRAME: usize = 16_384;
/// Header blocks larger than this are refused (h2's default header list limit is 16 KiB).
const MAX_BLOCK: usize = 1 << 20;

/// A connection as tonic sees it: one end of a duplex pipe whose other end
/// the bridge task feeds from the socket.
pub struct Bridged {
    inner: DuplexStream,
}

impl tonic::transport::server::Connected for Bridged {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Bridged {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Bridged {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Wraps an accepted socket; the returned stream is what the server reads.
pub fn bridge<S>(socket: S) -> Bridged
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 << 10);
    tokio::spawn(async move {
        if let Err(e) = run(socket, theirs).await {
            tracing::debug!("grpc connection bridge: {e}");
        }
    });
    Bridged { inner: ours }
}

async fn run<S>(socket: S, server: DuplexStream) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut client_rx, mut client_tx) = tokio::io::split(socket);
    let (mut server_rx, mut server_tx) = tokio::io::split(server);
    let back = tokio::spawn(async move {
        let r = tokio::io::copy(&mut server_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
        r
    });
    let forward = async {
        let mut preface = [0u8; PREFACE.len()];
        client_rx.read_exact(&mut preface).await?;
        server_tx.write_all(&preface).await?;
        if preface != PREFACE {
            // Not HTTP/2 with prior knowledge: let the server refuse it.
            tokio::io::copy(&mut client_rx, &mut server_tx).await?;
            return Ok(());
        }
        // Decided on the first header block: `None` after it means pass-through.
        let mut rewriter: Option<Rewriter> = None;
        loop {
            let Some((head, payload)) = read_frame(&mut client_rx).await? else {
                break;
            };
            let (ty, flags) = (head[3], head[4]);
            if ty != HEADERS {
                // SETTINGS, DATA, WINDOW_UPDATE, …: unchanged.
                server_tx.write_all(&head).await?;
                server_tx.write_all(&payload).await?;
                continue;
            }
            let (priority, mut block) = split_headers(flags, &payload)?;
            let mut end = flags & END_HEADERS != 0;
            let mut conts: Vec<([u8; 9], Vec<u8>)> = Vec::new();
            while !end {
                let Some((h, p)) = read_frame(&mut client_rx).await? else {
                    return Err(bad("connection ended inside a header block"));
                };
                if h[3] != CONTINUATION {
                    return Err(bad("a header block not followed by CONTINUATION"));
                }
                block.extend_from_slice(&p);
                if block.len() > MAX_BLOCK {
                    return Err(bad("header block too large"));
                }
                end = h[4] & END_HEADERS != 0;
                conts.push((h, p));
            }
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            if rewriter.is_none() {
                let mut probe = Rewriter::new();
                let needs = probe.needs_rewrite(&block)?;
                if needs {
                    tracing::debug!(
                        "client sent a socket path as :authority; rewriting this connection's headers"
                    );
                    rewriter = Some(Rewriter::new());
                } else {
                    server_tx.write_all(&head).await?;
                    server_tx.write_all(&payload).await?;
                    for (h, p) in conts {
                        server_tx.write_all(&h).await?;
                        server_tx.write_all(&p).await?;
                    }
                    tokio::io::copy(&mut client_rx, &mut server_tx).await?;
                    break;
                }
            }
            let r = rewriter.as_mut().expect("rewriting");
            let out = r.rewrite(&block)?;
            write_headers(&mut server_tx, stream, flags & END_STREAM, priority, &out).await?;
        }
        let _ = server_tx.shutdown().await;
        Ok::<_, io::Error>(())
    };
    let r = forward.await;
    let _ = back.await;
    r
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<([u8; 9], Vec<u8>)>> {
    let mut head = [0u8; 9];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    // 2^24-1 is the protocol's own bound on a frame.
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((head, payload)))
}

/// A HEADERS payload without its padding: (priority bytes, block fragment).
fn split_headers(flags: u8, payload: &[u8]) -> io::Result<(Option<[u8; 5]>, Vec<u8>)> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, rest) = p.split_first().ok_or_else(|| bad("empty padded HEADERS"))?;
        pad = n as usize;
        p = rest;
    }
    let priority = if flags & PRIORITY != 0 {
        if p.len() < 5 {
            return Err(bad("short HEADERS priority"));
        }
        let mut b = [0u8; 5];
        b.copy_from_slice(&p[..5]);
        p = &p[5..];
        Some(b)
    } else {
        None
    };
    if pad > p.len() {
        return Err(bad("HEADERS padding longer than the frame"));
    }
    Ok((priority, p[..p.len() - pad].to_vec()))
}

/// Emits a header block as HEADERS (+ CONTINUATION) frames of at most MAX_FRAME bytes.
async fn write_headers<W: AsyncWrite + Unpin>(
    w: &mut W,
    stream: u32,
    end_stream: u8,
    priority: Option<[u8; 5]>,
    block: &[u8],
) -> io::Result<()> {
    let prio_len = if priority.is_some() { 5 } else { 0 };
    let first_room = MAX_FRAME - prio_len;
    let (first, mut rest) = block.split_at(block.len().min(first_room));
    let mut flags = end_stream;
    if priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    let mut payload = Vec::with_capacity(prio_len + first.len());
    if let Some(p) = priority {
        payload.extend_from_slice(&p);
    }
    payload.extend_from_slice(first);
    w.write_all(&frame_head(payload.len(), HEADERS, flags, stream))
        .await?;
    w.write_all(&payload).await?;
    while !rest.is_empty() {
        let (chunk, more) = rest.split_at(rest.len().min(MAX_FRAME));
        let f = if more.is_empty() { END_HEADERS } else { 0 };
        w.write_all(&frame_head(chunk.len(), CONTINUATION, f, stream))
            .await?;
        w.write_all(chunk).await?;
        rest = more;
    }
    Ok(())
}

fn frame_head(len: usize, ty: u8, flags: u8, stream: u32) -> [u8; 9] {
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    [l[1], l[2], l[3], ty, flags, s[0], s[1], s[2], s[3]]
}

/// Is this a usable `:authority` (what h2 accepts)?
fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// One direction's HPACK state: the client's table (decoder) and ours towards the server (encoder).
pub struct Rewriter {
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
}

impl Rewriter {
    pub fn new() -> Rewriter {
        Rewriter {
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
        }
    }

    fn decode(&mut self, block: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.decoder
            .decode(block)
            .map_err(|e| bad(&format!("HPACK: {e:?}")))
    }

    /// Decodes the first block (with a throw-away table) to see its authority.
    fn needs_rewrite(&mut self, block: &[u8]) -> io::Result<bool> {
        let headers = self.decode(block)?;
        Ok(headers
            .iter()
            .any(|(k, v)| k == b":authority" && !valid_authority(v)))
    }

    /// The block with a bad `:authority` replaced by `localhost`, re-encoded.
    pub fn rewrite(&mut self, block: &[u8]) -> io::Result<Vec<u8>> {
        let headers = self.decode(block)?;
        let fixed: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .map(|(k, v)| {
                if k == b":authority" && !valid_authority(&v) {
                    (k, b"localhost".to_vec())
                } else {
                    (k, v)
                }
            })
            .collect();
        Ok(self
            .encoder
            .encode(fixed.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(authority: &str) -> Vec<u8> {
        let mut e = loona_hpack::Encoder::new();
        let h: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/csi.v1.Identity/Probe"),
            (b":authority", authority.as_bytes()),
            (b"content-type", b"application/grpc"),
        ];
        e.encode(h)
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_and_nothing_else_changes() {
        let mut r = Rewriter::new();
        assert!(
            r.needs_rewrite(&block("/var/lib/kubelet/plugins/x/csi.sock"))
                .unwrap()
        );
        let mut r2 = Rewriter::new();
        assert!(!r2.needs_rewrite(&block("localhost")).unwrap());
        let mut rw = Rewriter::new();
        let out = rw.rewrite(&block("/run/x.sock")).unwrap();
        let decoded = loona_hpack::Decoder::new().decode(&out).unwrap();
        let get = |k: &[u8]| decoded.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get(b":authority").as_deref(), Some(&b"localhost"[..]));
        assert_eq!(
            get(b":path").as_deref(),
            Some(&b"/csi.v1.Identity/Probe"[..])
        );
        assert_eq!(decoded.len(), 5);
    }

    #[test]
    fn headers_payloads_lose_padding_and_keep_priority() {
        let mut p = vec![3u8];
        p.extend_from_slice(&[0, 0, 0, 1, 16]);
        p.extend_from_slice(b"abc");
        p.extend_from_slice(&[0, 0, 0]);
        let (prio, blk) = split_headers(PADDED | PRIORITY, &p).unwrap();
        assert_eq!(prio, Some([0, 0, 0, 1, 16]));
        assert_eq!(blk, b"abc");
        assert!(split_headers(PADDED, &[9, 1]).is_err());
    }
}
