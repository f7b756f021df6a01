//! `modelpack-fs`: a model as a read-only FUSE filesystem whose bytes come
//! from the content store — complete blobs read directly, partial ones
//! ([`SparseBlob`]) filled on demand, chunk by chunk, each verified against
//! the chunk index before a byte reaches the reader. Used by the
//! snapshotter (a container's view of a lazily attached model) and by
//! `modelpack mount` (the same without containerd).
//!
//! Built on `fuser` (pure Rust, no libfuse needed at build or run time when
//! mounting as root; the maintained successor of `fuse-rs`, with `&self`
//! handlers since 0.16 so one filesystem serves many kernel threads).
//!
//! What a reader can observe:
//! - directories are synthesised from the file paths; files show the
//!   view's mode (read-only), size, and the model's creation time;
//! - a read returns verified bytes or fails with `EIO` (a chunk that did not
//!   verify, a source that is unreachable past the configured wait); it never
//!   returns unverified or zero-filled data;
//! - sequential reads trigger readahead of the next chunks; concurrent
//!   fetches are bounded (a semaphore), so memory stays bounded too.

pub mod attach;
mod prefetch;
mod tree;

pub use prefetch::{Prefetch, prefetch, prefetch_until_complete};

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen,
    ReplyStatfs, Request, SessionACL,
};
use modelpack_common::cas::SparseBlob;

pub use tree::TreeError;
use tree::{Node, NodeKind, Tree};

/// Where a file's bytes live.
#[derive(Clone)]
pub enum Backing {
    /// A complete, verified blob in the store (read directly).
    Complete(Arc<std::fs::File>),
    /// A blob filled on demand.
    Lazy(Arc<SparseBlob>),
}

/// One file of the view.
#[derive(Clone)]
pub struct FsFile {
    /// Safe relative path (from a validated `ModelView`).
    pub path: PathBuf,
    pub backing: Backing,
    /// Where the file's bytes start in the blob.
    pub offset: u64,
    pub size: u64,
    pub mode: u32,
}

/// Tuning, in the shape of Nydus's fuse/prefetch knobs.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// Chunk fetches in flight at once (each holds one chunk in memory).
    pub max_inflight: usize,
    /// Chunks to read ahead after a sequential read.
    pub readahead_chunks: u64,
    /// How long a read waits for a fetch before failing with EIO.
    pub read_timeout: Duration,
    /// Kernel threads serving requests.
    pub threads: usize,
    /// Let other users (a container's) read the mount; needs root or `user_allow_other`.
    pub allow_other: bool,
    /// Name shown in /proc/mounts (`modelpack:<ref>`).
    pub fsname: String,
    /// Hand opens of complete raw files to the kernel (`FUSE_PASSTHROUGH`,
    /// Linux ≥ 6.9, root): reads then never reach this process. Falls back
    /// to serving reads here where the kernel or privileges do not allow it.
    pub passthrough: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            max_inflight: 8,
            readahead_chunks: 8,
            read_timeout: Duration::from_secs(60),
            threads: 4,
            allow_other: false,
            fsname: "modelpack".into(),
            passthrough: true,
        }
    }
}

/// Counters a `stats` command reports.
#[derive(Debug, Default)]
pub struct FsStats {
    pub reads: AtomicU64,
    pub bytes_served: AtomicU64,
    pub read_errors: AtomicU64,
    /// The kernel accepted FUSE passthrough at init.
    pub passthrough: std::sync::atomic::AtomicBool,
    /// Opens handed to the kernel (their reads never reach `reads`).
    pub passthrough_opens: AtomicU64,
}

/// The filesystem handed to fuser.
pub struct ModelFs {
    tree: Tree,
    rt: tokio::runtime::Handle,
    opts: FsOptions,
    inflight: Arc<tokio::sync::Semaphore>,
    mtime: SystemTime,
    uid: u32,
    gid: u32,
    /// Per open file: where the last read ended (sequential detection).
    last_end: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
    next_fh: AtomicU64,
    pub stats: Arc<FsStats>,
    /// The kernel agreed to passthrough at init.
    passthrough: bool,
    /// Readahead fetches in flight (apart from demanded ones).
    readahead: Arc<tokio::sync::Semaphore>,
    /// Readahead chunks already scheduled: `(blob address, chunk)`.
    scheduled: Arc<std::sync::Mutex<std::collections::HashSet<(usize, u64)>>>,
    /// One backing registration per passthrough inode, kept while mounted.
    backing: std::sync::Mutex<std::collections::HashMap<u64, Arc<fuser::BackingId>>>,
}

