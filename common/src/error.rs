//! The one error type of `modelpack-common`.
//!
//! Every variant carries the context a user needs to act on it: the file, the
//! reference, the digest or the registry involved. Binaries wrap these with
//! `anyhow` and print the whole cause chain.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed on a known path.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON document could not be parsed or written.
    #[error("invalid JSON in {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// A weight file's header (safetensors JSON, GGUF metadata) is malformed or
    /// claims sizes it cannot hold. `field` names the offending part so a user
    /// can tell a truncated download from a hostile file.
    #[error("{file}: invalid {format} header: {field}: {reason}")]
    WeightHeader {
        file: String,
        format: &'static str,
        field: String,
        reason: String,
    },

    /// A Modelfile line could not be understood. Rendered as `Modelfile:7: ...`.
    #[error("{file}:{line}: {message}")]
    Modelfile {
        file: String,
        line: usize,
        message: String,
    },

    /// Resolving the build context (globs, symlinks, missing files) failed.
    #[error("{0}")]
    Workspace(String),

    /// A reference such as `127.0.0.1:5000/models/x:v1` could not be parsed.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// A digest string is malformed.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },

    /// Content did not hash to the digest it was named by.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// A size did not match the descriptor.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    /// Something named by the user is not in the local store.
    #[error("{what} not found{hint}", hint = hint_suffix(.hint))]
    NotFound { what: String, hint: Option<String> },

    /// An artifact is not something we can handle (wrong media type, missing annotation, ...).
    #[error("{0}")]
    Artifact(String),

    /// Extraction refused an entry that would escape the output directory or is of a forbidden type.
    #[error("unsafe entry in layer {layer}: {reason}")]
    UnsafePath { layer: String, reason: String },

    /// A document failed validation; the report lists every problem.
    #[error("{0}")]
    Validation(String),

    /// The local store is inconsistent or locked.
    #[error("store {path}: {message}")]
    Store { path: PathBuf, message: String },

    /// Registry returned an error or could not be reached.
    #[error("registry {registry}: {message}")]
    Registry {
        registry: String,
        message: String,
        /// The HTTP status the registry answered, when it answered at all
        /// (`None`: the connection failed, or the reply made no sense).
        status: Option<u16>,
    },

    /// Authentication failed or is required. Never contains a secret.
    #[error("authentication required for {registry}: {message}{hint}", hint = hint_suffix(.hint))]
    Auth {
        registry: String,
        message: String,
        hint: Option<String>,
    },

    /// A body from the network was larger than we are willing to hold in memory.
    #[error("{what} is larger than the limit of {limit} bytes{declared}", declared = declared_suffix(.declared))]
    TooLarge {
        what: String,
        limit: u64,
        /// The size the server announced (`Content-Length`), when it announced one.
        declared: Option<u64>,
    },

    /// Reading or writing credentials failed (config.json, helpers, auth.json).
    #[error("credentials: {0}")]
    Credentials(String),

    /// A chunk index (or the referrer carrying it) is malformed, oversize or
    /// does not describe the layer it claims to. `what` names the index or
    /// the layer, `reason` the offending field.
    #[error("chunk index {what}: {reason}")]
    ChunkIndex { what: String, reason: String },

    /// A model layer's snapshot label (from whoever called Prepare, so
    /// hostile) disagrees with the verified manifest it names: `label` is
    /// the label key, `value` what it said, `reason` what the manifest has.
    #[error("label {label} is {value:?}, but manifest {manifest} {reason}")]
    LabelMismatch {
        label: &'static str,
        value: String,
        manifest: String,
        reason: String,
    },

    /// Invalid user input not covered by a more specific variant.
    #[error("{0}")]
    Invalid(String),

    /// `--reflink always` where extents cannot be shared.
    #[error("cannot share extents between {} and {}: {reason} (reflinks need both on one XFS (reflink=1) or btrfs filesystem; --reflink auto copies instead)", src.display(), dst.display())]
    Reflink {
        src: PathBuf,
        dst: PathBuf,
        reason: String,
    },

    /// The operation was cancelled (signal, docker CLI socket EOF).
    #[error("cancelled")]
    Cancelled,
}

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!("\nhint: {h}"),
        None => String::new(),
    }
}

