//! A persistent digest cache so an unchanged model rebuilds without reading
//! its weights again (the no-op rebuild target is ≤ 5% of the first build).
//!
//! Keyed by the file's identity and change markers (device, inode, size,
//! mtime and ctime in nanoseconds) plus everything that changes the layer
//! bytes (format, path, mode, mtime option). A hit is only trusted when the
//! blob is present in the destination, so a stale entry costs a re-read, never
//! a wrong layer.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::store::Store;

use super::{LayerEncoding, PackFile, PackOptions};

pub struct DigestCache {
    path: PathBuf,
    tmp: PathBuf,
    entries: Mutex<BTreeMap<String, LayerEncoding>>,
    dirty: Mutex<bool>,
}

impl DigestCache {
    /// Loads `<store>/cache/digests.json`; a missing or unreadable cache is empty.
    pub fn open(store: &Store) -> DigestCache {
        let path = store.root().join("cache").join("digests.json");
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        DigestCache {
            path,
            tmp: store.tmp_dir(),
            entries: Mutex::new(entries),
            dirty: Mutex::new(false),
        }
    }

    fn key(file: &PackFile, opts: &PackOptions) -> Option<String> {
        let m = std::fs::metadata(&file.abs_path).ok()?;
        Some(format!(
            "{}|{}|{}|{}|{}.{}|{}.{}|{}|{}|{:o}|{}|{}",
            file.abs_path.display(),
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            opts.format,
            file.rel_path,
            super::normalized_mode(file.mode),
            opts.mtime.map_or("source".to_string(), |t| t.to_string()),
            opts.chunk_size.unwrap_or(0)
        ))
    }

    pub fn lookup(&self, file: &PackFile, opts: &PackOptions) -> Option<LayerEncoding> {
        let key = Self::key(file, opts)?;
        self.entries.lock().unwrap().get(&key).cloned()
    }

    pub fn record(&self, file: &PackFile, opts: &PackOptions, enc: &LayerEncoding) {
        if let Some(key) = Self::key(file, opts) {
            self.entries.lock().unwrap().insert(key, enc.clone());
            *self.dirty.lock().unwrap() = true;
        }
    }

    /// Best effort: a cache that cannot be written only costs speed next time.
    pub fn save(&self) {
        if !*self.dirty.lock().unwrap() {
            return;
        }
        let entries = self.entries.lock().unwrap();
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(bytes) = serde_json::to_vec(&*entries)
            && let Err(e) = crate::store::write_atomic(&self.path, &bytes, &self.tmp)
        {
            tracing::debug!("digest cache not saved: {e}");
        }
    }
}

fn index_dir(store: &Store) -> PathBuf {
    store.root().join("cache").join("chunk-indexes")
}

/// Keeps a chunk index blob next to the digest cache, for builds that store
/// nothing else (`build --output-remote`): a later no-op build publishes the
/// index again without reading the file. Returns the blob's digest.
pub fn put_index(store: &Store, bytes: &[u8]) -> crate::Result<crate::Digest> {
    let d = crate::Digest::of(bytes);
    let dir = index_dir(store);
    std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io("create directory", &dir, e))?;
    let p = dir.join(d.hex());
    if !p.exists() {
        crate::store::write_atomic(&p, bytes, &store.tmp_dir())?;
    }
    Ok(d)
}

/// A chunk index kept by [`put_index`], if present and still matching its digest.
pub fn get_index(store: &Store, d: &crate::Digest) -> Option<Vec<u8>> {
    let p = index_dir(store).join(d.hex());
    let m = std::fs::metadata(&p).ok()?;
    if m.len() > crate::chunkindex::MAX_INDEX_BLOB {
        return None;
    }
    std::fs::read(&p)
        .ok()
        .filter(|b| &crate::Digest::of(b) == d)
}
