//! Measures what the node store's ingest costs in reads: a blob pulled from a
//! real docker-registry through `RegistryBlob` into a chunking `Ingest`
//! yields its digest and its chunk index while the process reads (per
//! /proc/self/io `rchar`) far less than the blob's size from files — the
//! bytes arrive by socket and are hashed as they are written, never read
//! back. The control reads the blob once more with `index_file` and sees
//! `rchar` grow by the blob's size, so the measurement would catch a second
//! pass. Alone in its test binary so no other test's reads are counted.

use std::io::Write;
use std::sync::Arc;

use modelpack_common::cas::Cas;
use modelpack_common::cas::source::copy_source;
use modelpack_common::chunk::{DEFAULT_CHUNK_SIZE, index_file};
use modelpack_common::credentials::{CredentialOptions, CredentialStore};
use modelpack_common::registry::{RegistryBlob, RegistryClient, TransportOptions};
use modelpack_common::{Digest, Reference};

fn rchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

struct Registry(std::process::Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_node_ingest_reads_each_blob_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}, secret: s}}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let _reg = Registry(
        std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry is required: run integration/setup.sh"),
    );
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let client = RegistryClient::new(
        TransportOptions::default(),
        Arc::new(CredentialStore::new(CredentialOptions::default())),
    )
    .unwrap();
    let r: Reference = format!("127.0.0.1:{port}/m/reads:v1").parse().unwrap();
    let size = 24usize << 20;
    let data: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let digest = client.push_blob_bytes(&r, &data).await.unwrap();
    assert_eq!(digest, Digest::of(&data));
    drop(data);

    let cas = Cas::open(dir.path().join("node")).unwrap();
    let source = RegistryBlob::new(client.clone(), r.clone(), digest.clone(), size as u64);
    let before = rchar();
    let mut ingest = cas.ingest(Some(DEFAULT_CHUNK_SIZE)).unwrap();
    copy_source(&source, &mut ingest, 3, &|_| {}).await.unwrap();
    ingest.flush().unwrap();
    let done = ingest.commit(Some(&digest), Some(size as u64)).unwrap();
    let ingest_reads = rchar() - before;
    let chunks = done.chunks.unwrap();
    assert_eq!(chunks.chunks.len(), 6);

    let before = rchar();
    let (whole, again) = index_file(&cas.blob_path(&digest), DEFAULT_CHUNK_SIZE).unwrap();
    let control_reads = rchar() - before;
    assert_eq!(whole, digest);
    assert_eq!(again, chunks, "one-pass chunks equal a re-read's");
    println!(
        "blob {size} bytes: ingest read {ingest_reads} bytes from files, a re-read {control_reads}"
    );
    assert!(
        control_reads >= size as u64,
        "the control proves rchar counts file reads"
    );
    assert!(
        ingest_reads < size as u64 / 8,
        "the ingest read {ingest_reads} bytes of files for a {size}-byte blob: something reads it back"
    );
}
