//! Which repositories of a registry are known to hold a blob, so a push can
//! mount it server-side instead of uploading it again. Learnt from our own
//! pushes and pulls; a wrong entry only costs a failed mount attempt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::digest::Digest;
use crate::store::Store;

pub struct KnownBlobs {
    path: PathBuf,
    tmp: PathBuf,
    /// digest → set of "registry/repository"
    map: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl KnownBlobs {
    pub fn open(store: &Store) -> KnownBlobs {
        let path = store.root().join("cache").join("remote-blobs.json");
        let map = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        KnownBlobs {
            path,
            tmp: store.tmp_dir(),
            map: Mutex::new(map),
        }
    }

    pub fn record(&self, digest: &Digest, registry: &str, repository: &str) {
        self.map
            .lock()
            .unwrap()
            .entry(digest.to_string())
            .or_default()
            .insert(format!("{registry}/{repository}"));
    }

    /// Other repositories of `registry` that hold `digest`.
    pub fn mount_candidates(
        &self,
        digest: &Digest,
        registry: &str,
        repository: &str,
    ) -> Vec<String> {
        let prefix = format!("{registry}/");
        let me = format!("{registry}/{repository}");
        self.map
            .lock()
            .unwrap()
            .get(&digest.to_string())
            .map(|s| {
                s.iter()
                    .filter(|r| r.starts_with(&prefix) && **r != me)
                    .map(|r| r[prefix.len()..].to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn save(&self) {
        if let Some(d) = self.path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        if let Ok(b) = serde_json::to_vec(&*self.map.lock().unwrap()) {
            let _ = crate::store::write_atomic(&self.path, &b, &self.tmp);
        }
    }
}
