//! From a lazy plan ([`modelpack_common::lazy`]) to the files a
//! [`crate::ModelFs`] serves: one open handle per complete blob, one
//! [`SparseBlob`] per lazily served blob (however many files a tar layer
//! holds), every file at its offset in its blob.

use std::collections::HashMap;
use std::sync::Arc;

use modelpack_common::Error;
use modelpack_common::cas::{BlobSource, Cas, SparseBlob};
use modelpack_common::digest::Digest;
use modelpack_common::lazy::{LayerPlan, LayerSource, layer_files};
use modelpack_common::manifest::Descriptor;

use crate::{Backing, FsFile};

/// The files of every planned layer. `source` names where a lazily served
/// layer's missing chunks come from (the registry, a mirror). A layer
/// planned [`LayerSource::Fetch`] must have been fetched first: it is an
/// error here, never served unverified.
pub fn files_for(
    plans: &[LayerPlan],
    cas: &Cas,
    source: &dyn Fn(&Descriptor) -> Arc<dyn BlobSource>,
) -> Result<Vec<FsFile>, Error> {
    let mut backings: HashMap<Digest, Backing> = HashMap::new();
    let mut out = Vec::new();
    for plan in plans {
        let desc = &plan.layer.descriptor;
        let backing = match backings.get(&desc.digest) {
            Some(b) => b.clone(),
            None => {
                let b = match &plan.source {
                    LayerSource::Complete => {
                        let path = cas.blob_path(&desc.digest);
                        let f =
                            std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
                        Backing::Complete(Arc::new(f))
                    }
                    LayerSource::Lazy { index, .. } => Backing::Lazy(Arc::new(SparseBlob::open(
                        cas,
                        index.chunk_index(),
                        source(desc),
                    )?)),
                    LayerSource::Fetch => {
                        return Err(Error::Invalid(format!(
                            "layer {} has no trusted chunk index and is not in the store: fetch it before mounting",
                            desc.digest
                        )));
                    }
                };
                backings.insert(desc.digest.clone(), b.clone());
                b
            }
        };
        for f in layer_files(plan, cas)? {
            out.push(FsFile {
                path: f.path,
                backing: backing.clone(),
                offset: f.offset,
                size: f.size,
                mode: f.mode,
            });
        }
    }
    Ok(out)
}

/// How far the lazily served blobs are: `(complete blobs, all blobs,
/// present chunks, all chunks)`.
pub fn progress(files: &[FsFile]) -> (usize, usize, usize, usize) {
    let mut seen = std::collections::HashSet::new();
    let (mut done, mut all, mut present, mut chunks) = (0, 0, 0, 0);
    for f in files {
        if let Backing::Lazy(b) = &f.backing {
            if !seen.insert(b.digest().clone()) {
                continue;
            }
            all += 1;
            if b.is_complete() {
                done += 1;
            }
            present += b.present_chunks();
            chunks += b.index().chunks.len();
        }
    }
    (done, all, present, chunks)
}

/// The ranged reads behind a view's lazy files, summed over its blobs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FetchSummary {
    pub fetches: u64,
    pub bytes: u64,
    /// Chunks that failed verification (never served).
    pub refused: u64,
    /// Latency percentiles in ms (bucket upper bounds; `None` before any fetch).
    pub p50_ms: Option<u64>,
    pub p90_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

pub fn fetch_summary(files: &[FsFile]) -> FetchSummary {
    use modelpack_common::cas::{FETCH_BUCKETS_MS, fetch_percentile};
    use std::sync::atomic::Ordering::Relaxed;
    let mut seen = std::collections::HashSet::new();
    let mut hist = [0u64; FETCH_BUCKETS_MS.len() + 1];
    let mut out = FetchSummary::default();
    for f in files {
        if let Backing::Lazy(b) = &f.backing {
            if !seen.insert(b.digest().clone()) {
                continue;
            }
            let s = &b.fetch_stats;
            out.fetches += s.fetches.load(Relaxed);
            out.bytes += s.bytes.load(Relaxed);
            out.refused += s.refused.load(Relaxed);
            for (h, n) in hist.iter_mut().zip(s.histogram()) {
                *h += n;
            }
        }
    }
    out.p50_ms = fetch_percentile(&hist, 0.5);
    out.p90_ms = fetch_percentile(&hist, 0.9);
    out.p99_ms = fetch_percentile(&hist, 0.99);
    out
}
