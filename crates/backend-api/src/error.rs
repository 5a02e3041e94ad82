//! The one mapping from what went wrong to an HTTP answer. Every error body is
//! `{"error": {"code", "message", "step_id"?}}`; a 500 never carries internal
//! text (the log line does, with the request's trace id).

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        step_id: Option<String>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_secs: u64,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            step_id: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "invalid_argument",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Unauthorized(_) => "unauthenticated",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// The error body clients see.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_argument`, `not_found`.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The pipeline step at fault, for pipeline validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "request failed with an internal error");
                "internal error; the server log has the details (search for this request's trace id)"
                    .to_string()
            }
            other => other.to_string(),
        };
        let step_id = match &self {
            Self::BadRequest { step_id, .. } => step_id.clone(),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message,
                step_id,
            },
        };
        let mut response = (status, Json(body)).into_response();
        match &self {
            Self::Unavailable {
                retry_after_secs, ..
            } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            Self::Unauthorized(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"imageflow\""),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable {
                    message: "the database is unreachable; retry shortly".into(),
                    retry_after_secs: 2,
                }
            }
            other => Self::Internal(format!("database: {other}")),
        }
    }
}

impl From<imageflow_storage::StorageError> for ApiError {
    fn from(err: imageflow_storage::StorageError) -> Self {
        use imageflow_storage::StorageError as E;
        if err.is_not_found() {
            return Self::NotFound(format!("stored object missing: {err}"));
        }
        if err.is_retryable() {
            return Self::Unavailable {
                message: format!("object storage unavailable: {err}"),
                retry_after_secs: 2,
            };
        }
        match err {
            E::TooLarge { size, limit } => Self::PayloadTooLarge(format!(
                "object of {size} bytes is over the storage limit of {limit} bytes"
            )),
            E::InvalidKey(_) | E::InvalidBucket(_) => Self::bad_request(err.to_string()),
            other => Self::Internal(format!("storage: {other}")),
        }
    }
}

/// Turns axum's JSON rejections into our body shape with the parser's message.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as R;
        match rejection {
            R::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "send the request body as JSON with 'Content-Type: application/json'".into(),
            ),
            R::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge(format!("request body too large: {}", b.body_text()))
            }
            other => Self::bad_request(format!("malformed JSON body: {}", other.body_text())),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
