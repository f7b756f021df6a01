//! The content store's promises, on the in-memory `BlobSource` (no registry):
//! one-pass ingest, verified chunk reads, corrupt chunks refused, one fetch
//! per chunk under concurrency, resume after a cut, promotion, restart.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::source::{Fault, copy_source};
use super::*;
use crate::chunk::index_file;
use crate::kcopy::Reflink;

const CS: u64 = 64 << 10;

fn data(n: usize) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn index_of(bytes: &[u8]) -> crate::chunk::ChunkIndex {
    let mut h = crate::chunk::ChunkHasher::new(CS);
    h.update(bytes);
    h.finish()
}

fn tmp_names(cas: &Cas) -> Vec<String> {
    std::fs::read_dir(cas.tmp_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect()
}

#[test]
fn ingest_hashes_and_chunks_in_one_pass_and_verifies_before_rename() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data(300_000);
    let mut w = cas.ingest(Some(CS)).unwrap();
    for piece in bytes.chunks(10_001) {
        w.write_all(piece).unwrap();
    }
    let got = w
        .commit(Some(&Digest::of(&bytes)), Some(bytes.len() as u64))
        .unwrap();
    assert_eq!(got.digest, Digest::of(&bytes));
    let (_, from_file) = index_file(&cas.blob_path(&got.digest), CS).unwrap();
    assert_eq!(
        got.chunks.unwrap(),
        from_file,
        "stream chunks = file chunks"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cas.blob_path(&got.digest))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o444, "complete blobs are read-only");
    assert!(tmp_names(&cas).is_empty());

    // Wrong digest or size: nothing in blobs/, no debris.
    for (digest, size) in [(Some(Digest::of(b"other")), None), (None, Some(5u64))] {
        let mut w = cas.ingest(None).unwrap();
        w.write_all(b"hello world").unwrap();
        assert!(w.commit(digest.as_ref(), size).is_err());
        assert!(!cas.has(&Digest::of(b"hello world")));
        assert!(tmp_names(&cas).is_empty(), "{:?}", tmp_names(&cas));
    }
}

#[test]
fn an_ingest_in_flight_holds_a_lease_gc_sees() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let mut w = cas.ingest(None).unwrap();
    w.write_all(b"in flight").unwrap();
    let scratch = cas.scratch().unwrap();
    let names = scratch.names();
    assert_eq!(names.len(), 1);
    assert!(is_in_use(&scratch, &names[0]), "a live ingest is locked");
    drop(w);
    assert!(
        scratch.names().is_empty(),
        "a dropped ingest leaves nothing"
    );
}

#[tokio::test]
async fn copy_source_resumes_after_cuts_and_reads_the_source_once() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data(500_000);
    let src = MemoryBlob::new(bytes.clone());
    src.set_fault(Fault::CutAfter(120_000));
    let mut w = cas.ingest(Some(CS)).unwrap();
    let n = copy_source(&src, &mut w, 10, &|_| {}).await.unwrap();
    assert_eq!(n, bytes.len() as u64);
    let got = w.commit(Some(src.digest()), Some(n)).unwrap();
    assert_eq!(got.chunks.unwrap(), index_of(&bytes));
    assert_eq!(src.requests(), 5, "4 cut replies, then the rest");
    assert_eq!(
        src.bytes_served(),
        bytes.len() as u64,
        "every byte came over the wire once: resumes start where the last reply broke off"
    );
    // Too many cuts: a clear error, nothing stored.
    let src = MemoryBlob::new(data(500_000));
    src.set_fault(Fault::CutAfter(1000));
    let mut w = cas.ingest(None).unwrap();
    let err = copy_source(&src, &mut w, 2, &|_| {}).await.unwrap_err();
    assert!(err.to_string().contains("in-memory blob"), "{err}");
}

