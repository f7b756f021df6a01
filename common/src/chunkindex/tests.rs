use super::*;
use crate::chunk::DEFAULT_CHUNK_SIZE;

const CS: u64 = 64 << 10;

fn index_of(data: &[u8], format: IndexFormat, media_type: &str) -> LayerIndex {
    let mut ix = Indexer::new(CS, format);
    for p in data.chunks(10_007) {
        ix.update(p);
    }
    ix.finish(LayerRef {
        digest: Digest::of(data),
        media_type: media_type.into(),
        size: data.len() as u64,
    })
    .unwrap()
}

fn raw() -> (Vec<u8>, LayerIndex) {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let idx = index_of(
        &data,
        IndexFormat::Raw,
        "application/vnd.cncf.model.weight.v1.raw",
    );
    (data, idx)
}

#[test]
fn round_trip_and_canonical_bytes() {
    let (data, idx) = raw();
    assert_eq!(idx.chunks.len(), 5);
    assert_eq!(idx.chunks[4], Digest::of(&data[4 * CS as usize..]));
    let bytes = idx.to_bytes();
    assert_eq!(LayerIndex::parse(&bytes, "t").unwrap(), idx);
    // Keys in JCS order, compact: the exact prefix another implementation must produce.
    let s = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        s.starts_with(r#"{"chunkSize":65536,"chunks":["sha256:"#),
        "{s}"
    );
    assert!(
        s.ends_with(&format!(
            r#"],"files":[],"format":"raw","layer":{{"digest":"{}","mediaType":"application/vnd.cncf.model.weight.v1.raw","size":300000}},"mediaType":"application/vnd.modelpack.chunks.v1+json"}}"#,
            Digest::of(&data)
        )),
        "{s}"
    );
    // 74 bytes per chunk digest plus a fixed part: the size cost the docs state.
    let big = vec![1u8; 6 * CS as usize];
    let five = index_of(&big[..5 * CS as usize], IndexFormat::Raw, "t");
    let six = index_of(&big, IndexFormat::Raw, "t");
    assert_eq!(six.to_bytes().len() - five.to_bytes().len(), 74);
    // The chunk digests verify the data through the shared ChunkIndex type.
    let ci = idx.chunk_index();
    ci.verify_chunk(1, &data[CS as usize..2 * CS as usize])
        .unwrap();
}

