//! The transport's retry, resume and auth branches, each against an
//! in-process HTTP double (`wiremock`: maintained, async, matches on method,
//! path, headers and query, and counts what it received). The hostile-server
//! cases are in `tests.rs`; real registries are in the end-to-end suite.

use std::sync::Arc;

use wiremock::matchers::{header, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::*;
use crate::credentials::{Credential, CredentialOptions, CredentialStore, EnvFn};
use crate::digest::Digest;

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.cncf.model.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn client(explicit: Option<Credential>, retries: u32) -> RegistryClient {
    let no_env: EnvFn = Arc::new(|_: &str| None);
    let creds = CredentialStore::with_env(
        CredentialOptions {
            explicit,
            docker_config_dir: Some("/nonexistent/modelpack-test-docker-config".into()),
            ..Default::default()
        },
        no_env,
    );
    RegistryClient::new(
        TransportOptions {
            retries,
            ..Default::default()
        },
        Arc::new(creds),
    )
    .unwrap()
}

fn reference(srv: &MockServer) -> Reference {
    let host = srv.address().to_string();
    format!("{host}/models/tiny:v1").parse().unwrap()
}

fn manifest_reply() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", MANIFEST_TYPE)
        .set_body_bytes(MANIFEST)
}

async fn received(srv: &MockServer, p: &str) -> usize {
    srv.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == p)
        .count()
}

#[tokio::test]
async fn a_503_is_retried_until_the_registry_answers() {
    let srv = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/models/tiny/manifests/v1"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&srv)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/models/tiny/manifests/v1"))
        .respond_with(manifest_reply())
        .mount(&srv)
        .await;
    let m = client(None, 3)
        .get_manifest(&reference(&srv))
        .await
        .unwrap();
    assert_eq!(m.bytes, MANIFEST);
    assert_eq!(m.digest, Digest::of(MANIFEST));
    assert_eq!(received(&srv, "/v2/models/tiny/manifests/v1").await, 3);
}

#[tokio::test]
async fn retries_end_with_the_last_status_and_a_transient_kind() {
    let srv = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/models/tiny/manifests/v1"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&srv)
        .await;
    let err = client(None, 2)
        .get_manifest(&reference(&srv))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("502"), "{err}");
    assert_eq!(received(&srv, "/v2/models/tiny/manifests/v1").await, 3);
}

#[tokio::test]
async fn a_404_is_answered_once_and_is_not_found() {
    let srv = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/models/tiny/manifests/v1"))
        .respond_with(ResponseTemplate::new(404).set_body_string(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        ))
        .mount(&srv)
        .await;
    let err = client(None, 3)
        .get_manifest(&reference(&srv))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::NotFound, "{err}");
    assert_eq!(received(&srv, "/v2/models/tiny/manifests/v1").await, 1);
}

#[tokio::test]
async fn a_bearer_token_is_fetched_once_with_the_credentials_and_reused() {
    let srv = MockServer::start().await;
    let realm = format!("{}/token", srv.uri());
    let challenge =
        format!(r#"Bearer realm="{realm}",service="test",scope="repository:models/tiny:pull""#);
    Mock::given(method("GET"))
        .and(path("/v2/models/tiny/manifests/v1"))
        .and(header("authorization", "Bearer t0k3n"))
        .respond_with(manifest_reply())
        .with_priority(1)
        .mount(&srv)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/models/tiny/manifests/v1"))
        .respond_with(ResponseTemplate::new(401).insert_header("www-authenticate", challenge))
        .mount(&srv)
        .await;
    // alice:s3cret, as HTTP basic to the token endpoint only.
    Mock::given(method("GET"))
        .and(path("/token"))
        .and(query_param("scope", "repository:models/tiny:pull"))
        .and(header("authorization", "Basic YWxpY2U6czNjcmV0"))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"token":"t0k3n"}"#))
        .mount(&srv)
        .await;
    let c = client(
        Some(Credential::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        }),
        0,
    );
    let r = reference(&srv);
    c.get_manifest(&r).await.unwrap();
    c.get_manifest(&r).await.unwrap();
    assert_eq!(received(&srv, "/token").await, 1, "the token is cached");
    let manifest_gets = received(&srv, "/v2/models/tiny/manifests/v1").await;
    assert!(manifest_gets <= 3, "one challenge at most: {manifest_gets}");
}

#[tokio::test]
async fn rejected_basic_credentials_say_wrong_username_or_password() {
    let srv = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/models/tiny/manifests/v1"))
        .respond_with(
            ResponseTemplate::new(401).insert_header("www-authenticate", r#"Basic realm="r""#),
        )
        .mount(&srv)
        .await;
    let err = client(
        Some(Credential::Basic {
            username: "alice".into(),
            password: "wrong".into(),
        }),
        3,
    )
    .get_manifest(&reference(&srv))
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("wrong username or password"), "{text}");
    assert!(
        !text.contains("wrong\""),
        "no password in the message: {text}"
    );
    assert_eq!(err.kind(), crate::ErrorKind::PermissionDenied);
}

/// Serves `bytes[start..]` as 206 for `Range: bytes=START-`.
struct RangeReply(Vec<u8>);

