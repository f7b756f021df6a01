//! The filesystem through the kernel: mounted for real (root and /dev/fuse
//! needed; skipped with a message otherwise), read with std::fs.

use std::sync::Arc;

use modelpack_common::cas::source::Fault;
use modelpack_common::cas::{BlobSource, Cas, MemoryBlob, SparseBlob};
use modelpack_common::chunk::ChunkHasher;

use super::*;

const CS: u64 = 64 << 10;

fn can_mount() -> bool {
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipping: mounting FUSE needs root and /dev/fuse");
        return false;
    }
    true
}

fn data(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn lazy(cas: &Cas, bytes: &[u8]) -> (Arc<MemoryBlob>, Arc<SparseBlob>) {
    let mut h = ChunkHasher::new(CS);
    h.update(bytes);
    let src = Arc::new(MemoryBlob::new(bytes.to_vec()));
    let blob = SparseBlob::open(cas, h.finish(), src.clone()).unwrap();
    (src, Arc::new(blob))
}

/// `uname -r` is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let r = rustix::system::uname();
    let release = r.release().to_string_lossy().to_string();
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

#[test]
fn a_lazy_view_reads_verified_bytes_and_refuses_a_corrupt_chunk_with_eio() {
    if !can_mount() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path().join("store")).unwrap();
    let weights = data((CS * 6 + 100) as usize, 1);
    let config = br#"{"model_type":"llama"}"#.to_vec();
    let (wsrc, wblob) = lazy(&cas, &weights);
    let (csrc, cblob) = lazy(&cas, &config);
    let complete_path = d.path().join("complete.txt");
    std::fs::write(&complete_path, b"on disk").unwrap();
    let files = vec![
        FsFile {
            path: "weights/model.safetensors".into(),
            backing: Backing::Lazy(wblob.clone()),
            offset: 0,
            size: weights.len() as u64,
            mode: 0o444,
        },
        FsFile {
            path: "config.json".into(),
            backing: Backing::Lazy(cblob),
            offset: 0,
            size: config.len() as u64,
            mode: 0o444,
        },
        FsFile {
            path: "weights/README".into(),
            backing: Backing::Complete(Arc::new(std::fs::File::open(&complete_path).unwrap())),
            offset: 3,
            size: 4,
            mode: 0o444,
        },
    ];
    let fs = ModelFs::new(
        files,
        SystemTime::UNIX_EPOCH,
        FsOptions::default(),
        rt.handle().clone(),
    )
    .unwrap();
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = match mount(fs, &mnt) {
        Ok(m) => m,
        // A container without CAP_SYS_ADMIN has /dev/fuse but may not mount.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ENODEV)
            ) =>
        {
            eprintln!("skipping: this machine does not allow FUSE mounts ({e})");
            return;
        }
        Err(e) => panic!("mount: {e}"),
    };

    // Mounting fetched nothing; listing fetches nothing either.
    let mut names: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "weights"]);
    let meta = std::fs::metadata(mnt.join("weights/model.safetensors")).unwrap();
    assert_eq!(meta.len(), weights.len() as u64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    assert_eq!(wsrc.requests() + csrc.requests(), 0, "attach is lazy");

    assert_eq!(std::fs::read(mnt.join("config.json")).unwrap(), config);
    assert_eq!(std::fs::read(mnt.join("weights/README")).unwrap(), b"disk");
    assert!(
        std::fs::write(mnt.join("config.json"), b"x").is_err(),
        "read-only"
    );

    // A chunk corrupted at the source: exactly the reads of it fail with EIO.
    wsrc.set_fault(Fault::Corrupt(CS * 3 + 5));
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(mnt.join("weights/model.safetensors")).unwrap();
    let mut buf = vec![0u8; 100];
    f.read_exact_at(&mut buf, 10).unwrap();
    assert_eq!(buf, &weights[10..110]);
    let err = f.read_exact_at(&mut buf, CS * 3).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    f.read_exact_at(&mut buf, CS * 5).unwrap();
    assert_eq!(buf, &weights[(CS * 5) as usize..(CS * 5) as usize + 100]);
    // Once the source serves good bytes the chunk is fetched again and read.
    wsrc.set_fault(Fault::None);
    let whole = std::fs::read(mnt.join("weights/model.safetensors")).unwrap();
    assert_eq!(whole, weights);
    // The last chunk may have landed through readahead, whose task promotes
    // the blob just after the read that found the chunk returned.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !wblob.is_complete() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(wblob.is_complete(), "the last chunk promoted the blob");
    assert!(cas.has(wsrc.digest()));
    assert!(mounted.stats.read_errors.load(Ordering::Relaxed) >= 1);
    drop(f);

    // A complete whole-blob file is handed to the kernel (FUSE passthrough)
    // where it allows it: its reads no longer reach us.
    if kernel_at_least(6, 9) {
        assert!(
            mounted.stats.passthrough.load(Ordering::Relaxed),
            "a ≥ 6.9 kernel mounted by root accepts FUSE passthrough"
        );
    }
    if mounted.stats.passthrough.load(Ordering::Relaxed) {
        let opens = mounted.stats.passthrough_opens.load(Ordering::Relaxed);
        let reads = mounted.stats.reads.load(Ordering::Relaxed);
        assert_eq!(
            std::fs::read(mnt.join("weights/model.safetensors")).unwrap(),
            weights
        );
        assert_eq!(
            mounted.stats.passthrough_opens.load(Ordering::Relaxed),
            opens + 1
        );
        assert_eq!(
            mounted.stats.reads.load(Ordering::Relaxed),
            reads,
            "read by the kernel"
        );
        // A file at an offset inside its blob is never passed through.
        assert_eq!(std::fs::read(mnt.join("weights/README")).unwrap(), b"disk");
        assert_eq!(
            mounted.stats.passthrough_opens.load(Ordering::Relaxed),
            opens + 1
        );
    }
    mounted.unmount().unwrap();
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0, "unmounted");
}

