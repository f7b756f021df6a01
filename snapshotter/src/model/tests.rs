//! Model layers against a real docker-registry on 127.0.0.1.

use std::sync::Arc;

use modelpack_common::credentials::{CredentialOptions, CredentialStore};
use modelpack_common::registry::{RegistryClient, TransportOptions};

use super::*;
use crate::meta::Kind;
use modelpack_common::{Digest, Reference};

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
        lazy: None,
        cri: Default::default(),
        chains: Default::default(),
        blobs: Default::default(),
        prefetching: Default::default(),
        policy: None,
        manifests: Default::default(),
    }
}

/// Labels for a raw layer `digest` (of `size` bytes) on top of `parent`, as
/// `pull --containerd` writes them; returns them with the chain ID they name.
fn model_labels(
    reference: &str,
    parent: &str,
    digest: &Digest,
    size: usize,
    path: &str,
) -> (BTreeMap<String, String>, String) {
    let parent_chain = (!parent.is_empty()).then(|| parent.parse::<Digest>().unwrap());
    let chain = modelpack_common::labels::chain_id(parent_chain.as_ref(), digest);
    let l = ModelLayerLabels {
        chain_id: chain.clone(),
        reference: reference.parse().unwrap(),
        manifest_digest: None,
        layer_digest: digest.clone(),
        layer_size: size as u64,
        media_type: "application/vnd.cncf.model.weight.v1.raw".into(),
        filepath: path.into(),
        diff_id: digest.clone(),
    };
    (l.to_labels(), chain.to_string())
}

#[tokio::test]
async fn model_layers_are_fetched_verified_deduplicated_and_viewed_as_one_directory() {
    let reg = registry();
    let r: Reference = format!("{}/models/a:v1", reg.host).parse().unwrap();
    let f = Arc::new(fetcher());
    let shared = vec![7u8; 20_000];
    let own = b"tokenizer".to_vec();
    let d_shared = f.client.push_blob_bytes(&r, &shared).await.unwrap();
    let d_own = f.client.push_blob_bytes(&r, &own).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let s = Arc::new(Snapshots::open(root.path()).unwrap());
    // Model 1: two layers. Every model Prepare answers AlreadyExists.
    let (l1, chain1) = model_labels(
        &r.to_string(),
        "",
        &d_shared,
        shared.len(),
        "weights/model.safetensors",
    );
    let e = prepare_model(&s, &f, "", l1).await;
    assert!(
        matches!(e, SnapError::AlreadyExists(ref t) if *t == chain1),
        "{e}"
    );
    let (l2, chain2) = model_labels(&r.to_string(), &chain1, &d_own, own.len(), "tokenizer.json");
    let e = prepare_model(&s, &f, &chain1, l2).await;
    assert!(matches!(e, SnapError::AlreadyExists(_)), "{e}");
    let c2 = s.stat(&chain2).unwrap();
    assert_eq!(
        (c2.kind, c2.parent.as_str(), c2.labels[LABEL_REF].as_str()),
        (Kind::Committed, chain1.as_str(), chain2.as_str())
    );
    assert_eq!(
        std::fs::read(s.blob_path(d_shared.hex())).unwrap(),
        shared,
        "the verified blob in the node store"
    );
    // Model 2 has the tokenizer first and the shared weights on top: another chain, no second copy.
    let (l3, other0) = model_labels(&r.to_string(), "", &d_own, own.len(), "tok.json");
    assert!(matches!(
        prepare_model(&s, &f, "", l3).await,
        SnapError::AlreadyExists(_)
    ));
    let (l4, other_chain) = model_labels(
        &r.to_string(),
        &other0,
        &d_shared,
        shared.len(),
        "model.safetensors",
    );
    let e = prepare_model(&s, &f, &other0, l4).await;
    assert!(matches!(e, SnapError::AlreadyExists(_)), "{e}");
    // A Prepare claiming someone else's chain ID (cache poisoning) is refused.
    let (mut evil, _) = model_labels(&r.to_string(), "", &d_own, own.len(), "x");
    evil.insert(LABEL_REF.into(), chain1.clone());
    let e = prepare_model(&s, &f, "", evil).await;
    assert!(matches!(e, SnapError::InvalidArgument(_)), "{e}");
    let blobs = std::fs::read_dir(root.path().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 2, "the shared file is stored once");
    // A view of the top of model 1 is one read-only bind of a directory with every file.
    let m = s
        .create(Kind::View, "view", &chain2, BTreeMap::new())
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
    s.remove(&chain2).unwrap();
    s.remove(&chain1).unwrap();
    assert!(
        s.blob_path(d_shared.hex()).exists(),
        "model 2 still uses it"
    );
    s.remove(&other_chain).unwrap();
    s.remove(&other0).unwrap();
    assert!(!s.blob_path(d_own.hex()).exists());
    assert!(!s.blob_path(d_shared.hex()).exists());
}

