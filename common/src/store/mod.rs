//! The local store: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`) under `~/.modelpack`, `$MODELPACK_HOME` or
//! `--storage-dir`, so `skopeo copy oci:<store>:<ref>` and other OCI tools can
//! read it directly.
//!
//! Every write goes to a temp file inside the store, is fsynced, verified
//! against its digest and only then renamed into `blobs/`; a crash can leave
//! garbage in `tmp/` but never a blob whose content does not match its name.
//! `tmp/` is private (0700) and only ever written through a directory handle
//! that never follows symlinks. A lock file serialises index writers; every
//! build and pull holds a shared *lease* (`.gc.lock`) for its whole run, and
//! `prune`/`fsck` take it exclusively, so garbage collection never deletes a
//! blob an in-flight build or pull has written but not yet tagged. Readers of
//! immutable blobs need no lock.

mod blob;
mod fsck;
mod index;
mod lock;

pub use crate::cas::{PartialBlob, is_in_use};
pub use blob::BlobWriter;
pub use fsck::{FsckProblem, FsckReport};
pub use index::{IndexEntry, PENDING_TAG_ANNOTATION, REPOSITORY_ANNOTATION};
pub use lock::{StoreLease, StoreLock};

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{Descriptor, Manifest};
use crate::reference::Reference;

/// A handle on a store directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    cas: crate::cas::Cas,
}

/// A manifest loaded from the store together with its exact bytes.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

impl Store {
    /// `$MODELPACK_HOME`, else `~/.modelpack`.
    pub fn default_root() -> PathBuf {
        if let Some(h) = std::env::var_os("MODELPACK_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(h);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".modelpack")
    }

    /// Opens a store, creating an empty layout if the directory has none.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        let cas = crate::cas::Cas::open(&root)?;
        let store = Store { root, cas };
        store.init()?;
        Ok(store)
    }

    fn init(&self) -> Result<()> {
        let layout = self.root.join("oci-layout");
        if !layout.exists() {
            write_atomic(
                &layout,
                br#"{"imageLayoutVersion":"1.0.0"}"#,
                &self.tmp_dir(),
            )?;
        }
        let index = self.root.join("index.json");
        if !index.exists() {
            write_atomic(
                &index,
                br#"{"schemaVersion":2,"manifests":[]}"#,
                &self.tmp_dir(),
            )?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where in-flight writes live (same filesystem as `blobs/`, so rename is atomic).
    pub fn tmp_dir(&self) -> PathBuf {
        self.cas.tmp_dir()
    }

    /// The content-addressed blob store under this layout (`blobs/`, `tmp/`, `sparse/`).
    pub fn cas(&self) -> &crate::cas::Cas {
        &self.cas
    }

    /// Takes the store's write lock (blocking until other writers finish).
    pub fn lock(&self) -> Result<StoreLock> {
        StoreLock::exclusive(&self.root.join(".lock"))
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.cas.blob_path(digest)
    }

    /// A shared lease: while held, `prune` and `fsck` wait (they take it exclusively).
    pub fn lease(&self) -> Result<StoreLease> {
        StoreLease::shared(&self.root.join(".gc.lock"))
    }

    /// The exclusive side of [`Store::lease`]: no build or pull is in flight while held.
    pub fn gc_lock(&self) -> Result<StoreLease> {
        StoreLease::exclusive(&self.root.join(".gc.lock"))
    }

    /// The private scratch directory, as a handle that never follows symlinks.
    pub fn scratch(&self) -> Result<crate::confined::ConfinedDir> {
        self.cas.scratch()
    }

    /// See [`crate::cas::Cas::commit_partial`].
    pub fn commit_partial(
        &self,
        scratch: &crate::confined::ConfinedDir,
        partial: &PartialBlob,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        self.cas.commit_partial(scratch, partial, digest, size)
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.cas.has(digest)
    }

    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        self.cas.size(digest)
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<fs::File> {
        let p = self.blob_path(digest);
        fs::File::open(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound {
                    what: format!("blob {digest} in store {}", self.root.display()),
                    hint: Some("run `modelpack prune` only when no build is running; pull the model again to restore it".into()),
                }
            } else {
                Error::io("open", p, e)
            }
        })
    }