#[test]
fn prefetch_completes_small_files_first_and_every_blob() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let big = data((CS * 40) as usize, 7);
    let small = data(300, 9);
    let (bsrc, bblob) = lazy(&cas, &big);
    let (_ssrc, sblob) = lazy(&cas, &small);
    let files = vec![
        FsFile {
            path: "a-big.bin".into(),
            backing: Backing::Lazy(bblob.clone()),
            offset: 0,
            size: big.len() as u64,
            mode: 0o444,
        },
        FsFile {
            path: "z-small.json".into(),
            backing: Backing::Lazy(sblob.clone()),
            offset: 0,
            size: 300,
            mode: 0o444,
        },
    ];
    let done = rt.block_on(prefetch(
        files,
        Prefetch {
            concurrency: 1,
            bytes_per_sec: 0,
            ..Prefetch::default()
        },
    ));
    assert_eq!(done, 2);
    assert!(bblob.is_complete() && sblob.is_complete());
    assert_eq!(
        bsrc.requests(),
        10,
        "one ranged read per group of four chunks"
    );
}

#[test]
fn prefetch_skips_a_bad_chunk_keeps_going_and_honours_the_bandwidth_limit() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let big = data((CS * 8) as usize, 3);
    let (src, blob) = lazy(&cas, &big);
    let file = FsFile {
        path: "w.bin".into(),
        backing: Backing::Lazy(blob.clone()),
        offset: 0,
        size: big.len() as u64,
        mode: 0o444,
    };
    src.set_fault(Fault::Corrupt(CS * 2 + 1));
    let done = rt.block_on(prefetch(vec![file.clone()], Prefetch::default()));
    assert_eq!(done, 0, "a blob with a refused chunk is not complete");
    assert_eq!(
        blob.present_chunks(),
        7,
        "every other chunk was still fetched"
    );
    // Good bytes again, and a limit of 4 chunks per second: the one missing
    // chunk plus nothing else costs at least a quarter of a second of pacing.
    src.set_fault(Fault::None);
    let t = std::time::Instant::now();
    let done = rt.block_on(prefetch(
        vec![file],
        Prefetch {
            concurrency: 1,
            bytes_per_sec: CS * 4,
            ..Prefetch::default()
        },
    ));
    assert_eq!(done, 1);
    assert!(blob.is_complete());
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(200),
        "paced to the limit ({:?})",
        t.elapsed()
    );
}