#[tokio::test]
async fn fill_from_writes_on_threads_resumes_and_commits_only_the_right_bytes() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data(700_000);
    let src = MemoryBlob::new(bytes.clone());
    src.set_fault(Fault::CutAfter(150_000));
    let mut w = cas.ingest(None).unwrap();
    let n = w.fill_from(&src, 10, &|_| {}).await.unwrap();
    assert_eq!(n, bytes.len() as u64);
    assert_eq!(w.written(), n, "the hash saw every byte");
    let got = w.commit(Some(src.digest()), Some(n)).unwrap();
    assert_eq!(std::fs::read(cas.blob_path(&got.digest)).unwrap(), bytes);
    assert_eq!(
        src.bytes_served(),
        n,
        "resumes start where the reply broke off"
    );
    // Wrong bytes: the commit refuses them and nothing is stored or left behind.
    let src = MemoryBlob::new(data(300_000));
    src.set_fault(Fault::Corrupt(1234));
    let mut w = cas.ingest(None).unwrap();
    w.fill_from(&src, 2, &|_| {}).await.unwrap();
    assert!(w.commit(Some(src.digest()), Some(300_000)).is_err());
    assert!(!cas.has(src.digest()));
    assert!(tmp_names(&cas).is_empty(), "{:?}", tmp_names(&cas));
    // A source that keeps breaking off: an error, and the temp file goes with the ingest.
    let src = MemoryBlob::new(data(300_000));
    src.set_fault(Fault::CutAfter(1000));
    let mut w = cas.ingest(None).unwrap();
    assert!(w.fill_from(&src, 2, &|_| {}).await.is_err());
    drop(w);
    assert!(tmp_names(&cas).is_empty(), "{:?}", tmp_names(&cas));
}

#[test]
fn copy_from_file_stores_and_hashes_exactly_the_copied_bytes() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path().join("cas")).unwrap();
    // Larger than one 8 MiB segment, not a multiple of a page, after a
    // prefix written the ordinary way (the maps start mid-page).
    let bytes = data((9 << 20) + 12_345);
    let src_path = d.path().join("src");
    std::fs::write(&src_path, &bytes).unwrap();
    let src = std::fs::File::open(&src_path).unwrap();
    let mut w = cas.ingest(Some(CS)).unwrap();
    w.write_all(b"head").unwrap();
    let mut seen = Vec::new();
    let n = w
        .copy_from_file(
            &src,
            &src_path,
            bytes.len() as u64,
            Reflink::Auto,
            &mut |b| seen.extend_from_slice(b),
        )
        .unwrap();
    assert_eq!(n, bytes.len() as u64);
    assert_eq!(
        seen, bytes,
        "the observer sees every copied byte once, in order"
    );
    let mut all = b"head".to_vec();
    all.extend_from_slice(&bytes);
    let got = w
        .commit(Some(&Digest::of(&all)), Some(all.len() as u64))
        .unwrap();
    assert_eq!(std::fs::read(cas.blob_path(&got.digest)).unwrap(), all);
    assert_eq!(got.chunks.unwrap(), index_of(&all));

    // A source that ends early: fewer bytes, reported, nothing hidden.
    let src = std::fs::File::open(&src_path).unwrap();
    let mut w = cas.ingest(None).unwrap();
    let n = w
        .copy_from_file(
            &src,
            &src_path,
            bytes.len() as u64 + 10,
            Reflink::Auto,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(n, bytes.len() as u64);

    // Where the kernel refuses copy_file_range (not a regular file), a plain copy.
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let mut w = cas.ingest(None).unwrap();
    let mut seen = 0u64;
    let n = w
        .copy_from_file(
            &zero,
            Path::new("/dev/zero"),
            100_000,
            Reflink::Auto,
            &mut |b| seen += b.len() as u64,
        )
        .unwrap();
    assert_eq!((n, seen), (100_000, 100_000));
    let got = w
        .commit(Some(&Digest::of(&vec![0u8; 100_000])), None)
        .unwrap();
    assert_eq!(got.size, 100_000);
}

async fn sparse(cas: &Cas, bytes: &[u8]) -> (Arc<MemoryBlob>, SparseBlob) {
    let src = Arc::new(MemoryBlob::new(bytes.to_vec()));
    let blob = SparseBlob::open(cas, index_of(bytes), src.clone()).unwrap();
    (src, blob)
}

