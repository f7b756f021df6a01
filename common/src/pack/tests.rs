use super::*;
use std::fs;
use std::io::Read;
use std::path::Path;

fn files_in(dir: &Path) -> Vec<PackFile> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for (rel, kind) in [
        ("config.json", LayerKind::WeightConfig),
        ("model.safetensors", LayerKind::Weight),
        ("sub/run.sh", LayerKind::Code),
    ] {
        let p = dir.join(rel);
        let m = fs::metadata(&p).unwrap();
        out.push(PackFile {
            rel_path: rel.into(),
            abs_path: p,
            kind,
            size: m.len(),
            mode: m.permissions().mode(),
            untested: false,
        });
    }
    out
}

fn sample(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("config.json"), br#"{"model_type":"x"}"#).unwrap();
    fs::write(dir.join("model.safetensors"), vec![7u8; 300_000]).unwrap();
    fs::write(dir.join("sub/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(dir.join("sub/run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
}

fn build(store: &Store, src: &Path, format: LayerFormat) -> Packed {
    let opts = PackOptions {
        format,
        ..Default::default()
    };
    pack_to_store(
        store,
        &files_in(src),
        Default::default(),
        Default::default(),
        Default::default(),
        &opts,
        &|_| {},
    )
    .unwrap()
}

#[test]
fn same_content_in_different_places_gives_same_manifest_digest() {
    for format in [
        LayerFormat::Raw,
        LayerFormat::Tar,
        LayerFormat::TarGzip,
        LayerFormat::TarZstd,
    ] {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        sample(a.path());
        sample(b.path());
        // Different mtimes and modes that normalise the same must not matter.
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options()
            .write(true)
            .open(b.path().join("config.json"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pa = build(&Store::open(sa.path()).unwrap(), a.path(), format);
        let pb = build(&Store::open(sb.path()).unwrap(), b.path(), format);
        assert_eq!(pa.manifest_digest, pb.manifest_digest, "{format}");
        assert_eq!(pa.manifest.layers.len(), 3);
    }
}

#[test]
fn source_mtimes_are_recorded_with_nanoseconds_when_asked() {
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_123, 456_789_000);
    for f in ["config.json", "model.safetensors"] {
        fs::File::options()
            .write(true)
            .open(src.path().join(f))
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
    let s = tempfile::tempdir().unwrap();
    for format in [LayerFormat::Raw, LayerFormat::Tar] {
        let opts = PackOptions {
            format,
            mtime: None,
            ..Default::default()
        };
        let p = pack_to_store(
            &Store::open(s.path()).unwrap(),
            &files_in(src.path()),
            Default::default(),
            Default::default(),
            Default::default(),
            &opts,
            &|_| {},
        )
        .unwrap();
        let md = p.manifest.layers[1].file_metadata().unwrap();
        assert_eq!(md.mtime, "2023-11-14T22:15:23.456789Z", "{format}");
        assert_eq!(md.mtime_time(), Some(when));
    }
}

#[test]
fn raw_layers_are_the_file_and_carry_annotations() {
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    let s = tempfile::tempdir().unwrap();
    let store = Store::open(s.path()).unwrap();
    let p = build(&store, src.path(), LayerFormat::Raw);
    let l = &p.manifest.layers[1];
    assert_eq!(l.media_type, "application/vnd.cncf.model.weight.v1.raw");
    assert_eq!(
        l.digest,
        crate::digest::hash_file(&src.path().join("model.safetensors"))
            .unwrap()
            .0
    );
    assert_eq!(
        l.annotations["org.cncf.model.filepath"],
        "model.safetensors"
    );
    assert_eq!(
        l.annotations["org.opencontainers.image.title"],
        "model.safetensors"
    );
    let md = l.file_metadata().unwrap();
    assert_eq!(
        (md.mode, md.size, md.mtime.as_str()),
        (0o644, 300_000, "1970-01-01T00:00:00Z")
    );
    assert_eq!(p.manifest.layers[2].file_metadata().unwrap().mode, 0o755);
    let cfg = crate::config::ModelConfig::parse(&p.config_bytes, "c").unwrap();
    assert_eq!(
        cfg.modelfs.diff_ids,
        p.manifest
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn compressed_layers_have_uncompressed_diff_ids_and_canonical_tar() {
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    let s = tempfile::tempdir().unwrap();
    let store = Store::open(s.path()).unwrap();
    let p = build(&store, src.path(), LayerFormat::TarGzip);
    let cfg = crate::config::ModelConfig::parse(&p.config_bytes, "c").unwrap();
    let l = &p.manifest.layers[2];
    assert_eq!(l.media_type, "application/vnd.cncf.model.code.v1.tar+gzip");
    // No title on a tar layer: `oras pull` would write the archive under the file's name.
    assert!(!l.annotations.contains_key("org.opencontainers.image.title"));
    assert_eq!(l.annotations["org.cncf.model.filepath"], "sub/run.sh");
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(store.open_blob(&l.digest).unwrap())
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(Digest::of(&tar_bytes), cfg.modelfs.diff_ids[2]);
    assert_ne!(l.digest, cfg.modelfs.diff_ids[2]);
    let mut ar = tar::Archive::new(&tar_bytes[..]);
    let entries: Vec<_> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().header().clone())
        .collect();
    assert_eq!(entries.len(), 1);
    let h = &entries[0];
    assert_eq!(h.path().unwrap().to_str().unwrap(), "sub/run.sh");
    assert_eq!(
        (
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.mtime().unwrap()
        ),
        (0o755, 0, 0, 0)
    );
    assert_eq!(h.username().unwrap(), Some(""));
}

#[test]
fn unchanged_files_are_not_read_again() {
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    let s = tempfile::tempdir().unwrap();
    let store = Store::open(s.path()).unwrap();
    let first = build(&store, src.path(), LayerFormat::Raw);
    assert!(first.bytes_read >= 300_000);
    let second = build(&store, src.path(), LayerFormat::Raw);
    assert_eq!(second.bytes_read, 0);
    assert_eq!(second.layers_cached, 3);
    assert_eq!(first.manifest_digest, second.manifest_digest);
    // A changed file is re-read even with the same size.
    fs::write(src.path().join("config.json"), br#"{"model_type":"y"}"#).unwrap();
    let third = build(&store, src.path(), LayerFormat::Raw);
    assert_eq!(third.layers_cached, 2);
    assert_ne!(third.manifest_digest, first.manifest_digest);
}

#[test]
fn duplicate_paths_are_refused() {
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    let mut f = files_in(src.path());
    f.push(f[0].clone());
    assert!(check_unique_paths(&f).is_err());
}

#[test]
fn raw_and_tar_layers_carry_a_bound_index_computed_while_writing() {
    for format in [LayerFormat::Raw, LayerFormat::Tar] {
        let src = tempfile::tempdir().unwrap();
        sample(src.path());
        let s = tempfile::tempdir().unwrap();
        let store = Store::open(s.path()).unwrap();
        let opts = PackOptions {
            format,
            chunk_size: Some(crate::chunk::MIN_CHUNK_SIZE),
            ..Default::default()
        };
        let p = pack_to_store(
            &store,
            &files_in(src.path()),
            Default::default(),
            Default::default(),
            Default::default(),
            &opts,
            &|_| {},
        )
        .unwrap();
        let l = &p.manifest.layers[1];
        let idx_digest: Digest = l.annotations[media::ANNOTATION_CHUNKS_DIGEST]
            .parse()
            .unwrap();
        let idx = crate::chunkindex::LayerIndex::parse(&store.read_blob(&idx_digest).unwrap(), "t")
            .unwrap();
        idx.describes(l).unwrap();
        let blob = fs::read(store.blob_path(&l.digest)).unwrap();
        for i in 0..idx.chunks.len() {
            let (off, len) = idx.chunk_index().range(i);
            idx.chunk_index()
                .verify_chunk(i, &blob[off as usize..(off + len) as usize])
                .unwrap();
        }
        if format == LayerFormat::Tar {
            // The file's data at the recorded offset is the file.
            let f = idx.file("model.safetensors").unwrap();
            let data = &blob[f.offset as usize..(f.offset + f.size) as usize];
            assert_eq!(
                data,
                &fs::read(src.path().join("model.safetensors")).unwrap()[..]
            );
            assert_eq!(f.mode, 0o644);
        } else {
            assert!(idx.files.is_empty());
        }
        // The referrer names the model and lists one index per layer.
        let (rd, rb) = p.referrer.clone().unwrap();
        assert_eq!(rd, Digest::of(&rb));
        let r = crate::chunkindex::referrer::parse(&rb, &p.manifest_digest, "r").unwrap();
        assert_eq!(r.layers.len(), 3);
        assert!(store.has_blob(&rd));
        // A no-op rebuild (all cache hits) gives the same manifest and referrer.
        let again = pack_to_store(
            &store,
            &files_in(src.path()),
            Default::default(),
            Default::default(),
            Default::default(),
            &opts,
            &|_| {},
        )
        .unwrap();
        assert_eq!(again.layers_cached, 3);
        assert_eq!(again.manifest_digest, p.manifest_digest);
        assert_eq!(again.referrer.unwrap().0, rd);
    }
}

#[test]
fn compressed_layers_and_no_chunk_index_have_no_annotation() {
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    let s = tempfile::tempdir().unwrap();
    let store = Store::open(s.path()).unwrap();
    let p = build(&store, src.path(), LayerFormat::TarZstd);
    assert!(p.referrer.is_none());
    assert!(
        p.manifest
            .layers
            .iter()
            .all(|l| !l.annotations.contains_key(media::ANNOTATION_CHUNKS_DIGEST))
    );
    let off = PackOptions {
        chunk_size: None,
        ..Default::default()
    };
    let p = pack_to_store(
        &store,
        &files_in(src.path()),
        Default::default(),
        Default::default(),
        Default::default(),
        &off,
        &|_| {},
    )
    .unwrap();
    assert!(p.referrer.is_none());
    let with = build(&store, src.path(), LayerFormat::Raw);
    assert!(with.referrer.is_some());
    assert_ne!(with.manifest_digest, p.manifest_digest);
}
