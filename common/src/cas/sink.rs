//! Writing a downloaded blob off the async threads. A download's receive
//! loop, its file writes and its SHA-256 used to share one async task
//! (writes hopping to a blocking thread per network read, the hash inline),
//! so a single large blob moved at a third of what two cores allow. A
//! [`FileSink`] takes the received buffers (`Bytes`, no copy) through a
//! bounded channel; one thread writes them in order and hands the same
//! buffers to a second that hashes them (SHA-256 alone is ~0.6 CPU-s per
//! GiB), while the task goes back to the socket.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use bytes::Bytes;

use crate::digest::Hasher;
use crate::error::{Error, IoContext, Result};

/// Bytes received but not yet hashed, per download: the memory bound
/// whatever size of buffers the HTTP stack hands over (counted in KiB).
const IN_FLIGHT_KIB: usize = 4 << 10;

/// Messages queued for each thread (the byte budget is the real bound).
const QUEUE: usize = 256;

/// The budget a buffer of `len` bytes takes.
fn kib(len: usize) -> u32 {
    len.div_ceil(1024).clamp(1, IN_FLIGHT_KIB) as u32
}

#[derive(Clone)]
enum Msg {
    Data(Bytes),
    /// The server ignored a resume: drop what was written and start over.
    Restart,
}

/// Starts the disk writes of each finished window as the file grows, so the
/// commit's fsync finds little left to do: a download arrives slower than
/// the disk writes, but without this the kernel would not start writing
/// until its dirty threshold (10% of RAM) — the whole blob, for most models —
/// and the fsync would then wait for all of it.
struct Writeback {
    done: u64,
    end: u64,
}

const WRITEBACK_WINDOW: u64 = 8 << 20;

impl Writeback {
    fn new(mut file: &File) -> Writeback {
        let at = file.stream_position().unwrap_or(0);
        Writeback { done: at, end: at }
    }

    fn wrote(&mut self, file: &File, n: u64) {
        self.end += n;
        if self.end - self.done >= WRITEBACK_WINDOW {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain syscall on a descriptor we own; its result is
            // advisory (the fsync at commit is what makes the blob durable).
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    self.done as i64,
                    (self.end - self.done) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.done = self.end;
        }
    }
}

/// A file being filled in order by a writer thread that also hashes.
pub struct FileSink {
    tx: Option<tokio::sync::mpsc::Sender<Msg>>,
    /// KiB that may be queued (taken on write, given back once hashed).
    budget: std::sync::Arc<tokio::sync::Semaphore>,
    done: Option<tokio::sync::oneshot::Receiver<Result<Hasher>>>,
    shown: PathBuf,
    /// Why the thread stopped, once a send found it gone (later sends fail the same way).
    stopped: Option<String>,
}