#[tokio::test]
async fn a_blob_with_wrong_bytes_fails_and_commits_nothing() {
    let reg = registry();
    let r: Reference = format!("{}/models/b:v1", reg.host).parse().unwrap();
    let f = Arc::new(fetcher());
    let real = f
        .client
        .push_blob_bytes(&r, b"the real bytes")
        .await
        .unwrap();
    let _ = real;
    let root = tempfile::tempdir().unwrap();
    let s = Arc::new(Snapshots::open(root.path()).unwrap());
    // Ask for a digest the registry does not have: a not-found error, nothing committed.
    let wrong = Digest::of(b"other bytes");
    let (labels, c) = model_labels(&r.to_string(), "", &wrong, 11, "x.bin");
    let e = prepare_model(&s, &f, "", labels).await;
    assert!(!matches!(e, SnapError::AlreadyExists(_)), "{e}");
    assert!(s.meta.get(&c).unwrap().is_none());
    assert_eq!(
        std::fs::read_dir(root.path().join("snapshots"))
            .unwrap()
            .count(),
        0
    );
    // Unsafe paths are refused before anything is written.
    let (labels, c2) = model_labels(&r.to_string(), "", &real, 14, "../escape");
    let e = prepare_model(&s, &f, "", labels).await;
    assert!(e.to_string().contains(".."), "{e}");
    assert!(s.meta.get(&c2).unwrap().is_none());
}

/// Pushes a one-layer ModelPack model whose raw layer binds a chunk index
/// (64 KiB chunks); returns (manifest digest, layer digest, index digest).
async fn push_indexed_model(
    f: &ModelFetcher,
    r: &Reference,
    data: &[u8],
) -> (Digest, Digest, Digest) {
    use modelpack_common::chunkindex::{IndexFormat, Indexer, LayerRef};
    let d = f.client.push_blob_bytes(r, data).await.unwrap();
    let media_type = "application/vnd.cncf.model.weight.v1.raw";
    let mut ix = Indexer::new(65536, IndexFormat::Raw);
    ix.update(data);
    let index = ix
        .finish(LayerRef {
            digest: d.clone(),
            media_type: media_type.into(),
            size: data.len() as u64,
        })
        .unwrap()
        .to_bytes();
    let id = f.client.push_blob_bytes(r, &index).await.unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "descriptor": {}, "config": {},
        "modelfs": {"type": "layers", "diffIds": [d.to_string()]}
    }))
    .unwrap();
    let cd = f.client.push_blob_bytes(r, &config).await.unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{
            "mediaType": media_type, "digest": d.to_string(), "size": data.len(),
            "annotations": {
                "org.cncf.model.filepath": "weights/model.safetensors",
                "org.modelpack.chunks.digest": id.to_string()
            }
        }]
    }))
    .unwrap();
    let md = f
        .client
        .put_manifest(r, &manifest, "application/vnd.oci.image.manifest.v1+json")
        .await
        .unwrap();
    (md, d, id)
}

