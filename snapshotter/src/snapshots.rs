//! Snapshot semantics, as containerd's overlayfs snapshotter has them: active,
//! view and committed kinds, parent chains, overlay mounts (lowerdir = parent
//! chain, upperdir/workdir of the active snapshot), a bind mount for a
//! parentless snapshot, and a read-only bind of one merged directory for a view
//! of a model chain. Keys are opaque (`<ns>/<seq>/<key>` from containerd).

use modelpack_common::error::IoContext;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use containerd_client::types::Mount;

use crate::error::{Result, SnapError};
use crate::meta::{Kind, Meta, ModelFile, Record};

pub const LABEL_REF: &str = "containerd.io/snapshot.ref";

pub struct Snapshots {
    pub root: PathBuf,
    /// The node's content-addressed blob store (`blobs/`, `tmp/`, `sparse/` under `root`).
    pub cas: modelpack_common::cas::Cas,
    pub meta: Meta,
    /// Serialises directory + record changes (metadata txns are short).
    pub lock: Mutex<()>,
    /// Blobs a model Prepare is fetching or committing (hex → holders).
    pub in_flight: Mutex<std::collections::HashMap<String, usize>>,
    /// The FUSE server of lazy views (set once at startup; absent in tests
    /// that exercise only the eager path).
    pub lazy: std::sync::OnceLock<std::sync::Arc<crate::lazy::LazyViews>>,
    /// Other users of the node store's blobs (the CSI volumes): GC keeps
    /// what they name and waits while they are busy.
    pub blob_users: std::sync::OnceLock<std::sync::Arc<dyn BlobUsers>>,
}

/// Something besides snapshots that holds blobs of the node store.
pub trait BlobUsers: Send + Sync {
    /// Runs `gc` with the hex digests to keep, holding off any change to
    /// them (a publish adding blobs) until it returns. When such a change is
    /// in flight it is put off, not dropped: the last publish to end runs it.
    fn during_gc(&self, gc: &mut dyn FnMut(&std::collections::HashSet<String>));
}

pub fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

impl Snapshots {
    pub fn open(root: &Path) -> Result<Snapshots> {
        std::fs::create_dir_all(root.join("snapshots")).ctx("create", root.join("snapshots"))?;
        let cas = modelpack_common::cas::Cas::open(root)?;
        let meta = Meta::open(&root.join("metadata.redb"))?;
        let s = Snapshots {
            root: root.to_path_buf(),
            cas,
            meta,
            lock: Mutex::new(()),
            in_flight: Mutex::new(std::collections::HashMap::new()),
            lazy: std::sync::OnceLock::new(),
            blob_users: std::sync::OnceLock::new(),
        };
        // CSI volumes' blobs are named only once the CSI service is up
        // (`blob_users`); until then, free no blob (main runs GC after).
        if root.join("csi/volumes.json").exists() {
            s.cleanup_dirs()?;
        } else {
            s.cleanup()?;
        }
        Ok(s)
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    pub fn fs(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    /// Marks a blob as being fetched or committed, so GC (`Remove`,
    /// `Cleanup`) keeps it until the returned guard drops.
    pub fn in_flight(&self, hex: &str) -> InFlight<'_> {
        *self
            .in_flight
            .lock()
            .unwrap()
            .entry(hex.to_string())
            .or_insert(0) += 1;
        InFlight {
            s: self,
            hex: hex.to_string(),
        }
    }

    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.cas.blobs_dir().join(hex)
    }