#[tokio::test]
async fn reads_return_verified_bytes_and_fetch_only_the_chunks_they_touch() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data((CS * 5 + 1234) as usize);
    let (src, blob) = sparse(&cas, &bytes).await;
    let got = blob.read_at(CS - 10, 20).await.unwrap();
    assert_eq!(got, &bytes[(CS - 10) as usize..(CS + 10) as usize]);
    assert_eq!(
        src.requests(),
        2,
        "a read across a boundary fetches both chunks"
    );
    let tail = blob.read_at(CS * 5, 1 << 20).await.unwrap();
    assert_eq!(tail, &bytes[(CS * 5) as usize..], "short read at the end");
    assert!(
        blob.read_at(bytes.len() as u64 + 5, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(src.requests(), 3);
    blob.read_at(10, 10).await.unwrap();
    assert_eq!(src.requests(), 3, "a verified chunk is not fetched again");
    assert_eq!(blob.present_chunks(), 3);
    assert!(!blob.is_complete());
    assert!(!cas.has(src.digest()));
}

#[tokio::test]
async fn a_corrupt_chunk_is_never_returned_and_is_fetched_again_next_time() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data((CS * 3) as usize);
    let (src, blob) = sparse(&cas, &bytes).await;
    src.set_fault(Fault::Corrupt(CS + 77));
    let err = blob.read_at(CS, 100).await.unwrap_err();
    assert!(
        matches!(err, Error::DigestMismatch { ref what, .. } if what.contains(&format!("offset {CS}"))),
        "{err}"
    );
    // A read that does not touch the bad chunk is fine.
    assert_eq!(blob.read_at(0, 100).await.unwrap(), &bytes[..100]);
    // The chunk was not marked: once the source behaves, it is fetched and served.
    src.set_fault(Fault::None);
    let before = src.requests();
    assert_eq!(
        blob.read_at(CS, 100).await.unwrap(),
        &bytes[CS as usize..CS as usize + 100]
    );
    assert_eq!(src.requests(), before + 1);
    // A source that sends the whole blob for a range (ignores Range) is refused, not trusted.
    let bytes2 = data((CS * 2) as usize + 5);
    let (src2, blob2) = sparse(&cas, &bytes2).await;
    src2.set_fault(Fault::IgnoreRange);
    assert!(blob2.read_at(CS, 10).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_of_one_chunk_cause_one_fetch() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data((CS * 2) as usize);
    let mut mem = MemoryBlob::new(bytes.clone());
    mem.delay = std::time::Duration::from_millis(50);
    let src = Arc::new(mem);
    let blob = Arc::new(SparseBlob::open(&cas, index_of(&bytes), src.clone()).unwrap());
    let mut tasks = Vec::new();
    for k in 0..16u64 {
        let b = blob.clone();
        tasks.push(tokio::spawn(async move { b.read_at(k * 100, 50).await }));
    }
    for (k, t) in tasks.into_iter().enumerate() {
        let got = t.await.unwrap().unwrap();
        assert_eq!(got, &bytes[k * 100..k * 100 + 50]);
    }
    assert_eq!(src.requests(), 1, "16 readers of chunk 0, one fetch");
}

#[tokio::test]
async fn a_cut_fetch_fails_the_read_and_the_next_read_completes_it() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data((CS * 2) as usize);
    let (src, blob) = sparse(&cas, &bytes).await;
    src.set_fault(Fault::CutAfter(1000));
    assert!(blob.read_at(0, 10).await.is_err());
    src.set_fault(Fault::None);
    assert_eq!(blob.read_at(0, 10).await.unwrap(), &bytes[..10]);
}

#[tokio::test]
async fn the_last_chunk_promotes_the_blob_after_the_whole_digest_checks_out() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data((CS * 3 + 9) as usize);
    let (src, blob) = sparse(&cas, &bytes).await;
    blob.ensure_chunks(0, 4).await.unwrap();
    assert!(blob.is_complete());
    assert!(cas.has(src.digest()));
    assert_eq!(std::fs::read(cas.blob_path(src.digest())).unwrap(), bytes);
    assert!(
        std::fs::read_dir(cas.sparse_dir())
            .unwrap()
            .next()
            .is_none(),
        "sparse file and bitmap are gone"
    );
    // Reads keep working through the same handle, without fetching.
    let before = src.requests();
    assert_eq!(blob.read_at(5, 5).await.unwrap(), &bytes[5..10]);
    assert_eq!(src.requests(), before);
    // A new handle on a complete blob serves it directly.
    let again = SparseBlob::open(&cas, index_of(&bytes), src.clone()).unwrap();
    assert!(again.is_complete());
}

