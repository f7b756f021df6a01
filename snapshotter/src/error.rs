//! The snapshotter's error type and its mapping to the gRPC codes containerd
//! turns into errdefs (NotFound, AlreadyExists, FailedPrecondition, InvalidArgument).

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
            SnapError::Model(_) => tonic::Status::failed_precondition(msg),
        }
    }
}
