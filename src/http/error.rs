//! API errors: always JSON `{"error": {"code", "reason"}}` with a fitting status; internal
//! details are logged, never sent.

use crate::queue::QueueError;
use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub reason: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            code,
            reason: reason.into(),
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", reason)
    }

    pub fn not_found(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", reason)
    }

    pub fn conflict(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", reason)
    }

    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason)
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "invalid", "reason": "k must be between 1 and 100"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine-readable code and a reason meant for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable.
    #[schema(value_type = ErrorCode)]
    pub code: &'static str,
    /// What was wrong and, where it helps, what to do; safe to show (never internal details).
    pub reason: String,
}

/// The error codes and the status each comes with: `bad_request` 400 (malformed input: bad
/// JSON, a bad id in the path, a bad query string or header), `unauthorized` 401 (the bearer
/// token is missing or wrong), `not_found` 404 (no such resource, or no such route),
/// `method_not_allowed` 405 (the route exists, not with this method), `conflict` 409 (the
/// request conflicts with the resource's state), `too_large` 413 (the body exceeds
/// `server.max_body_bytes`), `unsupported_media_type` 415 (the body is not sent as
/// `application/json`), `invalid` 422 (well-formed JSON that breaks a rule of the request; the
/// reason names it), `internal` 500 (an internal error, logged by the daemon), `unavailable` 503
/// (a backend — database, Redis, the provider — is unavailable; try again).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Only documents the values of `ErrorDetail::code`.
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    Conflict,
    TooLarge,
    UnsupportedMediaType,
    Invalid,
    Internal,
    Unavailable,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                reason: self.reason,
            },
        });
        (self.status, body).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ItemInOtherContext { .. } => Self::conflict(e.to_string()),
            StoreError::Database(sqlx::Error::PoolTimedOut)
            | StoreError::Database(sqlx::Error::Io(_)) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::unavailable("the database is unavailable; try again")
            }
            ref busy if crate::store::Store::is_busy(busy) => {
                tracing::warn!(error = %e, "database busy");
                Self::unavailable("the database is busy; try again")
            }
            other => {
                tracing::error!(error = %other, "database error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal database error (logged)",
                )
            }
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        tracing::warn!(error = %e, "queue unavailable");
        Self::unavailable("the queue (Redis) is unavailable; nothing was enqueued, try again")
    }
}
