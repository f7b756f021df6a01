//! Extraction tests, including crafted malicious layers.

use super::*;
use crate::manifest::Descriptor;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

fn blob_file(dir: &Path, bytes: &[u8]) -> PathBuf {
    let p = dir.join(format!("blob-{}", Digest::of(bytes).short()));
    fs::write(&p, bytes).unwrap();
    p
}

fn raw_layer(path: &str, bytes: &[u8], mode: u32) -> Descriptor {
    let mut d = Descriptor::new(
        "application/vnd.cncf.model.weight.v1.raw",
        Digest::of(bytes),
        bytes.len() as u64,
    );
    d.annotations
        .insert("org.cncf.model.filepath".into(), path.into());
    let md = crate::config::FileMetadata {
        name: "x".into(),
        mode,
        uid: 0,
        gid: 0,
        size: bytes.len() as u64,
        mtime: "2020-01-02T03:04:05Z".into(),
        typeflag: 0,
    };
    d.annotations.insert(
        "org.cncf.model.file.metadata+json".into(),
        md.to_annotation(),
    );
    d
}

fn tar_layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> (Descriptor, Vec<u8>) {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    let bytes = b.into_inner().unwrap();
    let mut d = Descriptor::new(
        "application/vnd.cncf.model.weight.v1.tar",
        Digest::of(&bytes),
        bytes.len() as u64,
    );
    d.annotations
        .insert("org.cncf.model.filepath".into(), "dir".into());
    (d, bytes)
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h
}

/// Writes raw name bytes so the tar crate does not refuse to build the malicious entry.
fn evil_entry(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = header(kind, data.len() as u64);
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[test]
fn raw_layer_restores_file_mode_and_mtime_then_skips_identical() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let bytes = b"weights!";
    let layer = raw_layer("nested/w.bin", bytes, 0o755);
    let blob = blob_file(work.path(), bytes);
    let s = extract_layer(&layer, &blob, &out, &ExtractOptions::default()).unwrap();
    assert_eq!(s.files_written, 1);
    let dest = out.join("nested/w.bin");
    assert_eq!(fs::read(&dest).unwrap(), bytes);
    let m = fs::metadata(&dest).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        m.modified().unwrap(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_934_245)
    );
    let again = extract_layer(&layer, &blob, &out, &ExtractOptions::default()).unwrap();
    if xattr::SUPPORTED_PLATFORM && xattr::get(&dest, XATTR_DIGEST).ok().flatten().is_some() {
        assert_eq!(again.files_skipped, 1);
    }
    // A modified file is rewritten.
    fs::write(&dest, b"tampered").unwrap();
    let third = extract_layer(&layer, &blob, &out, &ExtractOptions::default()).unwrap();
    assert_eq!(third.files_written, 1);
    assert_eq!(fs::read(&dest).unwrap(), bytes);
}

#[test]
fn corrupt_raw_blob_is_refused_and_nothing_written() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let layer = raw_layer("w.bin", b"right bytes", 0o644);
    let blob = blob_file(work.path(), b"wrong bytes");
    let err = extract_layer(&layer, &blob, &out, &ExtractOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("digest mismatch for layer"),
        "{err}"
    );
    assert!(!out.join("w.bin").exists());
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        0,
        "temp file left behind"
    );
}

#[test]
fn raw_blobs_longer_or_shorter_than_declared_are_refused_and_large_ones_copy_exactly() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let right = (0..(9u32 << 20) + 777)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>();
    let layer = raw_layer("big.bin", &right, 0o644);
    // Longer: the right bytes plus one more, through the kernel copy.
    let mut longer = right.clone();
    longer.push(1);
    let blob = blob_file(work.path(), &longer);
    let err = extract_layer(&layer, &blob, &out, &ExtractOptions::default()).unwrap_err();
    assert!(err.to_string().contains("size"), "{err}");
    // Shorter.
    let blob = blob_file(work.path(), &right[..right.len() - 5]);
    assert!(extract_layer(&layer, &blob, &out, &ExtractOptions::default()).is_err());
    assert!(!out.join("big.bin").exists());
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        0,
        "temp file left behind"
    );
    // Right: copied in several kernel segments, byte for byte.
    let blob = blob_file(work.path(), &right);
    let st = extract_layer(&layer, &blob, &out, &ExtractOptions::default()).unwrap();
    assert_eq!(st.bytes_written, right.len() as u64);
    assert_eq!(fs::read(out.join("big.bin")).unwrap(), right);
}