    /// Parent chain of `parent` (nearest first), all committed.
    fn chain(&self, parent: &str) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut cur = parent.to_string();
        while !cur.is_empty() {
            let r = self
                .meta
                .get(&cur)?
                .ok_or_else(|| SnapError::NotFound(cur.clone()))?;
            cur = r.parent.clone();
            out.push(r);
        }
        Ok(out)
    }

    /// Creates an active (`Kind::Active`) or view snapshot on top of `parent`.
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        if key.is_empty() {
            return Err(SnapError::InvalidArgument("snapshot key is empty".into()));
        }
        let _g = self.lock.lock().unwrap();
        if !parent.is_empty() {
            let p = self
                .meta
                .get(parent)?
                .ok_or_else(|| SnapError::NotFound(format!("parent {parent}")))?;
            if p.kind != Kind::Committed {
                return Err(SnapError::FailedPrecondition(format!(
                    "parent {parent} is not committed"
                )));
            }
        }
        if self.meta.get(key)?.is_some() {
            return Err(SnapError::AlreadyExists(key.to_string()));
        }
        let id = self.meta.update(|t| t.next_id())?;
        let dir = self.dir(id);
        std::fs::create_dir_all(dir.join("fs")).ctx("create", dir.join("fs"))?;
        if kind == Kind::Active {
            std::fs::create_dir_all(dir.join("work")).ctx("create", dir.join("work"))?;
        }
        let chain = self.chain(parent)?;
        if kind == Kind::View && chain.iter().any(|r| !r.model.is_empty()) {
            let placed = self.place_model_view(id, &chain);
            if let Err(e) = placed {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
        let now = now_nanos();
        let rec = Record {
            id,
            name: key.to_string(),
            parent: parent.to_string(),
            kind,
            labels,
            created: now,
            updated: now,
            model: vec![],
        };
        let res = self.meta.update(|t| {
            if t.get(key)?.is_some() {
                return Err(SnapError::AlreadyExists(key.to_string()));
            }
            t.put(&rec)
        });
        if let Err(e) = res {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        self.mounts_for(&rec)
    }

    /// Fills a View of a model chain: the FUSE view while a lazy blob is
    /// incomplete (or a lazy tar layer is in the chain), else hardlinks of
    /// every file into one directory.
    fn place_model_view(&self, id: u64, chain: &[Record]) -> Result<()> {
        let lazy = self.lazy.get();
        if let Some(l) = lazy.filter(|l| l.needs_fuse(chain)) {
            return l.mount_view(id, &self.fs(id), chain, &|i| self.fs(i));
        }
        if lazy.is_none() && chain.iter().any(crate::lazy::is_lazy) {
            // Without the FUSE server only complete raw lazy layers can be linked.
            for r in chain.iter().filter(|r| crate::lazy::is_lazy(r)) {
                for f in &r.model {
                    if f.offset != 0 || !self.blob_path(&f.blob).exists() {
                        return Err(SnapError::FailedPrecondition(format!(
                            "{} is served lazily and this snapshotter runs without its FUSE server",
                            r.name
                        )));
                    }
                }
            }
        }
        merge_model_files(self, chain, &self.fs(id))
    }

    /// After a restart: every View of a chain with lazy layers is served
    /// again at its directory (or, once its blobs are complete, laid out
    /// with hardlinks). Returns how many views were restored.
    pub fn restore_lazy_views(&self) -> Result<usize> {
        let mut n = 0;
        for r in self.meta.all()? {
            if r.kind != Kind::View {
                continue;
            }
            let chain = self.chain(&r.parent)?;
            if !chain.iter().any(crate::lazy::is_lazy) {
                continue;
            }
            crate::lazy::detach(&self.fs(r.id));
            if let Err(e) = self.place_model_view(r.id, &chain) {
                tracing::error!(view = %r.name, "cannot serve the lazy view again: {e}");
                continue;
            }
            n += 1;
        }
        Ok(n)
    }

    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let r = self
            .meta
            .get(key)?
            .ok_or_else(|| SnapError::NotFound(key.to_string()))?;
        if r.kind == Kind::Committed {
            return Err(SnapError::FailedPrecondition(format!(
                "{key} is committed; mounts exist only for active and view snapshots"
            )));
        }
        self.mounts_for(&r)
    }

    fn mounts_for(&self, r: &Record) -> Result<Vec<Mount>> {
        let chain = self.chain(&r.parent)?;
        let bind = |src: PathBuf, ro: bool| Mount {
            r#type: "bind".into(),
            source: src.display().to_string(),
            target: String::new(),
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        };
        if r.kind == Kind::View && chain.iter().any(|c| !c.model.is_empty()) {
            return Ok(vec![bind(self.fs(r.id), true)]);
        }
        match (r.kind, chain.len()) {
            (Kind::Active, 0) => Ok(vec![bind(self.fs(r.id), false)]),
            (Kind::View, 0) => Ok(vec![bind(self.fs(r.id), true)]),
            (Kind::View, 1) => Ok(vec![bind(self.fs(chain[0].id), true)]),
            (Kind::View, _) => {
                let lower: Vec<String> = chain
                    .iter()
                    .map(|c| self.fs(c.id).display().to_string())
                    .collect();
                Ok(vec![Mount {
                    r#type: "overlay".into(),
                    source: "overlay".into(),
                    target: String::new(),
                    options: vec![format!("lowerdir={}", lower.join(":"))],
                }])
            }
            _ => {
                let lower: Vec<String> = chain
                    .iter()
                    .map(|c| self.fs(c.id).display().to_string())
                    .collect();
                Ok(vec![Mount {
                    r#type: "overlay".into(),
                    source: "overlay".into(),
                    target: String::new(),
                    options: vec![
                        "index=off".into(),
                        format!("workdir={}", self.dir(r.id).join("work").display()),
                        format!("upperdir={}", self.fs(r.id).display()),
                        format!("lowerdir={}", lower.join(":")),
                    ],
                }])
            }
        }
    }

    pub fn commit(&self, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<()> {
        let _g = self.lock.lock().unwrap();
        self.meta.update(|t| {
            let mut r = t
                .get(key)?
                .ok_or_else(|| SnapError::NotFound(key.to_string()))?;
            if r.kind != Kind::Active {
                return Err(SnapError::FailedPrecondition(format!(
                    "{key} is not an active snapshot"
                )));
            }
            if t.get(name)?.is_some() {
                return Err(SnapError::AlreadyExists(name.to_string()));
            }
            t.delete(key)?;
            r.name = name.to_string();
            r.kind = Kind::Committed;
            r.labels.extend(labels);
            // A commit creates a new snapshot: containerd's storage gives it
            // Created == Updated == now (its snapshot testsuite checks this).
            let now = now_nanos();
            r.created = now;
            r.updated = now;
            t.put(&r)
        })?;
        Ok(())
    }

    /// Records a committed snapshot whose data is already in place (model layers).
    pub fn commit_prepared(&self, rec: Record) -> Result<()> {
        let _g = self.lock.lock().unwrap();
        self.meta.update(|t| {
            if t.get(&rec.name)?.is_some() {
                return Err(SnapError::AlreadyExists(rec.name.clone()));
            }
            t.put(&rec)
        })
    }

    pub fn remove(&self, key: &str) -> Result<()> {
        let _g = self.lock.lock().unwrap();
        let r = self.meta.update(|t| {
            let r = t
                .get(key)?
                .ok_or_else(|| SnapError::NotFound(key.to_string()))?;
            if t.has_children(key)? {
                return Err(SnapError::FailedPrecondition(format!(
                    "cannot remove {key}: snapshots depend on it (remove them first)"
                )));
            }
            t.delete(key)?;
            Ok(r)
        })?;
        if let Some(l) = self.lazy.get() {
            l.unmount_view(r.id);
        }
        crate::lazy::detach(&self.fs(r.id));
        let _ = std::fs::remove_dir_all(self.dir(r.id));
        self.free_unreferenced_blobs()?;
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Record> {
        self.meta
            .get(key)?
            .ok_or_else(|| SnapError::NotFound(key.to_string()))
    }

    /// Only labels are mutable: paths `labels` (replace all) or `labels.<key>`.
    pub fn update_labels(
        &self,
        key: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<Record> {
        let _g = self.lock.lock().unwrap();
        self.meta.update(|t| {
            let mut r = t
                .get(key)?
                .ok_or_else(|| SnapError::NotFound(key.to_string()))?;
            if paths.is_empty() {
                r.labels = labels.clone();
            }
            for p in paths {
                if p == "labels" {
                    r.labels = labels.clone();
                } else if let Some(k) = p.strip_prefix("labels.") {
                    match labels.get(k) {
                        Some(v) => r.labels.insert(k.to_string(), v.clone()),
                        None => r.labels.remove(k),
                    };
                } else {
                    return Err(SnapError::InvalidArgument(format!(
                        "cannot update field {p:?}: only labels are mutable"
                    )));
                }
            }
            r.updated = now_nanos();
            t.put(&r)?;
            Ok(r)
        })
    }

    /// Disk usage: bytes and inodes of the snapshot's own data.
    pub fn usage(&self, key: &str) -> Result<(i64, i64)> {
        let r = self.stat(key)?;
        let mut size = 0i64;
        let mut inodes = 0i64;
        let mut seen = std::collections::HashSet::new();
        for e in walkdir::WalkDir::new(self.fs(r.id)).min_depth(1) {
            let Ok(e) = e else { continue };
            let Ok(m) = e.metadata() else { continue };
            use std::os::unix::fs::MetadataExt;
            if seen.insert((m.dev(), m.ino())) {
                inodes += 1;
                size += (m.blocks() * 512) as i64;
            }
        }
        Ok((size, inodes))
    }

    /// Removes directories without records and blobs no snapshot (or other
    /// user, see [`BlobUsers`]) references.
    pub fn cleanup(&self) -> Result<()> {
        self.cleanup_dirs()?;
        self.free_unreferenced_blobs()
    }

    /// Removes snapshot directories without records and stale scratch files.
    fn cleanup_dirs(&self) -> Result<()> {
        let records = self.meta.all()?;
        let ids: std::collections::HashSet<String> =
            records.iter().map(|r| r.id.to_string()).collect();
        for e in std::fs::read_dir(self.root.join("snapshots"))
            .ctx("list", self.root.join("snapshots"))?
            .flatten()
        {
            if !ids.contains(&e.file_name().to_string_lossy().to_string()) {
                crate::lazy::detach(&e.path().join("fs"));
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        // A partial download held (flock) by a fetch in flight is not debris.
        if let Ok(scratch) = self.cas.scratch() {
            for name in scratch.names() {
                if !modelpack_common::cas::is_in_use(&scratch, &name) {
                    let _ = scratch.remove_file(&name);
                }
            }
        }
        Ok(())
    }

    fn free_unreferenced_blobs(&self) -> Result<()> {
        match self.blob_users.get() {
            None => self.free_blobs_except(&Default::default()),
            Some(users) => {
                let mut result = Ok(());
                users.during_gc(&mut |keep| result = self.free_blobs_except(keep));
                result
            }
        }
    }

    fn free_blobs_except(&self, others: &std::collections::HashSet<String>) -> Result<()> {
        let records = self.meta.all()?;
        let used: std::collections::HashSet<&str> = records
            .iter()
            .flat_map(|r| r.model.iter().map(|m| m.blob.as_str()))
            .chain(records.iter().filter_map(|r| {
                r.labels
                    .get(modelpack_common::labels::LABEL_CHUNK_INDEX)
                    .and_then(|d| d.strip_prefix("sha256:"))
            }))
            .chain(others.iter().map(String::as_str))
            .collect();
        // Partial blobs of layers no snapshot uses any more.
        if let Ok(rd) = std::fs::read_dir(self.cas.sparse_dir()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let hex = name.split('.').next().unwrap_or_default().to_string();
                if !used.contains(hex.as_str()) && !in_use_sparse(self, &hex) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let in_flight = self.in_flight.lock().unwrap().clone();
        for e in std::fs::read_dir(self.root.join("blobs/sha256"))
            .ctx("list", self.root.join("blobs/sha256"))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if !used.contains(name.as_str()) && !in_flight.contains_key(&name) {
                let _ = std::fs::remove_file(e.path());
                let _ = self.meta.drop_chunks(&name);
            }
        }
        Ok(())
    }
}

/// Is a partial blob open in the FUSE server (a view still reads it)?
fn in_use_sparse(s: &Snapshots, hex: &str) -> bool {
    s.lazy.get().is_some_and(|l| l.has_sparse(hex))
}

/// Hardlinks every model file of the chain into `dest` at its path (nearest
/// layer wins): from the layer's directory, or for a lazily committed raw
/// layer whose blob is complete, from the blob itself.
fn merge_model_files(s: &Snapshots, chain: &[Record], dest: &Path) -> Result<()> {
    for r in chain.iter().rev() {
        for f in &r.model {
            let src = if crate::lazy::is_lazy(r) {
                s.blob_path(&f.blob)
            } else {
                s.fs(r.id).join(&f.filepath)
            };
            link_file(&src, &dest.join(&f.filepath))?;
        }
        if r.model.is_empty() {
            continue;
        }
    }
    Ok(())
}

pub fn link_file(src: &Path, dst: &Path) -> Result<()> {
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).ctx("create", p)?;
    }
    let _ = std::fs::remove_file(dst);
    std::fs::hard_link(src, dst).or_else(|_| std::fs::copy(src, dst).map(|_| ()))?;
    Ok(())
}

/// Keeps a blob out of GC while alive; see [`Snapshots::in_flight`].
pub struct InFlight<'a> {
    s: &'a Snapshots,
    hex: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self.s.in_flight.lock().unwrap();
        if let Some(n) = m.get_mut(&self.hex) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.hex);
            }
        }
    }
}

/// A record for a committed model snapshot.
pub fn model_record(
    id: u64,
    name: &str,
    parent: &str,
    labels: BTreeMap<String, String>,
    files: Vec<ModelFile>,
) -> Record {
    let now = now_nanos();
    Record {
        id,
        name: name.into(),
        parent: parent.into(),
        kind: Kind::Committed,
        labels,
        created: now,
        updated: now,
        model: files,
    }
}

#[cfg(test)]
mod tests;