#[tokio::test]
async fn a_layer_with_a_bound_index_commits_without_fetching_and_cri_labels_find_it() {
    let reg = registry();
    let r: Reference = format!("{}/models/lazy:v1", reg.host).parse().unwrap();
    let mut f = fetcher();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (md, d, id) = push_indexed_model(&f, &r, &data).await;
    let root = tempfile::tempdir().unwrap();
    let s = Arc::new(Snapshots::open(root.path()).unwrap());
    f.lazy = Some(Arc::new(crate::lazy::LazyViews::new(
        crate::lazy::LazyOptions::default(),
        s.cas.clone(),
        f.client.clone(),
        tokio::runtime::Handle::current(),
    )));
    let f = Arc::new(f);

    // CRI's labels alone (what containerd's CRI plugin sends) are enough:
    // our labels are derived from the verified manifest and config.
    let chain = d.to_string();
    let cri = BTreeMap::from([
        (LABEL_REF.to_string(), chain.clone()),
        (crate::cri::CRI_IMAGE_REF.to_string(), r.to_string()),
        (crate::cri::CRI_MANIFEST_DIGEST.to_string(), md.to_string()),
        (crate::cri::CRI_LAYER_DIGEST.to_string(), d.to_string()),
    ]);
    assert!(crate::cri::is_cri_prepare(&cri));
    let derived = f.cri.model_labels(&f.client, &cri, "").await.unwrap();
    assert_eq!(derived.filepath, "weights/model.safetensors");
    assert_eq!(derived.manifest_digest.as_ref(), Some(&md));
    assert!(
        f.cri
            .model_labels(&f.client, &cri, "sha256:0000")
            .await
            .is_none(),
        "a layer on a foreign parent is not the model's"
    );

    // The lazy path serves only the manifest's layer at the manifest's path.
    let mut moved = derived.clone();
    moved.filepath = "elsewhere/model.safetensors".into();
    let msg = prepare_model(&s, &f, "", moved.to_labels())
        .await
        .to_string();
    assert!(
        msg.contains(modelpack_common::labels::LABEL_FILEPATH) && msg.contains(&md.to_string()),
        "{msg}"
    );
    assert!(s.meta.get(&chain).unwrap().is_none(), "nothing committed");

    // A caller cannot make a layer lazy by sending our label.
    let mut labels = derived.to_labels();
    labels.insert(
        modelpack_common::labels::LABEL_CHUNK_INDEX.into(),
        Digest::of(b"forged").to_string(),
    );
    let e = prepare_model(&s, &f, "", labels).await;
    assert!(
        matches!(e, SnapError::AlreadyExists(ref t) if *t == chain),
        "{e}"
    );
    let rec = s.stat(&chain).unwrap();
    assert_eq!(
        rec.labels.get(modelpack_common::labels::LABEL_CHUNK_INDEX),
        Some(&id.to_string()),
        "the bound index from the manifest, not the forged one"
    );
    assert!(
        !s.blob_path(d.hex()).exists(),
        "no weight byte fetched at Prepare"
    );
    assert!(
        s.blob_path(id.hex()).exists(),
        "the index is kept on the node"
    );
    assert_eq!(rec.model.len(), 1);
    assert_eq!(rec.model[0].filepath, "weights/model.safetensors");

    // An ordinary image's CRI Prepare is left to the ordinary path.
    let img_cfg =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let icd = f.client.push_blob_bytes(&r, img_cfg).await.unwrap();
    let image = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": icd.to_string(), "size": img_cfg.len()},
        "layers": []
    }))
    .unwrap();
    let ir: Reference = format!("{}/library/img:v1", reg.host).parse().unwrap();
    let _ = f.client.push_blob_bytes(&ir, img_cfg).await.unwrap();
    let imd = f
        .client
        .put_manifest(&ir, &image, "application/vnd.oci.image.manifest.v1+json")
        .await
        .unwrap();
    let mut ordinary = cri.clone();
    ordinary.insert(crate::cri::CRI_IMAGE_REF.into(), ir.to_string());
    ordinary.insert(crate::cri::CRI_MANIFEST_DIGEST.into(), imd.to_string());
    assert!(f.cri.model_labels(&f.client, &ordinary, "").await.is_none());
}