impl FileSink {
    /// Appends to `file` from its current position; `hasher` has already
    /// consumed the bytes before it (a resumed download).
    pub fn start(mut file: File, mut hasher: Hasher, shown: PathBuf) -> Result<FileSink> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(QUEUE);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let path = shown.clone();
        let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_KIB));
        let returned = budget.clone();
        let closer = budget.clone();
        let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<Msg>(QUEUE);
        let hashing = std::thread::Builder::new()
            .name("blob-hash".into())
            .spawn(move || {
                for msg in hash_rx {
                    match msg {
                        Msg::Data(b) => {
                            hasher.update(&b);
                            returned.add_permits(kib(b.len()) as usize);
                        }
                        Msg::Restart => hasher = Hasher::new(),
                    }
                }
                hasher
            })
            .ctx("start a hashing thread for", &shown)?;
        std::thread::Builder::new()
            .name("blob-sink".into())
            .spawn(move || {
                let mut run = || -> Result<()> {
                    let mut writeback = Writeback::new(&file);
                    while let Some(msg) = rx.blocking_recv() {
                        match &msg {
                            Msg::Data(b) => {
                                file.write_all(b).ctx("write", &path)?;
                                writeback.wrote(&file, b.len() as u64);
                            }
                            Msg::Restart => {
                                file.set_len(0).ctx("truncate", &path)?;
                                file.seek(SeekFrom::Start(0)).ctx("seek", &path)?;
                                writeback = Writeback::new(&file);
                            }
                        }
                        // Only what reached the file is hashed.
                        if hash_tx.send(msg).is_err() {
                            break;
                        }
                    }
                    file.flush().ctx("write", &path)
                };
                let wrote = run();
                // A writer waiting for budget wakes up and finds the thread gone.
                closer.close();
                drop(hash_tx);
                let hashed = hashing.join().map_err(|_| {
                    Error::io(
                        "hash",
                        &path,
                        std::io::Error::other("the hashing thread panicked"),
                    )
                });
                let _ = done_tx.send(wrote.and(hashed));
            })
            .ctx("start a writer thread for", &shown)?;
        Ok(FileSink {
            tx: Some(tx),
            budget,
            done: Some(done),
            shown,
            stopped: None,
        })
    }

    /// Queues bytes (waits while the queue is full). An error means the
    /// thread stopped; [`FileSink::finish`] says why.
    pub async fn write(&mut self, bytes: Bytes) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        // Given back by the hashing thread. Closed once the writer has
        // stopped: then the send below reports why.
        if let Ok(p) = self.budget.acquire_many(kib(bytes.len())).await {
            p.forget();
        }
        self.send(Msg::Data(bytes)).await
    }

    /// Empties the file and the hash (the server sent the whole blob again).
    pub async fn restart(&mut self) -> Result<()> {
        self.send(Msg::Restart).await
    }

    async fn send(&mut self, msg: Msg) -> Result<()> {
        let shown = self.shown.clone();
        let stopped =
            move |why: &str| Error::io("write", &shown, std::io::Error::other(why.to_string()));
        if let Some(why) = &self.stopped {
            return Err(stopped(why));
        }
        let tx = self.tx.as_ref().expect("stopped is set when tx is taken");
        if tx.send(msg).await.is_err() {
            // The thread has stopped: its result has the reason.
            let err = self
                .finish_inner()
                .await
                .err()
                .unwrap_or_else(|| stopped("the writer stopped"));
            self.stopped = Some(err.to_string());
            return Err(err);
        }
        Ok(())
    }

    /// Waits for every queued byte to be written; returns the hash of all
    /// bytes in the file.
    pub async fn finish(mut self) -> Result<Hasher> {
        self.finish_inner().await
    }

    async fn finish_inner(&mut self) -> Result<Hasher> {
        drop(self.tx.take());
        self.stopped
            .get_or_insert_with(|| "the writer was finished".into());
        let Some(done) = self.done.take() else {
            return Err(Error::io(
                "write",
                &self.shown,
                std::io::Error::other("writer already finished"),
            ));
        };
        done.await.unwrap_or_else(|_| {
            Err(Error::io(
                "write",
                &self.shown,
                std::io::Error::other("the writer thread panicked"),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[tokio::test]
    async fn bytes_are_written_and_hashed_in_order_and_a_restart_starts_over() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("blob");
        std::fs::write(&p, b"abc").unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        let mut resumed = Hasher::new();
        resumed.update(b"abc");
        let mut sink = FileSink::start(f, resumed, p.clone()).unwrap();
        for piece in [&b"def"[..], b"", b"ghij"] {
            sink.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let h = sink.finish().await.unwrap();
        assert_eq!(h.len(), 10);
        assert_eq!(h.finish(), Digest::of(b"abcdefghij"));
        assert_eq!(std::fs::read(&p).unwrap(), b"abcdefghij");

        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let mut sink = FileSink::start(f, Hasher::new(), p.clone()).unwrap();
        sink.write(Bytes::from_static(b"junk")).await.unwrap();
        sink.restart().await.unwrap();
        sink.write(Bytes::from_static(b"xy")).await.unwrap();
        assert_eq!(sink.finish().await.unwrap().finish(), Digest::of(b"xy"));
        assert_eq!(std::fs::read(&p).unwrap(), b"xy");
    }

    #[tokio::test]
    async fn a_write_error_is_reported_with_the_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ro");
        std::fs::write(&p, b"").unwrap();
        // A read-only handle: the first write fails on the thread.
        let f = std::fs::File::open(&p).unwrap();
        let mut sink = FileSink::start(f, Hasher::new(), p.clone()).unwrap();
        let mut err = None;
        for _ in 0..(QUEUE * 4) {
            if let Err(e) = sink.write(Bytes::from_static(b"x")).await {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("a write reports the thread's failure");
        assert!(err.to_string().contains("ro"), "{err}");
        // Later writes (a retry, the next mirror) fail the same way instead of panicking.
        assert!(sink.write(Bytes::from_static(b"x")).await.is_err());
        assert!(sink.finish().await.is_err());
    }

    #[tokio::test]
    async fn memory_in_flight_is_bounded_and_a_dead_writer_never_hangs_the_sender() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ro");
        std::fs::write(&p, b"").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let mut sink = FileSink::start(f, Hasher::new(), p.clone()).unwrap();
        // Each buffer is a quarter of the budget: without the thread giving
        // budget back, the fifth would wait forever.
        let big = Bytes::from(vec![7u8; IN_FLIGHT_KIB * 1024 / 4]);
        let res = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            for _ in 0..16 {
                sink.write(big.clone()).await?;
            }
            Ok::<(), Error>(())
        })
        .await
        .expect("a write after the thread failed returns instead of waiting");
        let err = match res {
            Err(e) => e,
            Ok(()) => sink
                .finish()
                .await
                .err()
                .expect("the failure surfaces at the latest at finish"),
        };
        assert!(err.to_string().contains("ro"), "{err}");

        // A working sink moves far more than the budget through it.
        let p2 = d.path().join("ok");
        let f = std::fs::File::create(&p2).unwrap();
        let mut sink = FileSink::start(f, Hasher::new(), p2.clone()).unwrap();
        for _ in 0..16 {
            sink.write(big.clone()).await.unwrap();
        }
        assert_eq!(sink.finish().await.unwrap().len(), 16 * big.len() as u64);
        assert_eq!(std::fs::metadata(&p2).unwrap().len(), 16 * big.len() as u64);
    }
}
