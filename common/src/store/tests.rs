use super::*;
use std::io::Write;

fn reference(s: &str) -> Reference {
    s.parse().unwrap()
}

#[test]
fn blob_commit_verifies_and_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"hello").unwrap();
    let wrong = Digest::of(b"other");
    let err = w.commit(Some(&wrong)).unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(!store.has_blob(&wrong));
    assert!(!store.has_blob(&Digest::of(b"hello")));
    assert_eq!(
        fs::read_dir(store.tmp_dir()).unwrap().count(),
        0,
        "temp file left behind"
    );

    let d = store.put_bytes(b"hello").unwrap();
    assert_eq!(store.read_blob(&d).unwrap(), b"hello");
}

#[test]
fn read_blob_detects_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = store.put_bytes(b"hello").unwrap();
    // Blobs are read-only (0444); replace the file as a corrupting disk or user would.
    fs::remove_file(store.blob_path(&d)).unwrap();
    fs::write(store.blob_path(&d), b"HELLO").unwrap();
    assert!(matches!(
        store.read_blob(&d),
        Err(Error::DigestMismatch { .. })
    ));
}

#[test]
fn tag_resolve_remove_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layer = store.put_bytes(b"weights").unwrap();
    let config = store.put_bytes(b"{}").unwrap();
    let orphan = store.put_bytes(b"orphan").unwrap();
    let m = Manifest::model(
        crate::media::Family::Cncf,
        Descriptor::new(
            "application/vnd.cncf.model.config.v1+json",
            config.clone(),
            2,
        ),
        vec![Descriptor::new(
            "application/vnd.cncf.model.weight.v1.raw",
            layer.clone(),
            7,
        )],
    );
    let bytes = m.to_bytes();
    let md = store.put_bytes(&bytes).unwrap();
    let desc = Descriptor::new(crate::media::OCI_MANIFEST, md.clone(), bytes.len() as u64);
    store
        .tag(&reference("127.0.0.1:5000/m/x:v1"), &desc)
        .unwrap();
    store
        .tag(&reference("127.0.0.1:5000/m/x:v2"), &desc)
        .unwrap();

    assert_eq!(
        store
            .resolve(&reference("127.0.0.1:5000/m/x:v1"))
            .unwrap()
            .digest,
        md
    );
    assert_eq!(
        store
            .resolve(&reference(&format!("127.0.0.1:5000/m/x@{md}")))
            .unwrap()
            .digest,
        md
    );
    assert!(matches!(
        store.resolve(&reference("127.0.0.1:5000/m/x:v3")),
        Err(Error::NotFound { .. })
    ));

    let dry = store.prune(true).unwrap();
    assert_eq!(dry.iter().map(|x| &x.0).collect::<Vec<_>>(), vec![&orphan]);
    assert!(store.has_blob(&orphan));
    store.prune(false).unwrap();
    assert!(!store.has_blob(&orphan));
    assert!(store.has_blob(&layer));

    assert_eq!(
        store.remove(&reference("127.0.0.1:5000/m/x:v1")).unwrap(),
        1
    );
    assert!(store.has_blob(&layer), "v2 still references it");
    assert_eq!(store.prune(false).unwrap().len(), 0);
    assert_eq!(
        store
            .remove(&reference(&format!("127.0.0.1:5000/m/x@{md}")))
            .unwrap(),
        1
    );
    assert_eq!(store.prune(false).unwrap().len(), 3);
    assert!(!store.has_blob(&layer));
}