#[tokio::test]
async fn an_index_that_lies_about_the_blob_is_caught_at_promotion() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let real = data((CS * 2) as usize);
    // A source claiming a digest the bytes do not have, with an index that
    // matches the bytes: every chunk verifies, the whole blob does not.
    struct Lying(MemoryBlob, Digest);
    impl BlobSource for Lying {
        fn digest(&self) -> &Digest {
            &self.1
        }
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn describe(&self) -> String {
            "lying".into()
        }
        fn read_range(&self, o: u64, l: u64) -> futures::future::BoxFuture<'_, Result<ByteStream>> {
            self.0.read_range(o, l)
        }
    }
    let claimed = Digest::of(b"not these bytes");
    let src = Arc::new(Lying(MemoryBlob::new(real.clone()), claimed.clone()));
    let blob = SparseBlob::open(&cas, index_of(&real), src).unwrap();
    blob.read_at(0, 10).await.unwrap();
    assert!(blob.read_at(CS, 10).await.is_err(), "promotion failed");
    assert!(blob.read_at(0, 10).await.is_err(), "nothing more is served");
    assert!(!cas.has(&claimed));
}

#[tokio::test]
async fn a_restart_keeps_the_bitmap_and_reverifies_what_it_reuses() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data((CS * 4) as usize);
    {
        let (_src, blob) = sparse(&cas, &bytes).await;
        blob.read_at(0, 10).await.unwrap();
        blob.read_at(CS * 2, 10).await.unwrap();
    }
    let (src, blob) = sparse(&cas, &bytes).await;
    assert_eq!(blob.present_chunks(), 2, "the bitmap survived");
    assert_eq!(blob.read_at(0, 10).await.unwrap(), &bytes[..10]);
    assert_eq!(src.requests(), 0, "a present chunk is not fetched again");
    drop(blob);
    // A chunk whose bytes rotted on disk while its bit stayed set is refetched, not served.
    {
        use std::os::unix::fs::FileExt;
        let p = cas
            .sparse_dir()
            .join(format!("{}.sparse", src.digest().hex()));
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.write_all_at(b"XXXX", CS * 2 + 3).unwrap();
    }
    let (src, blob) = sparse(&cas, &bytes).await;
    assert_eq!(
        blob.read_at(CS * 2, 10).await.unwrap(),
        &bytes[(CS * 2) as usize..(CS * 2) as usize + 10]
    );
    assert_eq!(src.requests(), 1);
    // One lazy reader per blob: a second handle in the same store is refused while the first lives.
    let err = SparseBlob::open(&cas, index_of(&bytes), src.clone())
        .err()
        .unwrap();
    assert!(err.to_string().contains("in use"), "{err}");
}

#[tokio::test]
async fn a_window_of_missing_chunks_is_fetched_in_one_request_and_a_bad_one_is_left_out() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data((CS * 9 + 77) as usize);
    let (src, blob) = sparse(&cas, &bytes).await;
    // Chunk 1 is already here: chunks 0 and 2..=4 are two runs, two requests.
    blob.read_at(CS, 10).await.unwrap();
    assert_eq!(src.requests(), 1);
    blob.ensure_chunks(0, 5).await.unwrap();
    assert_eq!(
        src.requests(),
        3,
        "one ranged read per run of missing chunks"
    );
    assert_eq!(blob.present_chunks(), 5);
    // A corrupt chunk inside a run: the others of the run are kept, it is not.
    src.set_fault(Fault::Corrupt(CS * 6 + 3));
    assert!(blob.ensure_chunks(5, 5).await.is_err());
    assert_eq!(
        blob.present_chunks(),
        9,
        "chunks 5, 7, 8 and 9 stored; 6 refused"
    );
    assert!(!blob.has_chunk(6));
    src.set_fault(Fault::None);
    blob.ensure_chunks(0, 10).await.unwrap();
    assert!(blob.is_complete(), "the last chunk promoted the blob");
    let s = &blob.fetch_stats;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        s.fetches.load(Relaxed),
        src.requests(),
        "every ranged read counted"
    );
    assert_eq!(s.refused.load(Relaxed), 1, "the corrupt chunk");
    assert_eq!(s.histogram().iter().sum::<u64>(), src.requests());
    assert!(super::fetch_percentile(&s.histogram(), 0.99).is_some());
    assert_eq!(blob.read_at(0, bytes.len() as u64).await.unwrap(), bytes);
    assert!(cas.has(src.digest()));
}

