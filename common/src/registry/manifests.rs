//! Manifests and tags.

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::media;
use crate::reference::Reference;

use super::{Access, Attempt, RegistryClient, status_error};

/// A manifest as received: exact bytes, their digest and the served media type.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Manifests are small; anything larger than this is refused rather than
/// buffered (distribution itself refuses to store manifests above 4 MiB).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// A tag list is read whole (no pagination); this bounds it.
pub const MAX_TAG_LIST: u64 = 8 << 20;

impl RegistryClient {
    /// Fetches a manifest by tag or digest; a digest reference is verified against the bytes.
    pub async fn get_manifest(&self, r: &Reference) -> Result<FetchedManifest> {
        let eps = self.endpoints(&r.registry)?;
        let path = format!("/v2/{}/manifests/{}", r.repository, r.target());
        let mut last_err = None;
        for ep in eps.iter().filter(|e| e.pull) {
            let res = self
                .retry(&format!("fetch manifest {r}"), || async {
                    let resp = self
                        .send(r, ep, &Access::Pull, &|c, base| {
                            c.get(format!("{base}{path}"))
                                .header(ACCEPT, ACCEPT_MANIFESTS)
                        })
                        .await?;
                    match resp.status() {
                        s if s.is_success() => {
                            let mt = resp
                                .headers()
                                .get(CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
                            let what = format!("manifest of {r}");
                            let bytes =
                                super::read_capped(&r.registry, resp, MAX_MANIFEST, &what).await?;
                            Ok(Some((bytes, mt)))
                        }
                        StatusCode::NOT_FOUND => Ok(None),
                        _ => Err(status_error(r, "fetch manifest", resp).await),
                    }
                })
                .await;
            match res {
                Ok(Some((bytes, mt))) => {
                    let digest = Digest::of(&bytes);
                    if let Some(want) = &r.digest
                        && want != &digest
                    {
                        return Err(Error::DigestMismatch {
                            what: format!("manifest {r}"),
                            expected: want.to_string(),
                            actual: digest.to_string(),
                        });
                    }
                    let media_type = mt
                        .filter(|m| !m.is_empty() && m != "application/json")
                        .or_else(|| crate::manifest::sniff_media_type(&bytes))
                        .unwrap_or_else(|| media::OCI_MANIFEST.into());
                    return Ok(FetchedManifest {
                        bytes,
                        media_type,
                        digest,
                    });
                }
                Ok(None) => last_err = None,
                Err(e) if ep.mirror => {
                    tracing::info!(
                        "mirror {} failed for {r}: {e}; trying the next endpoint",
                        ep.base
                    );
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::NotFound {
            what: format!("manifest {} in {}/{}", r.target(), r.registry, r.repository),
            hint: Some(
                "check the reference (tags are case-sensitive) and that you may read it".into(),
            ),
        }))
    }

    /// Pushes a manifest under the reference's tag (or digest); returns the registry's digest.
    pub async fn put_manifest(
        &self,
        r: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        Ok(self.put_manifest_detail(r, bytes, media_type).await?.0)
    }

    /// Like [`RegistryClient::put_manifest`], also saying whether the
    /// registry answered with `OCI-Subject` (it maintains the referrers API
    /// for a manifest with a `subject`, so no tag schema update is needed).
    pub async fn put_manifest_detail(
        &self,
        r: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(Digest, bool)> {
        let eps = self.endpoints(&r.registry)?;
        let ep = eps
            .iter()
            .find(|e| !e.mirror)
            .expect("server endpoint always present");
        let path = format!("/v2/{}/manifests/{}", r.repository, r.target());
        let body = bytes.to_vec();
        self.retry(&format!("push manifest {r}"), || async {
            let resp = self
                .send(r, ep, &Access::Push, &|c, base| {
                    c.put(format!("{base}{path}"))
                        .header(CONTENT_TYPE, media_type)
                        .body(body.clone())
                })
                .await?;
            if !resp.status().is_success() {
                return Err(status_error(r, "push manifest", resp).await);
            }
            let d = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<Digest>().ok());
            let subject = resp.headers().contains_key("oci-subject");
            Ok((d.unwrap_or_else(|| Digest::of(&body)), subject))
        })
        .await
    }

    /// `GET /v2/<repo>/referrers/<digest>`: the referrers image index as
    /// bytes (at most [`MAX_MANIFEST`]), or `None` when the registry has no
    /// referrers API (404, 405 or 501 — distribution 2.8 answers 404) and
    /// the caller should fall back to the referrers tag schema. Only the
    /// first page is read; [`crate::chunkindex::referrer::MAX_REFERRERS`]
    /// bounds what a caller looks at anyway.
    pub async fn get_referrers(&self, r: &Reference, subject: &Digest) -> Result<Option<Vec<u8>>> {
        let eps = self.endpoints(&r.registry)?;
        let ep = eps
            .iter()
            .find(|e| !e.mirror)
            .expect("server endpoint always present");
        let path = format!("/v2/{}/referrers/{subject}", r.repository);
        self.retry(&format!("list referrers of {subject}"), || async {
            let resp = self
                .send(r, ep, &Access::Pull, &|c, base| {
                    c.get(format!("{base}{path}"))
                        .header(ACCEPT, media::OCI_INDEX)
                })
                .await?;
            match resp.status() {
                s if s.is_success() => {
                    let is_index = resp
                        .headers()
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with(media::OCI_INDEX));
                    if !is_index {
                        // Something answered, but not the referrers API.
                        return Ok(None);
                    }
                    let what = format!("referrers of {subject} in {r}");
                    Ok(Some(
                        super::read_capped(&r.registry, resp, MAX_MANIFEST, &what).await?,
                    ))
                }
                StatusCode::NOT_FOUND
                | StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::NOT_IMPLEMENTED => Ok(None),
                _ => Err(status_error(r, "list referrers", resp).await),
            }
        })
        .await
    }

    pub async fn list_tags(&self, r: &Reference) -> Result<Vec<String>> {
        let eps = self.endpoints(&r.registry)?;
        let ep = eps
            .iter()
            .find(|e| !e.mirror)
            .expect("server endpoint always present");
        let path = format!("/v2/{}/tags/list", r.repository);
        self.retry("list tags", || async {
            let resp = self
                .send(r, ep, &Access::Pull, &|c, base| {
                    c.get(format!("{base}{path}"))
                })
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(vec![]);
            }
            if !resp.status().is_success() {
                return Err(status_error(r, "list tags", resp).await);
            }
            #[derive(serde::Deserialize)]
            struct Tags {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let what = format!("tag list of {r}");
            let bytes = super::read_capped(&r.registry, resp, MAX_TAG_LIST, &what).await?;
            let t: Tags = serde_json::from_slice(&bytes).map_err(|e| {
                Attempt::from(Error::Registry {
                    status: None,
                    registry: r.registry.clone(),
                    message: format!("unreadable tag list: {e}"),
                })
            })?;
            Ok(t.tags.unwrap_or_default())
        })
        .await
    }
}

impl RegistryClient {
    /// `GET /v2/` with authentication: succeeds when the registry accepts our credentials.
    pub async fn check_login(&self, registry: &str) -> Result<()> {
        let r = Reference {
            registry: registry.to_string(),
            repository: "modelpack/login-check".into(),
            tag: None,
            digest: None,
        };
        let eps = self.endpoints(registry)?;
        let ep = eps
            .iter()
            .find(|e| !e.mirror)
            .expect("server endpoint always present");
        let resp = self
            .send(&r, ep, &Access::Pull, &|c, base| {
                c.get(format!("{base}/v2/"))
            })
            .await
            .map_err(|a| a.err)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(status_error(&r, "login", resp).await.err)
        }
    }
}