#[test]
fn raw_layer_with_escaping_filepath_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    for evil in ["../escape.bin", "/tmp/abs.bin", "a/../../escape.bin"] {
        let layer = raw_layer(evil, b"x", 0o644);
        let blob = blob_file(work.path(), b"x");
        let err = extract_layer(&layer, &blob, &out, &ExtractOptions::default()).unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{evil}: {err}");
        assert!(
            err.to_string().contains(&layer.digest.to_string()),
            "error names the layer: {err}"
        );
    }
    assert!(!work.path().join("escape.bin").exists());
}

#[test]
fn malicious_tar_entries_are_refused() {
    type Build = Box<dyn FnOnce(&mut tar::Builder<Vec<u8>>)>;
    let cases: Vec<(&str, Build)> = vec![
        (
            "dotdot",
            Box::new(|b| evil_entry(b, tar::EntryType::Regular, "../evil", None, b"x")),
        ),
        (
            "absolute",
            Box::new(|b| evil_entry(b, tar::EntryType::Regular, "/tmp/evil", None, b"x")),
        ),
        (
            "symlink escape",
            Box::new(|b| evil_entry(b, tar::EntryType::Symlink, "link", Some("../../etc"), b"")),
        ),
        (
            "absolute symlink",
            Box::new(|b| evil_entry(b, tar::EntryType::Symlink, "link", Some("/etc/passwd"), b"")),
        ),
        (
            "write through symlink",
            Box::new(|b| {
                evil_entry(b, tar::EntryType::Symlink, "dir", Some("."), b"");
                evil_entry(b, tar::EntryType::Regular, "dir/x", None, b"x");
            }),
        ),
        (
            "hardlink escape",
            Box::new(|b| evil_entry(b, tar::EntryType::Link, "hl", Some("../../etc/passwd"), b"")),
        ),
        (
            "char device",
            Box::new(|b| evil_entry(b, tar::EntryType::Char, "dev", None, b"")),
        ),
        (
            "block device",
            Box::new(|b| evil_entry(b, tar::EntryType::Block, "blk", None, b"")),
        ),
        (
            "fifo",
            Box::new(|b| evil_entry(b, tar::EntryType::Fifo, "fifo", None, b"")),
        ),
    ];
    for (what, build) in cases {
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("a/b/out");
        fs::create_dir_all(&out).unwrap();
        let (layer, bytes) = tar_layer(build);
        let blob = blob_file(work.path(), &bytes);
        let err = extract_layer(&layer, &blob, &out, &ExtractOptions::default()).unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{what}: {err}");
        assert!(
            err.to_string().contains(&layer.digest.to_string()),
            "{what}: error names the layer: {err}"
        );
        assert!(
            !work.path().join("a/evil").exists() && !work.path().join("evil").exists(),
            "{what}"
        );
    }
}