#[tokio::test]
async fn the_first_eager_prepare_fetches_the_other_layers_in_the_background() {
    let reg = registry();
    let r: Reference = format!("{}/models/eager:v1", reg.host).parse().unwrap();
    let f = Arc::new(fetcher());
    let layers: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i + 1; 50_000]).collect();
    let mut digests = Vec::new();
    for l in &layers {
        digests.push(f.client.push_blob_bytes(&r, l).await.unwrap());
    }
    let config = br#"{"descriptor":{},"config":{},"modelfs":{"type":"layers","diffIds":[]}}"#;
    let cd = f.client.push_blob_bytes(&r, config).await.unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": digests.iter().enumerate().map(|(i, d)| serde_json::json!({
            "mediaType": "application/vnd.cncf.model.weight.v1.raw",
            "digest": d.to_string(), "size": 50_000,
            "annotations": {"org.cncf.model.filepath": format!("w{i}.safetensors")}
        })).collect::<Vec<_>>()
    }))
    .unwrap();
    let md = f
        .client
        .put_manifest(&r, &manifest, "application/vnd.oci.image.manifest.v1+json")
        .await
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let s = Arc::new(Snapshots::open(root.path()).unwrap());
    let labels = |parent: &str, i: usize| {
        let (mut l, chain) = model_labels(
            &r.to_string(),
            parent,
            &digests[i],
            50_000,
            &format!("w{i}.safetensors"),
        );
        l.insert(
            modelpack_common::labels::LABEL_MANIFEST.into(),
            md.to_string(),
        );
        (l, chain)
    };
    let (l0, c0) = labels("", 0);
    assert!(matches!(
        prepare_model(&s, &f, "", l0).await,
        SnapError::AlreadyExists(_)
    ));
    // Before containerd asks for layers 1 and 2, they are being fetched (or are there).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !digests.iter().all(|d| s.blob_path(d.hex()).exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the other layers were not fetched in the background"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (l1, c1) = labels(&c0, 1);
    assert!(matches!(
        prepare_model(&s, &f, &c0, l1).await,
        SnapError::AlreadyExists(_)
    ));
    let (l2, c2) = labels(&c1, 2);
    assert!(matches!(
        prepare_model(&s, &f, &c1, l2).await,
        SnapError::AlreadyExists(_)
    ));
    assert_eq!(s.stat(&c2).unwrap().kind, Kind::Committed);
    for (d, bytes) in digests.iter().zip(&layers) {
        assert_eq!(
            &std::fs::read(s.blob_path(d.hex())).unwrap(),
            bytes,
            "verified and stored once"
        );
    }
}

/// Pushes a two-layer raw model and a signature of it (a P-256 key made with
/// openssl); returns (manifest digest, layer digests, public key PEM path).
async fn push_signed_model(
    f: &ModelFetcher,
    r: &Reference,
    dir: &std::path::Path,
) -> (Digest, Vec<Digest>, std::path::PathBuf) {
    use modelpack_common::signing::{PrivateKey, bundle, referrer};
    let layers = [b"signed weights".to_vec(), b"signed tokenizer".to_vec()];
    let paths = ["w.safetensors", "tokenizer.json"];
    let mut digests = Vec::new();
    for l in &layers {
        digests.push(f.client.push_blob_bytes(r, l).await.unwrap());
    }
    let config = br#"{"descriptor":{},"config":{},"modelfs":{"type":"layers","diffIds":[]}}"#;
    let cd = f.client.push_blob_bytes(r, config).await.unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": digests.iter().zip(&layers).zip(paths).map(|((d, l), p)| serde_json::json!({
            "mediaType": "application/vnd.cncf.model.weight.v1.raw",
            "digest": d.to_string(), "size": l.len(),
            "annotations": {"org.cncf.model.filepath": p}
        })).collect::<Vec<_>>()
    }))
    .unwrap();
    let md = f
        .client
        .put_manifest(r, &manifest, "application/vnd.oci.image.manifest.v1+json")
        .await
        .unwrap();
    let private = dir.join("priv.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&private)
        .status()
        .expect("openssl is required: run integration/setup.sh")
        .success();
    assert!(ok);
    let key = PrivateKey::load(&private).unwrap();
    let public = dir.join("pub.pem");
    std::fs::write(&public, key.public_key().unwrap().to_pem()).unwrap();
    let files = paths
        .iter()
        .zip(&digests)
        .map(|(p, d)| (p.to_string(), d.clone()))
        .collect();
    let sig = bundle::sign(&files, &[], "m", &key).unwrap().to_bytes();
    let store = modelpack_common::store::Store::open(dir.join("store")).unwrap();
    store.put_bytes(&sig).unwrap();
    store.put_bytes(b"{}").unwrap();
    let subject = modelpack_common::manifest::Descriptor::new(
        "application/vnd.oci.image.manifest.v1+json",
        md.clone(),
        manifest.len() as u64,
    );
    let referrer = referrer::build(&subject, &sig).to_bytes();
    referrer::publish(&f.client, &store, r, &referrer)
        .await
        .unwrap();
    (md, digests, public)
}