const TTL: Duration = Duration::from_secs(3600);

/// Chunks fetched together by one readahead request.
const READAHEAD_GROUP: u64 = 4;

thread_local! {
    /// Each FUSE thread's buffer for reads answered from verified chunks.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Readahead within one file of a lazy blob.
struct Readahead {
    blob: Arc<SparseBlob>,
    /// Groups in flight (apart from demanded reads).
    permits: Arc<tokio::sync::Semaphore>,
    /// Groups already scheduled: `(blob address, group)`.
    scheduled: Arc<std::sync::Mutex<std::collections::HashSet<(usize, u64)>>>,
}

impl Readahead {
    /// After a sequential read ending at blob offset `end` (the demanded
    /// bytes already answered): the rest of the current group of chunks and
    /// the next groups up to `ahead` chunks, each group fetched by one task
    /// with one ranged read (few large requests; in parallel, bounded by
    /// their own semaphore so they never hold up demanded reads), each group
    /// scheduled once, none past `file_end`.
    fn schedule(self, rt: &tokio::runtime::Handle, end: u64, file_end: u64, ahead: u64) {
        if ahead == 0 || end >= file_end {
            return;
        }
        let blob = &self.blob;
        let cs = blob.index().chunk_size;
        let group = READAHEAD_GROUP.min(ahead);
        let cur = (end - 1) / cs / group;
        let last = (file_end - 1) / cs;
        for g in cur..=cur + ahead.div_ceil(group) {
            let first = g * group;
            if first > last {
                break;
            }
            let n = group.min(last + 1 - first);
            if (first..first + n).all(|j| blob.has_chunk(j as usize)) {
                continue;
            }
            let key = (Arc::as_ptr(blob) as usize, g);
            if !self.scheduled.lock().unwrap().insert(key) {
                continue;
            }
            let (blob, permits, scheduled) =
                (blob.clone(), self.permits.clone(), self.scheduled.clone());
            rt.spawn(async move {
                if let Ok(_permit) = permits.acquire_owned().await {
                    let _ = blob.ensure_chunks(first as usize, n as usize).await;
                }
                scheduled.lock().unwrap().remove(&key);
            });
        }
    }
}

impl ModelFs {
    /// The kernel's handle on a file that is a whole, complete, verified
    /// blob (a raw layer's file), registered once per inode; `None` for
    /// anything else (tar members live at an offset, partial blobs need us)
    /// or when registration fails (then reads are served here).
    fn backing_for(
        &self,
        ino: u64,
        f: &FsFile,
        reply: &ReplyOpen,
    ) -> Option<Arc<fuser::BackingId>> {
        if let Some(id) = self.backing.lock().unwrap().get(&ino) {
            return Some(id.clone());
        }
        let file = match &f.backing {
            Backing::Complete(file) => file.clone(),
            Backing::Lazy(b) => b.complete_file()?,
        };
        if f.offset != 0 || file.metadata().ok()?.len() != f.size {
            return None;
        }
        match reply.open_backing(&*file) {
            Ok(id) => {
                let id = Arc::new(id);
                self.backing.lock().unwrap().insert(ino, id.clone());
                Some(id)
            }
            Err(e) => {
                tracing::debug!(path = %f.path.display(), "no passthrough: {e}");
                None
            }
        }
    }
}

impl ModelFs {
    /// Builds the tree. `rt` runs the fetches (the caller's runtime).
    pub fn new(
        files: Vec<FsFile>,
        mtime: SystemTime,
        opts: FsOptions,
        rt: tokio::runtime::Handle,
    ) -> Result<ModelFs, TreeError> {
        let tree = Tree::build(files)?;
        // One permit per group in flight: memory is at most the readahead window.
        let readahead = Arc::new(tokio::sync::Semaphore::new(
            opts.readahead_chunks.div_ceil(READAHEAD_GROUP).clamp(1, 16) as usize,
        ));
        Ok(ModelFs {
            tree,
            rt,
            inflight: Arc::new(tokio::sync::Semaphore::new(opts.max_inflight.max(1))),
            opts,
            mtime,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            last_end: Default::default(),
            next_fh: AtomicU64::new(1),
            stats: Arc::new(FsStats::default()),
            passthrough: false,
            backing: Default::default(),
            readahead,
            scheduled: Default::default(),
        })
    }

    fn attr(&self, node: &Node) -> FileAttr {
        let (kind, size, perm, nlink) = match &node.kind {
            NodeKind::Dir { children } => (
                FileType::Directory,
                0,
                0o555,
                2 + children.values().filter(|c| self.tree.is_dir(**c)).count() as u32,
            ),
            NodeKind::File(f) => (FileType::RegularFile, f.size, (f.mode & 0o555) as u16, 1),
        };
        FileAttr {
            ino: INodeNo(node.ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 1 << 20,
            flags: 0,
        }
    }
}

impl Filesystem for ModelFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.tree.child(parent.0, name) {
            Some(n) => reply.entry(&TTL, &self.attr(self.tree.node(n)), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.get(ino.0) {
            Some(n) => reply.attr(&TTL, &self.attr(n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        if self.opts.passthrough {
            match config.add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH) {
                // Depth 1: this filesystem may sit under an overlay; its backing files may not.
                Ok(()) if config.set_max_stack_depth(1).is_ok() => {
                    self.passthrough = true;
                    self.stats.passthrough.store(true, Ordering::Relaxed);
                    tracing::debug!("FUSE passthrough on for complete files");
                }
                _ => tracing::info!(
                    "kernel without FUSE passthrough: complete files are served by this process"
                ),
            }
        }
        Ok(())
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(n) = self.tree.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if matches!(n.kind, NodeKind::Dir { .. }) {
            return reply.error(Errno::EISDIR);
        }
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if let NodeKind::File(f) = &n.kind
            && self.passthrough
            && let Some(id) = self.backing_for(ino.0, f, &reply)
        {
            self.stats.passthrough_opens.fetch_add(1, Ordering::Relaxed);
            return reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
        }
        // Verified bytes never change: let the kernel keep its page cache.
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(NodeKind::File(f)) = self.tree.get(ino.0).map(|n| &n.kind) else {
            return reply.error(Errno::ENOENT);
        };
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        if offset >= f.size {
            return reply.data(&[]);
        }
        let len = (size as u64).min(f.size - offset);
        let at = f.offset + offset;
        let sequential = {
            let mut m = self.last_end.lock().unwrap();
            let seq = m.get(&fh.0).is_some_and(|e| *e == offset) || offset == 0;
            m.insert(fh.0, offset + len);
            seq
        };
        match &f.backing {
            Backing::Complete(file) => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len as usize];
                match file.read_exact_at(&mut buf, at) {
                    Ok(()) => {
                        self.stats.bytes_served.fetch_add(len, Ordering::Relaxed);
                        reply.data(&buf)
                    }
                    Err(e) => {
                        tracing::error!(path = %f.path.display(), offset, "read failed: {e}");
                        self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                        reply.error(Errno::EIO)
                    }
                }
            }
            Backing::Lazy(blob) => {
                let ahead = if sequential {
                    self.opts.readahead_chunks
                } else {
                    0
                };
                let file_end = f.offset + f.size;
                let readahead = Readahead {
                    blob: blob.clone(),
                    permits: self.readahead.clone(),
                    scheduled: self.scheduled.clone(),
                };
                // Already verified (readahead got there first): answer on this
                // thread, no task, no wait.
                let mut pending = Some(reply);
                READ_BUF.with_borrow_mut(|buf| {
                    let Some(done) = blob.read_verified_at(at, len, buf) else {
                        return;
                    };
                    let reply = pending.take().expect("answered once");
                    match done {
                        Ok(()) => {
                            self.stats
                                .bytes_served
                                .fetch_add(buf.len() as u64, Ordering::Relaxed);
                            reply.data(buf);
                        }
                        Err(e) => {
                            tracing::error!(path = %f.path.display(), offset = at, "read failed: {e}");
                            self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                            reply.error(Errno::EIO);
                        }
                    }
                });
                let Some(reply) = pending else {
                    return readahead.schedule(&self.rt, at + len, file_end, ahead);
                };
                let blob = blob.clone();
                let sem = self.inflight.clone();
                let timeout = self.opts.read_timeout;
                let stats = self.stats.clone();
                let path = f.path.clone();
                let rt = self.rt.clone();
                self.rt.spawn(async move {
                    let got = {
                        let Ok(_permit) = sem.clone().acquire_owned().await else {
                            return reply.error(Errno::EIO);
                        };
                        tokio::time::timeout(timeout, blob.read_at(at, len)).await
                    };
                    match got {
                        Ok(Ok(bytes)) => {
                            stats.bytes_served.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            reply.data(&bytes);
                        }
                        Ok(Err(e)) => {
                            tracing::error!(path = %path.display(), offset = at, "read refused: {e}");
                            stats.read_errors.fetch_add(1, Ordering::Relaxed);
                            reply.error(Errno::EIO);
                        }
                        Err(_) => {
                            tracing::error!(path = %path.display(), offset = at, "read timed out after {timeout:?}");
                            stats.read_errors.fetch_add(1, Ordering::Relaxed);
                            reply.error(Errno::EIO);
                        }
                    }
                    readahead.schedule(&rt, at + len, file_end, ahead);
                });
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.last_end.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(node) = self.tree.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let NodeKind::Dir { children } = &node.kind else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut entries: Vec<(u64, FileType, &OsStr)> = vec![
            (node.ino, FileType::Directory, OsStr::new(".")),
            (node.parent, FileType::Directory, OsStr::new("..")),
        ];
        for (name, child) in children {
            let kind = if self.tree.is_dir(*child) {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            entries.push((*child, kind, name.as_os_str()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let bytes: u64 = self.tree.total_bytes();
        reply.statfs(
            bytes.div_ceil(4096),
            0,
            0,
            self.tree.len() as u64,
            0,
            4096,
            255,
            4096,
        );
    }
}

/// A mounted view; unmounted on [`Mounted::unmount`] or drop.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    pub dir: PathBuf,
    pub stats: Arc<FsStats>,
}

impl Mounted {
    pub fn unmount(mut self) -> std::io::Result<()> {
        match self.session.take() {
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        }
    }

    /// Blocks until the filesystem is unmounted from outside (`umount DIR`).
    pub fn wait(mut self) -> std::io::Result<()> {
        match self.session.take() {
            Some(s) => s.join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

/// Mounts `fs` read-only at `dir` (which must exist) in background threads.
pub fn mount(fs: ModelFs, dir: &Path) -> std::io::Result<Mounted> {
    let stats = fs.stats.clone();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::FSName(fs.opts.fsname.clone()),
        MountOption::Subtype("modelpack".into()),
    ];
    if fs.opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(fs.opts.threads.max(1));
    config.clone_fd = true;
    let session = fuser::spawn_mount2(fs, dir, &config)?;
    Ok(Mounted {
        session: Some(session),
        dir: dir.to_path_buf(),
        stats,
    })
}

/// Keeps a long-running server's memory at what is in flight: chunk buffers
/// (4–16 MiB) are mapped and unmapped per fetch instead of lingering in
/// glibc's heap, whose dynamic mmap threshold otherwise climbs to 32 MiB
/// after the first large free and keeps every freed buffer resident.
pub fn bound_allocator_cache() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before serving.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Unmounts a view mounted by another process (`modelpack umount`).
pub fn unmount_path(dir: &Path) -> std::io::Result<()> {
    rustix::mount::unmount(dir, rustix::mount::UnmountFlags::empty())
        .or_else(|_| rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH))
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests;
