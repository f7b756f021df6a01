//! From a Modelfile and a build context to what [`pack_to_store`](super::pack_to_store)
//! and the remote build need: the files (each classified, each untested
//! guess marked), the config's descriptor and settings, the annotations that
//! carry the Modelfile, and the pack options with the build's dates.
//!
//! Dates follow reproducible-builds conventions: `SOURCE_DATE_EPOCH` fixes
//! both the config's `created` and every file's mtime; without it files keep
//! their own dates and `created` is now; `no_creation_time` leaves `created`
//! out and zeroes mtimes.

use std::path::Path;

use crate::config::{ModelDescriptor, ModelSettings, rfc3339};
use crate::error::{Error, Result};
use crate::manifest::Annotations;
use crate::media::{Family, LayerFormat, LayerKind};
use crate::modelfile::{self, Modelfile};

use super::{PackFile, PackOptions};

/// What the user asked of a build, beyond the Modelfile.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub family: Family,
    pub format: LayerFormat,
    pub no_creation_time: bool,
    pub keep_metadata: bool,
    pub concurrency: usize,
    /// `None`: no chunk indexes.
    pub chunk_size: Option<u64>,
    pub source_url: Option<String>,
    pub source_revision: Option<String>,
    /// `build --reflink`: share the source files' extents in the store.
    pub reflink: crate::kcopy::Reflink,
}

/// A resolved build, shared by the local and the `--output-remote` build.
pub struct BuildPlan {
    pub files: Vec<PackFile>,
    pub descriptor: ModelDescriptor,
    pub settings: ModelSettings,
    pub annotations: Annotations,
    pub opts: PackOptions,
}

impl BuildPlan {
    /// Whether any file is a weight: a build without one is probably a mistake.
    pub fn has_weights(&self) -> bool {
        self.files.iter().any(|f| f.kind == LayerKind::Weight)
    }
}

/// Resolves `mf` against `context`. `text` is the Modelfile as recorded in
/// the manifest; `generated` says it was inferred, so the files it only
/// guessed at are marked untested.
pub fn plan_build(
    context: &Path,
    mf: &Modelfile,
    text: String,
    generated: bool,
    req: &BuildRequest,
) -> Result<BuildPlan> {
    if req.reflink == crate::kcopy::Reflink::Always && req.format != LayerFormat::Raw {
        // Tar layers are encoded, not copied: there is nothing to share, and
        // "always" must not quietly write a copy.
        return Err(Error::Invalid(format!(
            "--reflink always shares raw layers' extents; {} layers are encoded, not copied (use --layer-format raw, or --reflink auto)",
            req.format
        )));
    }
    let files: Vec<PackFile> = modelfile::resolve(context, mf)?
        .into_iter()
        .map(|f| {
            let untested = generated && modelfile::classify(&f.rel_path, f.size).1;
            PackFile {
                rel_path: f.rel_path,
                abs_path: f.abs_path,
                kind: f.kind,
                size: f.size,
                mode: f.mode,
                untested,
            }
        })
        .collect();
    let epoch = PackOptions::source_date_epoch()?;
    let created_at = if req.no_creation_time {
        None
    } else {
        Some(rfc3339(
            epoch.unwrap_or_else(|| chrono::Utc::now().timestamp()),
        ))
    };
    let opts = PackOptions {
        family: req.family,
        format: req.format,
        mtime: match (epoch, req.no_creation_time) {
            (Some(t), _) => Some(t),
            (None, true) => Some(0),
            (None, false) => None,
        },
        created_at,
        keep_metadata: req.keep_metadata,
        concurrency: req.concurrency.max(1),
        chunk_size: req.chunk_size,
        reflink: req.reflink,
    };
    let descriptor = ModelDescriptor {
        name: mf.name.clone(),
        family: mf.family.clone(),
        source_url: req.source_url.clone(),
        revision: req.source_revision.clone(),
        ..Default::default()
    };
    let settings = ModelSettings {
        architecture: mf.arch.clone(),
        format: mf.format.clone(),
        param_size: mf.param_size.clone(),
        precision: mf.precision.clone(),
        quantization: mf.quantization.clone(),
        capabilities: None,
    };
    let mut annotations = Annotations::new();
    annotations.insert(req.family.modelfile_annotation().to_string(), text);
    Ok(BuildPlan {
        files,
        descriptor,
        settings,
        annotations,
        opts,
    })
}