#[test]
fn non_canonical_and_foreign_documents_are_refused() {
    let (_, idx) = raw();
    let pretty = serde_json::to_vec_pretty(&idx).unwrap();
    let e = LayerIndex::parse(&pretty, "t").unwrap_err().to_string();
    assert!(e.contains("canonical"), "{e}");
    let mut v: serde_json::Value = serde_json::from_slice(&idx.to_bytes()).unwrap();
    v["extra"] = 1.into();
    assert!(LayerIndex::parse(&serde_json::to_vec(&v).unwrap(), "t").is_err());
    let mut other = idx.clone();
    other.media_type = "application/vnd.example.chunks+json".into();
    let e = LayerIndex::parse(&other.to_bytes(), "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("mediaType"), "{e}");
}

#[test]
fn hostile_indexes_are_refused() {
    let (_, idx) = raw();
    // Wrong chunk count.
    let mut short = idx.clone();
    short.chunks.pop();
    assert!(LayerIndex::parse(&short.to_bytes(), "t").is_err());
    let mut long = idx.clone();
    long.chunks.push(Digest::of(b""));
    assert!(LayerIndex::parse(&long.to_bytes(), "t").is_err());
    // Bad chunk sizes: not a power of two, too small, too large.
    for cs in [3 << 20, 4096, 1 << 40] {
        let mut b = idx.clone();
        b.chunk_size = cs;
        let e = LayerIndex::parse(&b.to_bytes(), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("chunk size"), "{cs}: {e}");
    }
    // A huge claimed size with few chunks.
    let mut huge = idx.clone();
    huge.layer.size = u64::MAX;
    assert!(LayerIndex::parse(&huge.to_bytes(), "t").is_err());
    // Oversize blobs are refused before parsing.
    let big = vec![b' '; MAX_INDEX_BLOB as usize + 1];
    assert!(matches!(
        LayerIndex::parse(&big, "t"),
        Err(Error::TooLarge { .. })
    ));
    // Files outside the blob, overlapping, or on a raw layer.
    let mut files = idx.clone();
    files.files.push(FileEntry {
        mode: 0o644,
        offset: 512,
        path: "x".into(),
        size: 10,
    });
    assert!(
        LayerIndex::parse(&files.to_bytes(), "t").is_err(),
        "raw with files"
    );
    files.format = IndexFormat::Tar;
    assert!(LayerIndex::parse(&files.to_bytes(), "t").is_ok());
    files.files[0].size = idx.layer.size;
    assert!(
        LayerIndex::parse(&files.to_bytes(), "t").is_err(),
        "past the end"
    );
    files.files[0].size = 10;
    files.files.push(FileEntry {
        mode: 0o644,
        offset: 512,
        path: "y".into(),
        size: 1,
    });
    assert!(
        LayerIndex::parse(&files.to_bytes(), "t").is_err(),
        "overlap"
    );
}

#[test]
fn tar_file_offsets_hash_to_the_files() {
    let weights: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 255) as u8).collect();
    let mut b = ::tar::Builder::new(Vec::new());
    for (path, data) in [
        ("README.md", &b"read me"[..]),
        ("w/model.bin", &weights[..]),
    ] {
        let mut h = ::tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let idx = index_of(
        &tar,
        IndexFormat::Tar,
        "application/vnd.cncf.model.weight.v1.tar",
    );
    assert_eq!(idx.format, IndexFormat::Tar);
    let f = idx.file("w/model.bin").unwrap();
    let at = f.offset as usize;
    assert_eq!(
        Digest::of(&tar[at..at + f.size as usize]),
        Digest::of(&weights)
    );
    assert_eq!(LayerIndex::parse(&idx.to_bytes(), "t").unwrap(), idx);
    // Not a tar: the indexer says so instead of inventing offsets.
    let mut ix = Indexer::new(CS, IndexFormat::Tar);
    ix.update(&[7u8; 4096]);
    let e = ix
        .finish(LayerRef {
            digest: Digest::of(&[7u8; 4096]),
            media_type: "x".into(),
            size: 4096,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("tar"), "{e}");
}

#[test]
fn compressed_layers_get_no_index_format() {
    assert_eq!(
        IndexFormat::for_media_type("application/vnd.cncf.model.weight.v1.tar+gzip"),
        None
    );
    assert_eq!(
        IndexFormat::for_media_type("application/vnd.cncf.model.weight.v1.tar+zstd"),
        None
    );
    assert_eq!(
        IndexFormat::for_media_type("application/vnd.docker.ai.gguf.v3"),
        Some(IndexFormat::Raw)
    );
    assert_eq!(
        IndexFormat::for_media_type("application/vnd.oci.image.layer.v1.tar"),
        Some(IndexFormat::Tar)
    );
    assert_eq!(DEFAULT_CHUNK_SIZE, 4 << 20);
}

#[test]
fn trust_verdicts_per_layer() {
    use crate::manifest::Manifest;
    use trust::{Binding, assess};
    let (data, idx) = raw();
    let idx_d = Digest::of(&idx.to_bytes());
    let mut layer = Descriptor::new(&idx.layer.media_type, Digest::of(&data), data.len() as u64);
    let cfg = Descriptor::new(
        "application/vnd.cncf.model.config.v1+json",
        Digest::of(b"c"),
        1,
    );
    let plain = Manifest::model(media::Family::Cncf, cfg.clone(), vec![layer.clone()]);
    let have = vec![(idx_d.clone(), idx.clone())];
    // Linked only by a referrer: unbound, unless pinned.
    assert_eq!(assess(&plain, &have, &[])[0].binding, Binding::Unbound);
    assert_eq!(
        assess(&plain, &have, std::slice::from_ref(&idx_d))[0].binding,
        Binding::Pinned
    );
    assert_eq!(assess(&plain, &[], &[])[0].binding, Binding::None);
    // Named by the layer annotation: bound.
    layer
        .annotations
        .insert(media::ANNOTATION_CHUNKS_DIGEST.into(), idx_d.to_string());
    let bound = Manifest::model(media::Family::Cncf, cfg.clone(), vec![layer.clone()]);
    let v = assess(&bound, &have, &[]);
    assert_eq!(
        (v[0].binding, v[0].index.clone()),
        (Binding::Bound, Some(idx_d.clone()))
    );
    // An index for other bytes never counts, whatever the annotation says.
    let mut wrong = idx.clone();
    wrong.layer.digest = Digest::of(b"other");
    let v = assess(
        &bound,
        &[(idx_d.clone(), wrong)],
        std::slice::from_ref(&idx_d),
    );
    assert_eq!(v[0].binding, Binding::None);
    // Compressed layers are eager whatever exists.
    let mut gz = layer.clone();
    gz.media_type = "application/vnd.cncf.model.weight.v1.tar+gzip".into();
    let m = Manifest::model(media::Family::Cncf, cfg, vec![gz]);
    assert_eq!(assess(&m, &have, &[])[0].binding, Binding::None);
    assert!(Binding::Bound.lazy_allowed(false));
    assert!(Binding::Pinned.lazy_allowed(false));
    assert!(!Binding::Unbound.lazy_allowed(false));
    assert!(Binding::Unbound.lazy_allowed(true));
    assert!(!Binding::None.lazy_allowed(true));
}

#[test]
fn threaded_indexer_gives_the_inline_result() {
    let mut b = ::tar::Builder::new(Vec::new());
    let data: Vec<u8> = (0..3_500_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let mut h = ::tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o755);
    b.append_data(&mut h, "big.bin", &data[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let layer = LayerRef {
        digest: Digest::of(&tar),
        media_type: "application/vnd.cncf.model.weight.v1.tar".into(),
        size: tar.len() as u64,
    };
    let mut inline = Indexer::new(CS, IndexFormat::Tar);
    let mut threaded = Indexer::threaded(CS, IndexFormat::Tar);
    for p in tar.chunks(8192) {
        inline.update(p);
    }
    // Slices larger and smaller than a batch, across batch boundaries.
    for p in tar.chunks(1_500_007) {
        threaded.update(p);
    }
    assert_eq!(threaded.len(), tar.len() as u64);
    let (a, b) = (
        inline.finish(layer.clone()).unwrap(),
        threaded.finish(layer).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(a.files[0].mode, 0o755);
    // A short feed is refused, threaded or not.
    let mut short = Indexer::threaded(CS, IndexFormat::Raw);
    short.update(&tar[..100]);
    assert!(
        short
            .finish(LayerRef {
                digest: Digest::of(&tar),
                media_type: "x".into(),
                size: tar.len() as u64,
            })
            .is_err()
    );
}
