//! The one mapping from what went wrong to the wire.
//!
//! Errors are typed where they happen (imaging, storage); here they become a
//! `ServiceError` and then a `tonic::Status`. Internal details are logged, never
//! sent: a caller sees "internal error" plus the request's execution id.

use std::time::Duration;

use imageflow_imaging::ImagingError;
use imageflow_storage::StorageError;
use tonic::{Code, Status, metadata::MetadataValue};

/// Metadata key carrying how long a caller should wait before retrying.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("server is at its limit of {limit} concurrent requests; retry after {retry_after:?}")]
    ResourceExhausted { limit: usize, retry_after: Duration },
    #[error("{0}")]
    Unavailable(String),
    #[error("deadline of {0:?} exceeded before the request finished")]
    DeadlineExceeded(Duration),
    #[error("request cancelled: {0}")]
    Cancelled(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::Cancelled(_) => Code::Cancelled,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// The text a caller may see.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal error (details are in the service log)".into(),
            other => other.to_string(),
        }
    }
}

/// The spelling of the gRPC spec (`INVALID_ARGUMENT`), for metadata and logs.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<ImagingError> for ServiceError {
    fn from(err: ImagingError) -> Self {
        match err {
            ImagingError::Encode(_) => Self::Internal(err.to_string()),
            ImagingError::Empty
            | ImagingError::UnsupportedFormat
            | ImagingError::InputTooLarge { .. }
            | ImagingError::TooManyPixels { .. }
            | ImagingError::Corrupt(_)
            | ImagingError::InvalidParameter(_) => Self::InvalidArgument(err.to_string()),
        }
    }
}

impl From<StorageError> for ServiceError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::InvalidKey(_) | StorageError::InvalidBucket(_) => {
                Self::InvalidArgument(err.to_string())
            }
            StorageError::TooLarge { .. } => Self::InvalidArgument(err.to_string()),
            StorageError::NotFound { .. } => Self::NotFound(err.to_string()),
            StorageError::AccessDenied(_) => Self::PermissionDenied(err.to_string()),
            StorageError::Unavailable { .. } => Self::Unavailable(err.to_string()),
            StorageError::Other(_) => Self::Internal(err.to_string()),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        let mut status = Status::new(err.code(), err.public_message());
        if let ServiceError::ResourceExhausted { retry_after, .. } = &err
            && let Ok(value) = MetadataValue::try_from(retry_after.as_millis().to_string())
        {
            status.metadata_mut().insert(RETRY_AFTER_MS, value);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imaging_errors_are_the_callers_fault_except_encoding() {
        let status = Status::from(ServiceError::from(ImagingError::Corrupt(
            "JPEG: premature end of data".into(),
        )));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("premature end"));
        let status = Status::from(ServiceError::from(ImagingError::Encode("boom".into())));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("boom"), "internal text leaked");
    }

    #[test]
    fn storage_errors_keep_their_meaning() {
        let not_found = StorageError::NotFound {
            bucket: "b".into(),
            key: "k".into(),
        };
        assert_eq!(
            Status::from(ServiceError::from(not_found)).code(),
            Code::NotFound
        );
        let down = StorageError::Unavailable {
            operation: "get",
            attempts: 4,
            message: "connection refused".into(),
        };
        assert_eq!(
            Status::from(ServiceError::from(down)).code(),
            Code::Unavailable
        );
    }

    #[test]
    fn resource_exhausted_carries_retry_after() {
        let status = Status::from(ServiceError::ResourceExhausted {
            limit: 50,
            retry_after: Duration::from_millis(250),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.metadata().get(RETRY_AFTER_MS).unwrap(), "250");
    }
}
