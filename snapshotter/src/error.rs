//! The snapshotter's error type and its mapping to the gRPC codes containerd
//! turns into errdefs (NotFound, AlreadyExists, FailedPrecondition, InvalidArgument,
//! Unavailable, …); library errors are mapped by their [`ErrorKind`].

use modelpack_common::ErrorKind;

pub type Result<T, E = SnapError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    #[error("snapshot {0} not found")]
    NotFound(String),
    #[error("snapshot {0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Internal(String),
    #[error("model layer: {0}")]
    Model(#[from] modelpack_common::Error),
}

impl From<std::io::Error> for SnapError {
    fn from(e: std::io::Error) -> Self {
        SnapError::Internal(e.to_string())
    }
}

impl From<SnapError> for tonic::Status {
    fn from(e: SnapError) -> Self {
        let msg = e.to_string();
        match e {
            SnapError::NotFound(_) => tonic::Status::not_found(msg),
            SnapError::AlreadyExists(_) => tonic::Status::already_exists(msg),
            SnapError::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            SnapError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            SnapError::Internal(_) => tonic::Status::internal(msg),
            SnapError::Model(e) => model_status(e.kind(), msg),
        }
    }
}

/// A library failure in gRPC's terms, chosen by what kind of failure it is
/// (not by its message), so containerd and kubelet retry what can succeed
/// later and give up on what cannot.
pub fn model_status(kind: ErrorKind, msg: String) -> tonic::Status {
    use tonic::Status;
    match kind {
        ErrorKind::InvalidArgument => Status::invalid_argument(msg),
        ErrorKind::NotFound => Status::not_found(msg),
        ErrorKind::Refused => Status::failed_precondition(msg),
        ErrorKind::Corrupt => Status::data_loss(msg),
        ErrorKind::PermissionDenied => Status::permission_denied(msg),
        ErrorKind::Unavailable => Status::unavailable(msg),
        ErrorKind::TooLarge => Status::resource_exhausted(msg),
        ErrorKind::Cancelled => Status::cancelled(msg),
        ErrorKind::Internal => Status::internal(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_get_the_code_of_their_kind() {
        let status = |e: modelpack_common::Error| tonic::Status::from(SnapError::Model(e)).code();
        assert_eq!(
            status(modelpack_common::Error::Registry {
                registry: "r".into(),
                message: "manifest: 404".into(),
                status: Some(404),
            }),
            tonic::Code::NotFound
        );
        assert_eq!(
            status(modelpack_common::Error::Registry {
                registry: "r".into(),
                message: "connection failed".into(),
                status: None,
            }),
            tonic::Code::Unavailable
        );
        assert_eq!(
            status(modelpack_common::Error::Artifact("not a model".into())),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            status(modelpack_common::Error::io(
                "open",
                "/x",
                std::io::Error::from(std::io::ErrorKind::NotFound)
            )),
            tonic::Code::NotFound
        );
    }
}