    /// Reads a small blob fully and checks its digest (configs, manifests).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut buf)
            .ctx("read", self.blob_path(digest))?;
        let actual = Digest::of(&buf);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("store blob {}", self.blob_path(digest).display()),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(buf)
    }

    /// Stores an in-memory blob (config, manifest) and returns its digest.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest> {
        let digest = Digest::of(data);
        if !self.has_blob(&digest) {
            let mut w = self.blob_writer()?;
            std::io::Write::write_all(&mut w, data).ctx("write", w.temp_path().to_path_buf())?;
            w.commit(Some(&digest))?;
        }
        Ok(digest)
    }

    /// A writer for a new blob; see [`BlobWriter::commit`].
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::create(self)
    }

    /// Loads the manifest a reference points to (by tag from index.json, or by digest).
    pub fn load_manifest(&self, reference: &Reference) -> Result<LoadedManifest> {
        let desc = self.resolve(reference)?;
        self.load_manifest_digest(&desc.digest)
    }

    pub fn load_manifest_digest(&self, digest: &Digest) -> Result<LoadedManifest> {
        let bytes = self.read_blob(digest)?;
        let manifest = Manifest::parse(&bytes, &format!("manifest {digest}"))?;
        Ok(LoadedManifest {
            digest: digest.clone(),
            bytes,
            manifest,
        })
    }

    /// Finds the manifest descriptor for a reference.
    pub fn resolve(&self, reference: &Reference) -> Result<Descriptor> {
        let entries = self.entries()?;
        if let Some(d) = &reference.digest {
            if let Some(e) = entries.iter().find(|e| &e.descriptor.digest == d) {
                return Ok(e.descriptor.clone());
            }
            if self.has_blob(d) {
                let bytes = self.read_blob(d)?;
                let media_type = crate::manifest::sniff_media_type(&bytes)
                    .unwrap_or_else(|| crate::media::OCI_MANIFEST.to_string());
                return Ok(Descriptor::new(media_type, d.clone(), bytes.len() as u64));
            }
        } else {
            let want = reference
                .with_tag(reference.tag_or_default().unwrap_or("latest"))
                .to_string();
            if let Some(e) = entries
                .iter()
                .find(|e| e.reference.as_deref() == Some(want.as_str()))
            {
                return Ok(e.descriptor.clone());
            }
        }
        Err(Error::NotFound {
            what: format!("{reference} in the local store {}", self.root.display()),
            hint: Some(format!(
                "run `modelpack ls` to see what is stored, or `modelpack pull {reference}`"
            )),
        })
    }

    /// Every manifest recorded in index.json.
    pub fn entries(&self) -> Result<Vec<IndexEntry>> {
        index::read(&self.root)
    }

    /// Points `reference` (which must carry a tag) at a stored manifest.
    pub fn tag(&self, reference: &Reference, manifest: &Descriptor) -> Result<()> {
        let _lock = self.lock()?;
        index::tag(self, reference, manifest)
    }

    /// Records a manifest that has no tag (pulled by digest) so prune keeps it.
    pub fn record_untagged(&self, reference: &Reference, manifest: &Descriptor) -> Result<()> {
        let _lock = self.lock()?;
        index::record_untagged(self, reference, manifest, None)
    }

    /// Records a model about to be served lazily: untagged (its blobs are
    /// not all here, so no verb finds it by tag), remembering the tag it gets
    /// once complete for `ls` ([`index::PENDING_TAG_ANNOTATION`]).
    pub fn record_lazy(&self, reference: &Reference, manifest: &Descriptor) -> Result<()> {
        let _lock = self.lock()?;
        // The tag completion gives it (`mount` tags as `pull` does).
        let pending = (reference.tag.is_some() || reference.digest.is_none())
            .then(|| reference.tag_or_default())
            .flatten();
        index::record_untagged(self, reference, manifest, pending)
    }

    /// Removes a tag, or with a digest reference every entry for that manifest.
    /// Returns how many index entries were removed. Blobs are freed by [`Store::prune`].
    pub fn remove(&self, reference: &Reference) -> Result<usize> {
        let _lock = self.lock()?;
        index::remove(self, reference)
    }

    /// Deletes blobs no index entry reaches (and stale temp files), or with
    /// `dry_run` only reports them. Returns `(digest, size)` of each.
    pub fn prune(&self, dry_run: bool) -> Result<Vec<(Digest, u64)>> {
        let _gc = self.gc_lock()?;
        let _lock = self.lock()?;
        let mut keep = std::collections::HashSet::new();
        for e in self.entries()? {
            self.mark(&e.descriptor.digest, &mut keep)?;
        }
        let mut freed = Vec::new();
        let dir = self.root.join("blobs").join("sha256");
        for entry in fs::read_dir(&dir).ctx("read directory", &dir)? {
            let entry = entry.ctx("read directory", &dir)?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Ok(d) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            if keep.contains(&d) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                fs::remove_file(entry.path()).ctx("remove", entry.path())?;
            }
            freed.push((d, size));
        }
        if !dry_run {
            // Temp files are only live while a writer holds a lease, and we hold the
            // exclusive side: none is. Partial downloads are kept for resuming.
            // Other users of the same blobs (a lazy reader, a snapshotter on
            // this root) take no lease but lock their scratch files: skip those.
            let scratch = self.scratch()?;
            for name in scratch.names() {
                let is_partial = name.to_string_lossy().ends_with(".partial");
                if !is_partial && !is_in_use(&scratch, &name) {
                    let _ = scratch.remove_file(&name);
                }
            }
        }
        freed.sort();
        Ok(freed)
    }

    fn mark(&self, digest: &Digest, keep: &mut std::collections::HashSet<Digest>) -> Result<()> {
        if !keep.insert(digest.clone()) || !self.has_blob(digest) {
            return Ok(());
        }
        let bytes = self.read_blob(digest)?;
        if let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) {
            keep.insert(m.config.digest.clone());
            for l in &m.layers {
                keep.insert(l.digest.clone());
            }
            if let Some(s) = &m.subject {
                self.mark(&s.digest, keep)?;
            }
        } else if let Ok(i) = serde_json::from_slice::<crate::manifest::Index>(&bytes) {
            for m in &i.manifests {
                self.mark(&m.digest, keep)?;
            }
        }
        Ok(())
    }
}

/// Writes a small file atomically: temp file in `tmp`, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8], tmp: &Path) -> Result<()> {
    use std::io::Write;
    fs::create_dir_all(tmp).ctx("create directory", tmp)?;
    let mut f = tempfile_in(tmp)?;
    f.1.write_all(data).ctx("write", &f.0)?;
    f.1.sync_all().ctx("fsync", &f.0)?;
    fs::rename(&f.0, path).ctx("rename into place", path)?;
    Ok(())
}

/// Creates a uniquely named file in `dir`.
pub(crate) fn tempfile_in(dir: &Path) -> Result<(PathBuf, fs::File)> {
    for _ in 0..16 {
        let name = format!(".tmp-{}-{:016x}", std::process::id(), rand::random::<u64>());
        let p = dir.join(name);
        match fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create temp file", p, e)),
        }
    }
    Err(Error::Store {
        path: dir.to_path_buf(),
        message: "could not create a unique temp file".into(),
    })
}

#[cfg(test)]
mod tests;
