//! Model layers against a real docker-registry on 127.0.0.1.

use std::sync::Arc;

use modelpack_common::credentials::{CredentialOptions, CredentialStore};
use modelpack_common::registry::{RegistryClient, TransportOptions};

use super::*;
use crate::meta::Kind;

struct Reg {
    child: std::process::Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Drop for Reg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry() -> Reg {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, format!("version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}, secret: s}}\n", dir.path().join("data").display())).unwrap();
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry is required: run integration/setup.sh");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    Reg {
        child,
        host: format!("127.0.0.1:{port}"),
        _dir: dir,
    }
}

fn fetcher() -> ModelFetcher {
    let client = RegistryClient::new(
        TransportOptions::default(),
        Arc::new(CredentialStore::new(CredentialOptions::default())),
    )
    .unwrap();
    ModelFetcher {
        client,
        chunk_size: 4096,
        lock: tokio::sync::Mutex::new(()),
    }
}

fn model_labels(
    reference: &str,
    chain: &str,
    digest: &Digest,
    path: &str,
) -> BTreeMap<String, String> {
    [
        (LABEL_REF, chain.to_string()),
        (LABEL_REFERENCE, reference.to_string()),
        (LABEL_LAYER_DIGEST, digest.to_string()),
        (
            LABEL_MEDIA_TYPE,
            "application/vnd.cncf.model.weight.v1.raw".to_string(),
        ),
        (LABEL_FILEPATH, path.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[tokio::test]
async fn model_layers_are_fetched_verified_deduplicated_and_viewed_as_one_directory() {
    let reg = registry();
    let r: Reference = format!("{}/models/a:v1", reg.host).parse().unwrap();
    let f = fetcher();
    let shared = vec![7u8; 20_000];
    let own = b"tokenizer".to_vec();
    let d_shared = f.client.push_blob_bytes(&r, &shared).await.unwrap();
    let d_own = f.client.push_blob_bytes(&r, &own).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let s = Snapshots::open(root.path()).unwrap();
    // Model 1: two layers. Every model Prepare answers AlreadyExists.
    let e = prepare_model(
        &s,
        &f,
        "",
        model_labels(
            &r.to_string(),
            "chain-1",
            &d_shared,
            "weights/model.safetensors",
        ),
    )
    .await;
    assert!(
        matches!(e, SnapError::AlreadyExists(ref t) if t == "chain-1"),
        "{e}"
    );
    let e = prepare_model(
        &s,
        &f,
        "chain-1",
        model_labels(&r.to_string(), "chain-2", &d_own, "tokenizer.json"),
    )
    .await;
    assert!(matches!(e, SnapError::AlreadyExists(_)), "{e}");
    let c2 = s.stat("chain-2").unwrap();
    assert_eq!(
        (c2.kind, c2.parent.as_str(), c2.labels[LABEL_REF].as_str()),
        (Kind::Committed, "chain-1", "chain-2")
    );
    assert_eq!(
        s.meta.chunks(d_shared.hex()).unwrap().unwrap().chunks.len(),
        5,
        "4 KiB chunks of a 20 000-byte blob"
    );
    // Model 2 shares the weight file under another chain: no second copy.
    let e = prepare_model(
        &s,
        &f,
        "",
        model_labels(
            &r.to_string(),
            "other-chain",
            &d_shared,
            "model.safetensors",
        ),
    )
    .await;
    assert!(matches!(e, SnapError::AlreadyExists(_)));
    let blobs = std::fs::read_dir(root.path().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 2, "the shared file is stored once");
    // A view of the top of model 1 is one read-only bind of a directory with every file.
    let m = s
        .create(Kind::View, "view", "chain-2", BTreeMap::new())
        .unwrap();
    assert_eq!(
        (m.len(), m[0].r#type.as_str(), m[0].options[0].as_str()),
        (1, "bind", "ro")
    );
    let dir = std::path::PathBuf::from(&m[0].source);
    assert_eq!(
        std::fs::read(dir.join("weights/model.safetensors")).unwrap(),
        shared
    );
    assert_eq!(std::fs::read(dir.join("tokenizer.json")).unwrap(), own);
    // Removing everything that references a blob frees it; referenced blobs stay.
    s.remove("view").unwrap();
    s.remove("chain-2").unwrap();
    assert!(!s.blob_path(d_own.hex()).exists());
    s.remove("chain-1").unwrap();
    assert!(
        s.blob_path(d_shared.hex()).exists(),
        "other-chain still uses it"
    );
    s.remove("other-chain").unwrap();
    assert!(!s.blob_path(d_shared.hex()).exists());
}

#[tokio::test]
async fn a_blob_with_wrong_bytes_fails_and_commits_nothing() {
    let reg = registry();
    let r: Reference = format!("{}/models/b:v1", reg.host).parse().unwrap();
    let f = fetcher();
    let real = f
        .client
        .push_blob_bytes(&r, b"the real bytes")
        .await
        .unwrap();
    let _ = real;
    let root = tempfile::tempdir().unwrap();
    let s = Snapshots::open(root.path()).unwrap();
    // Ask for a digest the registry does not have: a not-found error, nothing committed.
    let wrong = Digest::of(b"other bytes");
    let e = prepare_model(
        &s,
        &f,
        "",
        model_labels(&r.to_string(), "c", &wrong, "x.bin"),
    )
    .await;
    assert!(!matches!(e, SnapError::AlreadyExists(_)), "{e}");
    assert!(s.meta.get("c").unwrap().is_none());
    assert_eq!(
        std::fs::read_dir(root.path().join("snapshots"))
            .unwrap()
            .count(),
        0
    );
    // Unsafe paths are refused before anything is written.
    let e = prepare_model(
        &s,
        &f,
        "",
        model_labels(&r.to_string(), "c2", &real, "../escape"),
    )
    .await;
    assert!(e.to_string().contains(".."), "{e}");
    assert!(s.meta.get("c2").unwrap().is_none());
}