#[test]
fn benign_tar_with_dirs_links_and_gzip_extracts() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0);
    b.append_data(&mut h, "d/", &b""[..]).unwrap();
    let mut h = header(tar::EntryType::Regular, 5);
    h.set_mode(0o600);
    b.append_data(&mut h, "d/f.txt", &b"hello"[..]).unwrap();
    let mut h = header(tar::EntryType::Symlink, 0);
    b.append_link(&mut h, "d/link", "f.txt").unwrap();
    let mut h = header(tar::EntryType::Link, 0);
    b.append_link(&mut h, "d/hard", "d/f.txt").unwrap();
    let tar_bytes = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    let bytes = gz.finish().unwrap();
    let mut layer = Descriptor::new(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Digest::of(&bytes),
        bytes.len() as u64,
    );
    layer
        .annotations
        .insert("org.opencontainers.image.title".into(), "d".into());
    layer
        .annotations
        .insert("io.deis.oras.content.unpack".into(), "true".into());
    let blob = blob_file(work.path(), &bytes);
    extract_layer(&layer, &blob, &out, &ExtractOptions::default()).unwrap();
    assert_eq!(fs::read(out.join("d/f.txt")).unwrap(), b"hello");
    assert_eq!(fs::read(out.join("d/link")).unwrap(), b"hello");
    assert_eq!(fs::read(out.join("d/hard")).unwrap(), b"hello");
    assert_eq!(
        fs::metadata(out.join("d/f.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[derive(Default)]
struct Counted(std::sync::atomic::AtomicU64);

impl crate::registry::Progress for Counted {
    fn advance(&self, bytes: u64) {
        self.0
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn store_round_trip_reproduces_files() {
    use crate::pack::{PackFile, PackOptions, pack_to_store};
    for format in [
        LayerFormat::Raw,
        LayerFormat::Tar,
        LayerFormat::TarGzip,
        LayerFormat::TarZstd,
    ] {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("a/b")).unwrap();
        fs::write(src.path().join("a/b/w.bin"), vec![3u8; 70_000]).unwrap();
        fs::write(src.path().join("run.sh"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let files: Vec<PackFile> = [
            ("a/b/w.bin", crate::media::LayerKind::Weight),
            ("run.sh", crate::media::LayerKind::Code),
        ]
        .iter()
        .map(|(rel, kind)| {
            let p = src.path().join(rel);
            let m = fs::metadata(&p).unwrap();
            PackFile {
                rel_path: rel.to_string(),
                abs_path: p,
                kind: *kind,
                size: m.len(),
                mode: m.permissions().mode(),
                untested: false,
            }
        })
        .collect();
        let s = tempfile::tempdir().unwrap();
        let store = Store::open(s.path()).unwrap();
        let opts = PackOptions {
            format,
            ..Default::default()
        };
        let packed = pack_to_store(
            &store,
            &files,
            Default::default(),
            Default::default(),
            Default::default(),
            &opts,
            &|_| {},
        )
        .unwrap();
        let out = tempfile::tempdir().unwrap();
        // Progress covers every layer byte, on a first extract and on one
        // that skips what is already there.
        let counted = Arc::new(Counted::default());
        let with_progress = ExtractOptions {
            progress: Some(counted.clone()),
            ..Default::default()
        };
        let layer_bytes: u64 = packed.manifest.layers.iter().map(|l| l.size).sum();
        for round in 1..=2u64 {
            extract_from_store(&store, &packed.manifest, out.path(), &with_progress).unwrap();
            assert_eq!(
                counted.0.load(std::sync::atomic::Ordering::Relaxed),
                round * layer_bytes,
                "{format}, extract {round}"
            );
        }
        for f in &files {
            assert_eq!(
                fs::read(out.path().join(&f.rel_path)).unwrap(),
                fs::read(&f.abs_path).unwrap(),
                "{format} {}",
                f.rel_path
            );
        }
        assert_eq!(
            fs::metadata(out.path().join("run.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755,
            "{format}"
        );
        // --reflink always on a tar's files: refused before the output exists.
        let never_made = out.path().join("always");
        let always = ExtractOptions {
            reflink: crate::kcopy::Reflink::Always,
            ..Default::default()
        };
        let res = extract_from_store(&store, &packed.manifest, &never_made, &always);
        if format == LayerFormat::Raw {
            // This filesystem may or may not share extents; either way the
            // answer is a clone or a clear refusal, never a quiet copy.
            if let Err(e) = res {
                assert!(e.to_string().contains("cannot share extents"), "{e}");
            }
        } else {
            let e = res.unwrap_err().to_string();
            assert!(e.contains("--reflink always") && e.contains("tar"), "{e}");
            assert!(
                !never_made.exists(),
                "{format}: a refused extract made its output"
            );
        }
    }
}

#[test]
fn an_unannotated_layer_whose_type_names_no_file_is_refused_naming_it() {
    // DMR's generic `model.file` type without a filepath: no name to derive.
    let d = Descriptor::new(
        "application/vnd.docker.ai.model.file",
        crate::digest::Digest::of(b"x"),
        1,
    );
    let err = raw_rel_path(&d).unwrap_err().to_string();
    assert!(
        err.contains("application/vnd.docker.ai.model.file") && err.contains("no file name"),
        "{err}"
    );
}
