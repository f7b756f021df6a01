//! The containerd gRPC plumbing the verbs share: namespaced (and leased)
//! requests, connecting with retries, content reads and writes, chain IDs.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use containerd_client::services::v1::{ReadContentRequest, WriteAction, WriteContentRequest};
use modelpack_common::Digest;
use tonic::Request;
use tonic::transport::Channel;

pub(super) fn req<T>(msg: T, ns: &str, lease: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "containerd-namespace",
        ns.parse().expect("namespace is ASCII"),
    );
    if let Some(l) = lease {
        r.metadata_mut()
            .insert("containerd-lease", l.parse().expect("lease id is ASCII"));
    }
    r
}

/// Connects, retrying briefly: containerd reconnects to a restarted proxy plugin with backoff.
pub async fn connect(address: &Path) -> Result<Channel> {
    let mut last = None;
    for _ in 0..20 {
        match containerd_client::connect(address).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(anyhow!(
        "cannot connect to containerd at {}: {}",
        address.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// OCI chain IDs of a layer stack from its diffIds.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<String> {
    modelpack_common::labels::chain_ids(diff_ids)
        .iter()
        .map(|d| d.to_string())
        .collect()
}

pub(super) async fn write_content(
    ch: &Channel,
    ns: &str,
    lease: &str,
    bytes: &[u8],
    labels: HashMap<String, String>,
) -> Result<()> {
    let mut content =
        containerd_client::services::v1::content_client::ContentClient::new(ch.clone());
    let digest = Digest::of(bytes).to_string();
    let r#ref = format!("modelpack-{}", &digest[7..23]);
    let total = bytes.len() as i64;
    let msgs = vec![
        WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: r#ref.clone(),
            total,
            expected: digest.clone(),
            offset: 0,
            data: bytes.to_vec(),
            labels: HashMap::new(),
        },
        WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref,
            total,
            expected: digest.clone(),
            offset: total,
            data: vec![],
            labels,
        },
    ];
    match content
        .write(req(futures::stream::iter(msgs), ns, Some(lease)))
        .await
    {
        Ok(resp) => {
            let mut s = resp.into_inner();
            while let Some(m) = futures::StreamExt::next(&mut s).await {
                if let Err(e) = m
                    && e.code() != tonic::Code::AlreadyExists
                {
                    return Err(anyhow!(
                        "containerd content write of {digest}: {}",
                        e.message()
                    ));
                }
            }
            Ok(())
        }
        Err(e) if e.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow!(
            "containerd content write of {digest}: {}",
            e.message()
        )),
    }
}

pub(super) async fn read_content(ch: &Channel, ns: &str, digest: &str) -> Result<Vec<u8>> {
    let mut content =
        containerd_client::services::v1::content_client::ContentClient::new(ch.clone());
    let mut s = content
        .read(req(
            ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            },
            ns,
            None,
        ))
        .await
        .with_context(|| format!("containerd has no content {digest}"))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = futures::StreamExt::next(&mut s).await {
        out.extend(m?.data);
    }
    Ok(out)
}

pub(super) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a.to_string());
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()).to_string());
    }
}
