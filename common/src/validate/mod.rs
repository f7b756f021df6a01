//! ModelPack validation: the HEAD JSON Schema (embedded from `common/spec/`)
//! plus the lints the schema misses (L1–L14, see docs/compatibility.md and the
//! reference): paramSize grammar, precision values, SPDX licences, digest
//! syntax, diffIds against layers, manifest media types, file path
//! annotations, titles, sizes, RFC 3339 dates. Every problem carries the JSON
//! path of the offending value.

mod blobs;
mod lints;
mod peer;
mod schema;
mod spdx;

use std::fmt;

use serde::Serialize;

use crate::digest::Digest;

pub use blobs::{BlobAccess, Decompressed, StoreBlobs};
pub use lints::{lint_config, lint_manifest, lint_pair, lint_tar_paths};
pub use schema::schema_problems;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// `config:/config/paramSize`, `manifest:/layers/2/annotations/org.cncf.model.filepath`, …
    pub path: String,
    pub message: String,
    /// `L1`…`L13`, or `None` for a JSON Schema violation.
    pub lint: Option<&'static str>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match self.lint {
            Some(l) => write!(f, "{sev} {} [{l}]: {}", self.path, self.message),
            None => write!(f, "{sev} {} [schema]: {}", self.path, self.message),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        !self.problems.iter().any(|p| p.severity == Severity::Error)
    }
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
    }
    pub(crate) fn error(
        &mut self,
        path: impl Into<String>,
        lint: Option<&'static str>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
            lint,
        });
    }
    pub(crate) fn warn(
        &mut self,
        path: impl Into<String>,
        lint: Option<&'static str>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            severity: Severity::Warning,
            path: path.into(),
            message: message.into(),
            lint,
        });
    }
}

/// JSON-pointer escaping of one segment.
pub(crate) fn seg(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Validates a config document on its own: the HEAD schema plus config lints.
pub fn validate_config(bytes: &[u8]) -> Report {
    validate_config_of(bytes, false)
}

/// A config as its artifact's family reads it: `legacy` (cnai) judges a
/// snake_case config by the v0.0.6 schema it was written for.
fn validate_config_of(bytes: &[u8], legacy: bool) -> Report {
    let mut r = Report::default();
    let v: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            r.error(
                "config:",
                None,
                format!(
                    "not valid JSON (line {}, column {}): {e}",
                    e.line(),
                    e.column()
                ),
            );
            return r;
        }
    };
    schema_problems(&v, legacy, &mut r);
    lint_config(&v, &mut r);
    r
}

/// Validates a manifest document on its own.
pub fn validate_manifest(bytes: &[u8]) -> Report {
    let mut r = Report::default();
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => lint_manifest(&v, &mut r),
        Err(e) => r.error(
            "manifest:",
            None,
            format!(
                "not valid JSON (line {}, column {}): {e}",
                e.line(),
                e.column()
            ),
        ),
    }
    r
}

/// Validates manifest and config together (diffIds vs layers, config descriptor)
/// and, where `blob_size` knows a blob, descriptor sizes.
pub fn validate_artifact(
    manifest: &[u8],
    config: &[u8],
    blob_size: &dyn Fn(&Digest) -> Option<u64>,
) -> Report {
    validate_with(manifest, config, &blobs::SizesOnly(blob_size))
}

/// A model in the local store: everything [`validate_artifact`] checks, plus
/// what its blobs tell — compressed layers' diffIds (decompressed and hashed)
/// and whether tar layers hold what their annotations name.
pub fn validate_stored(manifest: &[u8], config: &[u8], store: &crate::store::Store) -> Report {
    validate_with(manifest, config, &StoreBlobs(store))
}

/// Validation with whatever `blobs` can answer.
pub fn validate_with(manifest: &[u8], config: &[u8], blobs: &dyn BlobAccess) -> Report {
    let parsed = crate::manifest::Manifest::parse(manifest, "manifest").ok();
    if let Some(m) = &parsed
        && let Some(kind) = crate::peer::ArtifactKind::of(m)
        && !kind.is_modelpack()
    {
        // Peers' own rules; their tar layers are untarred by header name by
        // their producers too, so L14's question does not arise.
        let mut r = Report::default();
        peer::lint_peer(m, kind, config, &mut r);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(manifest) {
            lints::lint_sizes(&v, config, &|d| blobs.size(d), &mut r);
        }
        return r;
    }
    let mut r = validate_manifest(manifest);
    let legacy = parsed.as_ref().and_then(crate::peer::ArtifactKind::of)
        == Some(crate::peer::ArtifactKind::ModelPack(
            crate::media::Family::Cnai,
        ));
    let c = validate_config_of(config, legacy);
    r.problems.extend(c.problems);
    if let (Ok(m), Ok(c)) = (
        serde_json::from_slice::<serde_json::Value>(manifest),
        serde_json::from_slice::<serde_json::Value>(config),
    ) {
        lint_pair(&m, &c, config, blobs, &mut r);
    }
    if let Some(m) = &parsed {
        lint_tar_paths(m, &|d| blobs.tar_files(d), &mut r);
    }
    r
}

#[cfg(test)]
mod tests;
