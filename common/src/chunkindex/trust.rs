//! The lazy path's trust policy, per layer (docs/chunk-index.md):
//!
//! - **bound**: the layer descriptor's `org.modelpack.chunks.digest` names
//!   the index, so the index is covered by the model digest → lazy;
//! - **pinned**: the index is linked only by a referrer, but the user pinned
//!   its digest for this model (`modelpack index --pin`) → lazy;
//! - **unbound**: linked only by a referrer, which anyone with push access
//!   to the repository can add → lazy only where the user opted in for that
//!   registry, and the whole-blob digest is still checked at completion;
//! - **none**: no usable index (or a compressed layer) → eager.
//!
//! A wrong chunk digest is caught by the whole-blob digest at completion in
//! every case; what binding decides is whether data may be served *before*
//! that check.

use serde::Serialize;

use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::media;

use super::{IndexFormat, LayerIndex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Binding {
    Bound,
    Pinned,
    Unbound,
    None,
}

impl Binding {
    /// May the lazy path serve this layer before its whole digest is checked?
    /// `opted_in`: the user allowed unbound indexes for the layer's registry.
    pub fn lazy_allowed(self, opted_in: bool) -> bool {
        match self {
            Binding::Bound | Binding::Pinned => true,
            Binding::Unbound => opted_in,
            Binding::None => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Binding::Bound => "bound",
            Binding::Pinned => "pinned",
            Binding::Unbound => "unbound",
            Binding::None => "none",
        }
    }
}

/// The verdict for one layer, with the index to use when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerTrust {
    pub layer: Digest,
    pub binding: Binding,
    pub index: Option<Digest>,
}

/// Judges every layer of `manifest` given the indexes its referrers carry
/// (`(index blob digest, parsed index)`, already parsed and checked) and the
/// index digests pinned for this manifest. An index only counts for a layer
/// it [`LayerIndex::describes`]; a bound annotation naming an index we do
/// not have falls through to pinned/unbound/none.
pub fn assess(
    manifest: &Manifest,
    indexes: &[(Digest, LayerIndex)],
    pins: &[Digest],
) -> Vec<LayerTrust> {
    manifest
        .layers
        .iter()
        .map(|l| {
            let verdict = |binding, index: Option<&Digest>| LayerTrust {
                layer: l.digest.clone(),
                binding,
                index: index.cloned(),
            };
            if IndexFormat::for_media_type(&l.media_type).is_none() {
                return verdict(Binding::None, None);
            }
            let fits: Vec<&Digest> = indexes
                .iter()
                .filter(|(_, i)| i.describes(l).is_ok())
                .map(|(d, _)| d)
                .collect();
            let bound = l
                .annotations
                .get(media::ANNOTATION_CHUNKS_DIGEST)
                .and_then(|s| s.parse::<Digest>().ok());
            if let Some(b) = bound.as_ref().filter(|b| fits.contains(b)) {
                return verdict(Binding::Bound, Some(b));
            }
            if let Some(p) = fits.iter().find(|d| pins.contains(d)) {
                return verdict(Binding::Pinned, Some(p));
            }
            match fits.first() {
                Some(d) => verdict(Binding::Unbound, Some(d)),
                None => verdict(Binding::None, None),
            }
        })
        .collect()
}