/// The labels are the caller's; the signature covers the manifest. A signed
/// manifest's digest must not vouch for a foreign blob or a path it does not
/// name — on the eager path (no lazy views here) with and without a policy.
#[tokio::test]
async fn a_prepare_must_name_a_layer_of_its_manifest_at_its_path() {
    let reg = registry();
    let r: Reference = format!("{}/models/signed:v1", reg.host).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plain = fetcher();
    let (md, digests, public) = push_signed_model(&plain, &r, dir.path()).await;
    let foreign = b"unsigned bytes the attacker wants served";
    let fd = plain.client.push_blob_bytes(&r, foreign).await.unwrap();
    let rules = BTreeMap::from([(reg.host.clone(), vec![public.clone()])]);
    for with_policy in [true, false] {
        let mut f = fetcher();
        if with_policy {
            f.policy = modelpack_common::signing::policy::NodePolicy::load(&rules)
                .unwrap()
                .map(Arc::new);
        }
        let f = Arc::new(f);
        let root = tempfile::tempdir().unwrap();
        let s = Arc::new(Snapshots::open(root.path()).unwrap());
        let labels = |d: &Digest, size: usize, path: &str| {
            let (mut l, chain) = model_labels(&r.to_string(), "", d, size, path);
            l.insert(
                modelpack_common::labels::LABEL_MANIFEST.into(),
                md.to_string(),
            );
            (l, chain)
        };
        // A foreign blob under the signed manifest's digest.
        let (l, chain) = labels(&fd, foreign.len(), "w.safetensors");
        let e = prepare_model(&s, &f, "", l).await;
        let msg = e.to_string();
        assert!(
            msg.contains(modelpack_common::labels::LABEL_LAYER_DIGEST)
                && msg.contains(&fd.to_string())
                && msg.contains(&md.to_string())
                && msg.contains("has no such layer"),
            "policy {with_policy}: {msg}"
        );
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
        assert!(s.meta.get(&chain).unwrap().is_none(), "nothing committed");
        assert!(
            !s.blob_path(fd.hex()).exists(),
            "the foreign blob not fetched"
        );
        // A signed blob at a path the manifest does not give it.
        let (l, chain) = labels(&digests[0], 14, "tokenizer.json");
        let msg = prepare_model(&s, &f, "", l).await.to_string();
        assert!(
            msg.contains(modelpack_common::labels::LABEL_FILEPATH)
                && msg.contains("\"tokenizer.json\"")
                && msg.contains("\"w.safetensors\""),
            "policy {with_policy}: {msg}"
        );
        assert!(s.meta.get(&chain).unwrap().is_none(), "nothing committed");
        assert!(!s.blob_path(digests[0].hex()).exists());
        // The manifest's own layer at its path is served.
        let (l, chain) = labels(&digests[0], 14, "w.safetensors");
        let e = prepare_model(&s, &f, "", l).await;
        assert!(
            matches!(e, SnapError::AlreadyExists(ref t) if *t == chain),
            "policy {with_policy}: {e}"
        );
    }
}