#[test]
fn paths_that_collide_are_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    std::fs::write(&p, b"x").unwrap();
    let file = |path: &str| FsFile {
        path: path.into(),
        backing: Backing::Complete(Arc::new(std::fs::File::open(&p).unwrap())),
        offset: 0,
        size: 1,
        mode: 0o444,
    };
    for bad in [
        vec![file("a"), file("a/b")],
        vec![file("a/b"), file("a")],
        vec![file("../x")],
        vec![file("a"), file("a")],
    ] {
        assert!(
            ModelFs::new(
                bad,
                SystemTime::UNIX_EPOCH,
                FsOptions::default(),
                rt.handle().clone()
            )
            .is_err()
        );
    }
}

/// A source that counts the ranged reads it is serving at once.
struct Gauge {
    inner: MemoryBlob,
    now: Arc<std::sync::atomic::AtomicUsize>,
    max: Arc<std::sync::atomic::AtomicUsize>,
}

impl BlobSource for Gauge {
    fn digest(&self) -> &modelpack_common::digest::Digest {
        self.inner.digest()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn describe(&self) -> String {
        "gauge".into()
    }
    fn read_range(
        &self,
        offset: u64,
        len: u64,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = modelpack_common::error::Result<
                        modelpack_common::cas::source::ByteStream,
                    >,
                > + Send
                + '_,
        >,
    > {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            let n = self.now.fetch_add(1, SeqCst) + 1;
            self.max.fetch_max(n, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let r = self.inner.read_range(offset, len).await;
            self.now.fetch_sub(1, SeqCst);
            r
        })
    }
}

fn gauged(cas: &Cas, bytes: &[u8]) -> (Arc<Gauge>, FsFile) {
    gauged_with(cas, bytes, Default::default(), Default::default())
}

fn gauged_with(
    cas: &Cas,
    bytes: &[u8],
    now: Arc<std::sync::atomic::AtomicUsize>,
    max: Arc<std::sync::atomic::AtomicUsize>,
) -> (Arc<Gauge>, FsFile) {
    let mut h = ChunkHasher::new(CS);
    h.update(bytes);
    let src = Arc::new(Gauge {
        inner: MemoryBlob::new(bytes.to_vec()),
        now,
        max,
    });
    let blob = SparseBlob::open(cas, h.finish(), src.clone()).unwrap();
    let file = FsFile {
        path: format!("{}.bin", bytes[0]).into(),
        backing: Backing::Lazy(Arc::new(blob)),
        offset: 0,
        size: bytes.len() as u64,
        mode: 0o444,
    };
    (src, file)
}

#[test]
fn prefetch_keeps_the_next_read_of_a_blob_in_flight_within_the_cap() {
    use std::sync::atomic::Ordering::SeqCst;
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (depth, in_flight, want) in [(1, 4, 1), (2, 4, 2), (3, 2, 2)] {
        let d = tempfile::tempdir().unwrap();
        let cas = Cas::open(d.path()).unwrap();
        let (src, file) = gauged(&cas, &data((CS * 32) as usize, 5));
        let opts = Prefetch {
            concurrency: 1,
            depth,
            in_flight,
            ..Prefetch::default()
        };
        assert_eq!(rt.block_on(prefetch(vec![file], opts)), 1);
        assert_eq!(
            src.max.load(SeqCst),
            want,
            "reads in flight with depth {depth}, cap {in_flight}"
        );
    }
    // Three blobs at once, each allowed two reads, capped at two in all
    // (one gauge counts the reads of every blob).
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let now: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let max: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let files: Vec<FsFile> = (1..=3)
        .map(|seed| {
            gauged_with(
                &cas,
                &data((CS * 32) as usize, seed),
                now.clone(),
                max.clone(),
            )
            .1
        })
        .collect();
    let opts = Prefetch {
        concurrency: 3,
        depth: 2,
        in_flight: 2,
        ..Prefetch::default()
    };
    assert_eq!(rt.block_on(prefetch(files, opts)), 3);
    assert_eq!(max.load(SeqCst), 2, "reads in flight over three blobs");
}