impl Respond for RangeReply {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let start: usize = req
            .headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.trim_end_matches('-').parse().ok())
            .unwrap_or(0);
        ResponseTemplate::new(206)
            .insert_header(
                "content-range",
                format!("bytes {start}-{}/{}", self.0.len() - 1, self.0.len()),
            )
            .set_body_bytes(self.0[start..].to_vec())
    }
}

#[tokio::test]
async fn a_partial_download_resumes_with_range_and_verifies_the_whole_blob() {
    let srv = MockServer::start().await;
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::of(&blob);
    let p = format!("/v2/models/tiny/blobs/{d}");
    Mock::given(method("GET"))
        .and(path(p.clone()))
        .and(header("range", "bytes=100000-"))
        .respond_with(RangeReply(blob.clone()))
        // The resume below, and the one from a bad prefix: never a full GET.
        .expect(2)
        .mount(&srv)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file_path = dir.path().join("blob.partial");
    std::fs::write(&file_path, &blob[..100_000]).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file_path)
        .unwrap();
    client(None, 0)
        .pull_blob_to_file(&reference(&srv), &d, blob.len() as u64, &f, &file_path, &())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&file_path).unwrap(), blob);
    // A prefix that does not belong to the blob fails the digest and is not kept.
    std::fs::write(&file_path, vec![0u8; 100_000]).unwrap();
    let err = client(None, 0)
        .pull_blob_to_file(&reference(&srv), &d, blob.len() as u64, &f, &file_path, &())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{err}");
    assert_eq!(std::fs::metadata(&file_path).unwrap().len(), 0);
}

#[tokio::test]
async fn an_upload_goes_post_then_put_with_the_digest_and_a_5xx_put_is_retried() {
    let srv = MockServer::start().await;
    let bytes = b"config bytes".to_vec();
    let d = Digest::of(&bytes);
    Mock::given(method("HEAD"))
        .and(path(format!("/v2/models/tiny/blobs/{d}")))
        .respond_with(ResponseTemplate::new(404))
        .mount(&srv)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/models/tiny/blobs/uploads/"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("location", "/v2/models/tiny/blobs/uploads/u1"),
        )
        .mount(&srv)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v2/models/tiny/blobs/uploads/u1"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&srv)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v2/models/tiny/blobs/uploads/u1"))
        .and(query_param("digest", d.to_string()))
        .and(header_exists("content-type"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&srv)
        .await;
    let got = client(None, 2)
        .push_blob_bytes(&reference(&srv), &bytes)
        .await
        .unwrap();
    assert_eq!(got, d);
    assert_eq!(received(&srv, "/v2/models/tiny/blobs/uploads/u1").await, 2);
    let puts = srv.received_requests().await.unwrap();
    let last = puts
        .iter()
        .rev()
        .find(|r| r.method.as_str() == "PUT")
        .unwrap();
    assert_eq!(last.body, bytes, "the whole blob in the PUT");
}

/// A registry with the OCI 1.1 referrers API (distribution 3, Harbor, zot —
/// none of them runs here; distribution 2.8 only exercises the tag-schema
/// fallback end to end): a referrer push answered with `OCI-Subject` writes no
/// `sha256-<hex>` tag index, listing reads the API's index as it is, and a 404
/// from the API means "none", so callers fall back to the tag schema.
#[tokio::test]
async fn a_registry_with_the_referrers_api_gets_no_tag_schema_index() {
    let srv = MockServer::start().await;
    let c = client(None, 0);
    let r = reference(&srv);
    let subject = Digest::of(b"the model's manifest");
    let referrer = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"layers":[],"subject":{{"mediaType":"{MANIFEST_TYPE}","digest":"{subject}","size":20}}}}"#
    );
    let digest = Digest::of(referrer.as_bytes());
    Mock::given(method("PUT"))
        .and(path(format!("/v2/models/tiny/manifests/{digest}")))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("docker-content-digest", digest.to_string())
                .insert_header("oci-subject", subject.to_string()),
        )
        .mount(&srv)
        .await;
    let m = crate::manifest::Manifest::parse(referrer.as_bytes(), "referrer").unwrap();
    let pushed = crate::transfer::referrers::put_referrer_manifest(
        &c,
        &r,
        referrer.as_bytes(),
        &m,
        &subject,
        "signature",
    )
    .await
    .unwrap();
    assert_eq!(pushed, digest);
    let seen: Vec<String> = srv
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|q| format!("{} {}", q.method, q.url.path()))
        .collect();
    assert_eq!(seen.len(), 1, "only the referrer's PUT: {seen:?}");

    let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    Mock::given(method("GET"))
        .and(path(format!("/v2/models/tiny/referrers/{subject}")))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/vnd.oci.image.index.v1+json")
                .set_body_bytes(index),
        )
        .mount(&srv)
        .await;
    assert_eq!(
        c.get_referrers(&r, &subject).await.unwrap(),
        Some(index.as_bytes().to_vec())
    );
    // No such route (the double answers 404, as distribution 2.8 does).
    assert_eq!(
        c.get_referrers(&r, &Digest::of(b"another")).await.unwrap(),
        None
    );
}