#[tokio::test]
async fn chunks_landing_out_of_order_still_promote_with_the_right_digest() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data((CS * 6 + 77) as usize);
    {
        // One chunk stored by an earlier process: reused after the restart,
        // so the digest must pick it up from the file.
        let (_src, blob) = sparse(&cas, &bytes).await;
        blob.read_at(CS * 3, 1).await.unwrap();
    }
    let (src, blob) = sparse(&cas, &bytes).await;
    for i in [6u64, 4, 5, 0, 2, 1] {
        blob.read_at(i * CS, 1).await.unwrap();
        assert!(
            !blob.is_complete(),
            "chunk 3 is not verified in this process yet"
        );
    }
    blob.read_at(CS * 3, 1).await.unwrap();
    assert!(blob.is_complete());
    assert_eq!(src.requests(), 6, "the reused chunk was not fetched");
    assert_eq!(std::fs::read(cas.blob_path(src.digest())).unwrap(), bytes);
}

#[test]
fn the_whole_digest_prefix_hashes_in_order_and_catches_up_from_the_file() {
    use std::os::unix::fs::FileExt;
    let d = tempfile::tempdir().unwrap();
    let bytes = data((CS * 3) as usize);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(d.path().join("blob"))
        .unwrap();
    file.write_all_at(&bytes, 0).unwrap();
    let index = index_of(&bytes);
    let chunk = |i: usize| &bytes[i * CS as usize..(i + 1) * CS as usize];
    let mut p = sparse::Prefix::default();
    p.land(0, Some(chunk(0)));
    p.land(2, Some(chunk(2)));
    assert!(!p.can_catch_up(), "chunk 2 waits for chunk 1");
    p.land(1, Some(chunk(1)));
    assert!(p.can_catch_up());
    p.catch_up(&index, &file, d.path()).unwrap();
    assert_eq!(p.next, 3);
    assert_eq!(std::mem::take(&mut p.hasher).finish(), Digest::of(&bytes));
    // Caught-up chunks come from the file: bytes changed there show in the digest.
    file.write_all_at(b"zz", CS * 2).unwrap();
    let mut q = sparse::Prefix::default();
    q.land(2, None);
    q.land(0, Some(chunk(0)));
    q.land(1, Some(chunk(1)));
    q.catch_up(&index, &file, d.path()).unwrap();
    assert_ne!(q.hasher.finish(), Digest::of(&bytes));
}

/// A background whole-digest feed holds the blob's locked file: dropping the
/// blob must wait for it, so the blob can be opened again at once (a view
/// served again in the same process). Feeds are slowed down here to hold the
/// window open; this failed with "in use by another process" before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_blob_can_be_reopened_at_once_while_its_feed_ran() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data((CS * 3) as usize);
    super::sparse::FEED_DELAY_MS.store(300, std::sync::atomic::Ordering::Relaxed);
    {
        let (_src, blob) = sparse(&cas, &bytes).await;
        blob.read_at(0, 10).await.unwrap();
    }
    super::sparse::FEED_DELAY_MS.store(0, std::sync::atomic::Ordering::Relaxed);
    let (_src, blob) = sparse(&cas, &bytes).await;
    assert_eq!(blob.present_chunks(), 1);
}

#[tokio::test]
async fn local_bytes_counts_present_chunks_without_opening_the_blob() {
    let d = tempfile::tempdir().unwrap();
    let cas = Cas::open(d.path()).unwrap();
    let bytes = data((CS * 3 + 100) as usize);
    let size = bytes.len() as u64;
    let digest = crate::digest::Digest::of(&bytes);
    assert_eq!(local_bytes(&cas, &digest, size), 0, "nothing here yet");
    let (_src, blob) = sparse(&cas, &bytes).await;
    blob.read_at(CS + 1, 1).await.unwrap();
    blob.read_at(CS * 3, 1).await.unwrap();
    // Read while the blob is open (and locked): chunk 1 plus the short last one.
    assert_eq!(local_bytes(&cas, &digest, size), CS + 100);
    // A bitmap that does not fit the size claimed counts as nothing.
    assert_eq!(local_bytes(&cas, &digest, size * 40), 0);
    blob.read_at(0, size).await.unwrap();
    assert!(blob.is_complete());
    assert_eq!(
        local_bytes(&cas, &digest, size),
        size,
        "complete: in blobs/"
    );
}