fn declared_suffix(declared: &Option<u64>) -> String {
    match declared {
        Some(n) => format!(" (the server announced {n})"),
        None => String::new(),
    }
}

impl Error {
    /// Wraps an I/O error with the operation and path it happened on.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            what: what.into(),
            source,
        }
    }
}

/// What kind of failure an [`Error`] is, for callers that answer in another
/// protocol's terms: the snapshotter and CSI service pick gRPC codes (which
/// containerd and kubelet turn into retry-or-give-up decisions), the CLI its
/// hints. One mapping, here, beside the variants it classifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (a reference, a digest, a Modelfile, a setting).
    InvalidArgument,
    /// The named model, blob or file does not exist (locally or in the registry).
    NotFound,
    /// The artifact or chunk index was refused by a check: retrying will not help.
    Refused,
    /// Bytes did not match their digest or size: corrupt in transit or at rest.
    Corrupt,
    /// Credentials are missing, wrong, or not allowed this repository.
    PermissionDenied,
    /// The registry (or a filesystem) could not serve now; a retry may succeed.
    Unavailable,
    /// Something from outside was larger than a bound.
    TooLarge,
    Cancelled,
    /// Our own state (the store, a local file) failed.
    Internal,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        use std::io::ErrorKind as Io;
        match self {
            Error::Io { source, .. } => match source.kind() {
                Io::NotFound => ErrorKind::NotFound,
                Io::PermissionDenied => ErrorKind::PermissionDenied,
                Io::StorageFull | Io::QuotaExceeded => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            Error::Modelfile { .. }
            | Error::Workspace(_)
            | Error::InvalidReference { .. }
            | Error::InvalidDigest { .. }
            | Error::LabelMismatch { .. }
            | Error::Invalid(_)
            | Error::Reflink { .. } => ErrorKind::InvalidArgument,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Json { .. }
            | Error::WeightHeader { .. }
            | Error::Artifact(_)
            | Error::UnsafePath { .. }
            | Error::Validation(_)
            | Error::ChunkIndex { .. } => ErrorKind::Refused,
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => ErrorKind::Corrupt,
            Error::Auth { .. } | Error::Credentials(_) => ErrorKind::PermissionDenied,
            Error::Registry { status, .. } => match status {
                Some(404) => ErrorKind::NotFound,
                Some(401 | 403) => ErrorKind::PermissionDenied,
                Some(413) => ErrorKind::TooLarge,
                Some(s) if (400..500).contains(s) && *s != 408 && *s != 429 => ErrorKind::Refused,
                _ => ErrorKind::Unavailable,
            },
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::Store { .. } => ErrorKind::Internal,
            Error::Cancelled => ErrorKind::Cancelled,
        }
    }
}

/// Extension to attach a path to `std::io::Result`.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_structure_not_the_message() {
        let reg = |status| Error::Registry {
            registry: "r".into(),
            message: "m".into(),
            status,
        };
        assert_eq!(reg(Some(404)).kind(), ErrorKind::NotFound);
        assert_eq!(reg(Some(401)).kind(), ErrorKind::PermissionDenied);
        assert_eq!(reg(Some(400)).kind(), ErrorKind::Refused);
        assert_eq!(reg(Some(429)).kind(), ErrorKind::Unavailable);
        assert_eq!(reg(Some(503)).kind(), ErrorKind::Unavailable);
        assert_eq!(reg(None).kind(), ErrorKind::Unavailable);
        let io = |k| Error::io("open", "/x", std::io::Error::from(k));
        assert_eq!(io(std::io::ErrorKind::NotFound).kind(), ErrorKind::NotFound);
        assert_eq!(io(std::io::ErrorKind::Other).kind(), ErrorKind::Internal);
        let bad = Error::DigestMismatch {
            what: "layer".into(),
            expected: "a".into(),
            actual: "b".into(),
        };
        assert_eq!(bad.kind(), ErrorKind::Corrupt);
    }
}
