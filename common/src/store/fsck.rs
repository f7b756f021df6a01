//! `fsck`: checks that every blob hashes to its name, every reference's
//! manifest, config and layers are present, and lists debris in `tmp/`.
//! With `repair`, bad blobs and stale temp/partial files are removed (never
//! one a live writer holds: fsck runs under the exclusive GC lease).

use std::fs;

use serde::Serialize;

use crate::digest::{Digest, hash_file};
use crate::error::{IoContext, Result};
use crate::manifest::Manifest;

use super::Store;

/// One thing wrong with a store.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum FsckProblem {
    /// A blob's bytes do not hash to its file name.
    CorruptBlob { digest: String, actual: String },
    /// A file in `blobs/sha256` that is not named like a digest.
    StrayFile { path: String },
    /// A reference's manifest, or a blob it needs, is missing.
    MissingBlob { reference: String, digest: String },
    /// A stored manifest that does not parse.
    BadManifest {
        reference: String,
        digest: String,
        message: String,
    },
    /// A temp or partial file left by an interrupted writer.
    Debris { path: String, size: u64 },
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FsckReport {
    pub blobs_verified: usize,
    pub bytes_verified: u64,
    pub references_checked: usize,
    pub problems: Vec<FsckProblem>,
    pub repaired: usize,
}

impl FsckReport {
    /// Debris alone is not corruption: a resumable partial download is expected after a crash.
    pub fn is_clean(&self) -> bool {
        self.problems
            .iter()
            .all(|p| matches!(p, FsckProblem::Debris { .. }))
    }
}

impl Store {
    pub fn fsck(&self, repair: bool) -> Result<FsckReport> {
        let _gc = self.gc_lock()?;
        let _lock = self.lock()?;
        let mut report = FsckReport::default();
        let dir = self.root.join("blobs").join("sha256");
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .ctx("read directory", &dir)?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(want) = format!("sha256:{name}").parse::<Digest>() else {
                report.problems.push(FsckProblem::StrayFile {
                    path: e.path().display().to_string(),
                });
                if repair && fs::remove_file(e.path()).is_ok() {
                    report.repaired += 1;
                }
                continue;
            };
            let (actual, len) = hash_file(&e.path())?;
            if actual != want {
                report.problems.push(FsckProblem::CorruptBlob {
                    digest: want.to_string(),
                    actual: actual.to_string(),
                });
                if repair && fs::remove_file(e.path()).is_ok() {
                    report.repaired += 1;
                }
                continue;
            }
            report.blobs_verified += 1;
            report.bytes_verified += len;
        }
        for entry in self.entries()? {
            report.references_checked += 1;
            let shown = entry
                .reference
                .clone()
                .unwrap_or_else(|| entry.descriptor.digest.to_string());
            let d = &entry.descriptor.digest;
            if !self.has_blob(d) {
                report.problems.push(FsckProblem::MissingBlob {
                    reference: shown,
                    digest: d.to_string(),
                });
                continue;
            }
            let bytes = match self.read_blob(d) {
                Ok(b) => b,
                Err(_) => continue, // reported above as corrupt
            };
            if let Ok(m) = Manifest::parse(&bytes, &format!("manifest {d}")) {
                for need in std::iter::once(&m.config).chain(m.layers.iter()) {
                    if !self.has_blob(&need.digest) {
                        report.problems.push(FsckProblem::MissingBlob {
                            reference: shown.clone(),
                            digest: need.digest.to_string(),
                        });
                    }
                }
            } else if serde_json::from_slice::<crate::manifest::Index>(&bytes).is_err() {
                report.problems.push(FsckProblem::BadManifest {
                    reference: shown,
                    digest: d.to_string(),
                    message: "neither an image manifest nor an index".into(),
                });
            }
        }
        if let Ok(rd) = fs::read_dir(self.tmp_dir()) {
            for e in rd.flatten() {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                report.problems.push(FsckProblem::Debris {
                    path: e.path().display().to_string(),
                    size,
                });
                if repair && fs::remove_file(e.path()).is_ok() {
                    report.repaired += 1;
                }
            }
        }
        Ok(report)
    }
}
