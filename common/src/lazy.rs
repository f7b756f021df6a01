//! The lazy attach plan: for each layer of a [`ModelView`], where its bytes
//! come from when a reader opens a file — the complete blob in the store,
//! chunks fetched on demand through a chunk index the trust policy accepts
//! (docs/chunk-index.md), or neither (the layer must be fetched whole before
//! it is shown) — and which files it shows at which offsets.
//!
//! One owner for this decision, so `modelpack mount`, `resolve` and the
//! snapshotter's lazy Prepare agree on what is served before its whole
//! digest has been checked: only chunks of an index that is bound to the
//! model digest, pinned by the user, or unbound where the user opted in.

use crate::cas::Cas;
use crate::chunkindex::LayerIndex;
use crate::chunkindex::trust::{Binding, LayerTrust};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::extract::safe_relative_path;
use crate::media::LayerFormat;
use crate::view::{ModelView, VIEW_FILE_MODE, ViewFile, ViewLayer};

/// Where one layer's bytes come from.
#[derive(Debug, Clone)]
pub enum LayerSource {
    /// The whole blob is in the store (verified when it was stored).
    Complete,
    /// Served chunk by chunk, each verified against this index before a
    /// byte is returned; the whole digest is checked when the last arrives.
    Lazy {
        index: Box<LayerIndex>,
        binding: Binding,
    },
    /// No index the policy accepts: fetched whole before it is shown.
    Fetch,
}

/// One layer and the source the plan picked for it.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    pub layer: ViewLayer,
    pub source: LayerSource,
}

impl LayerPlan {
    pub fn is_lazy(&self) -> bool {
        matches!(self.source, LayerSource::Lazy { .. })
    }
}

/// What the user allows beyond bound and pinned indexes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LazyPolicy {
    /// Serve through indexes linked only by a referrer (anyone with push
    /// access to the repository can add one); the whole digest is still
    /// checked at completion.
    pub allow_unbound: bool,
}

/// Picks a source for every layer of `view`. `trust` is
/// [`crate::chunkindex::trust::assess`]'s verdict for the same manifest and
/// `indexes` the parsed indexes it was judged on.
pub fn plan(
    view: &ModelView,
    trust: &[LayerTrust],
    indexes: &[(Digest, LayerIndex)],
    cas: &Cas,
    policy: LazyPolicy,
) -> Vec<LayerPlan> {
    view.layers
        .iter()
        .map(|layer| {
            let digest = &layer.descriptor.digest;
            let source = if cas.has(digest) {
                LayerSource::Complete
            } else {
                trust
                    .iter()
                    .find(|t| &t.layer == digest)
                    .filter(|t| t.binding.lazy_allowed(policy.allow_unbound))
                    .and_then(|t| {
                        let want = t.index.as_ref()?;
                        let (_, index) = indexes.iter().find(|(d, _)| d == want)?;
                        Some(LayerSource::Lazy {
                            index: Box::new(index.clone()),
                            binding: t.binding,
                        })
                    })
                    .unwrap_or(LayerSource::Fetch)
            };
            LayerPlan {
                layer: layer.clone(),
                source,
            }
        })
        .collect()
}

/// The files a planned layer shows, with their offsets in its blob: a raw
/// layer's one file; an uncompressed tar layer's regular files, from the
/// index when served lazily (the index is trusted for that layer) or from
/// the local blob's headers once it is complete. A compressed tar layer has
/// no offsets to serve from and is refused with the layer named.
pub fn layer_files(plan: &LayerPlan, cas: &Cas) -> Result<Vec<ViewFile>> {
    let layer = &plan.layer;
    if layer.format == LayerFormat::Raw {
        return Ok(layer.files.clone());
    }
    let digest = &layer.descriptor.digest;
    let name = crate::extract::layer_name(&layer.descriptor);
    if !layer.format.is_uncompressed() {
        return Err(Error::Artifact(format!(
            "layer {name} ({digest}) is a compressed tar; a mounted view serves raw and uncompressed tar layers only (use `extract` for this model)"
        )));
    }
    let entries = match &plan.source {
        LayerSource::Lazy { index, .. } => index.files.clone(),
        LayerSource::Complete => {
            let path = cas.blob_path(digest);
            let f = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
            crate::chunkindex::tar::scan_file(&f, layer.descriptor.size)
                .map_err(|reason| Error::Artifact(format!("layer {name} ({digest}): {reason}")))?
        }
        LayerSource::Fetch => {
            return Err(Error::Invalid(format!(
                "layer {name} ({digest}) must be fetched before its files are known"
            )));
        }
    };
    entries
        .iter()
        .map(|e| {
            let shown = format!("{} in layer {name}", e.path);
            let end = e.offset.checked_add(e.size);
            if end.is_none_or(|end| end > layer.descriptor.size) {
                return Err(Error::Artifact(format!(
                    "{shown}: bytes {}+{} lie outside the layer",
                    e.offset, e.size
                )));
            }
            Ok(ViewFile {
                path: safe_relative_path(&shown, &e.path)?,
                blob: digest.clone(),
                offset: e.offset,
                size: e.size,
                // Read-only, keeping only the executable bits the tar recorded.
                mode: VIEW_FILE_MODE | (e.mode & 0o111),
            })
        })
        .collect()
}

mod open;

pub use open::{Attachable, fetch_whole, open_local, open_remembered, open_remote};

#[cfg(test)]
mod tests;
