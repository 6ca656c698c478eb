//! The API's error type and its JSON shape:
//! `{"error": {"code": "snake_case_code", "message": "..."}}`.
//!
//! Every error answer of the API is built here, so codes, statuses and
//! headers stay consistent. Messages are written for API consumers and never
//! carry internal details (those go to the log).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::DbError;
use crate::domain::ValidationError;

/// The request `Content-Encoding`s the server decodes (actix-web's
/// `compress-gzip` feature; `identity` is the absence of one).
pub const SUPPORTED_CONTENT_ENCODINGS: &str = "gzip, deflate, identity";

/// An error answer of the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON, or the query string is malformed.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: no valid API key. Deliberately says nothing about why.
    #[error("a valid API key is required: send `Authorization: Bearer <token>`")]
    Unauthorized,
    /// 404: no such resource for this owner.
    #[error("{0}")]
    NotFound(&'static str),
    /// 405: the resource exists but not with this method.
    #[error("method not allowed; allowed: {allowed}")]
    MethodNotAllowed { allowed: &'static str },
    /// 413: the body is larger than `server.json_body_limit_bytes`.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 408: the request body did not arrive within `server.request_body_timeout_ms`;
    /// the connection is closed after the answer.
    #[error("the request body did not arrive within {timeout_ms} ms")]
    RequestTimeout { timeout_ms: u64 },
    /// 415: the body is not `application/json`.
    #[error("the request body must be sent as `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// 415: the body is in a `Content-Encoding` the server cannot decode.
    #[error("unsupported Content-Encoding; supported: {SUPPORTED_CONTENT_ENCODINGS}")]
    UnsupportedContentEncoding,
    /// 422: well-formed JSON that breaks a rule (also unknown or read-only fields).
    #[error("{0}")]
    Validation(String),
    /// 429: the key's rate limit is exhausted for `retry_after_seconds`.
    #[error("rate limit exceeded; retry after {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    /// 429: the key already has `auth.max_in_flight_per_key` requests in flight.
    #[error("too many requests in flight for this API key (at most {limit}); retry after 1 s")]
    TooManyInFlight { limit: u32 },
    /// 503: the database cannot serve right now.
    #[error("the service is temporarily unavailable; retry shortly")]
    Unavailable,
    /// 500: a bug; details are in the log under the request id.
    #[error("internal error")]
    Internal,
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`) and people (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case identifier, e.g. `validation_failed`.
    #[schema(example = "validation_failed")]
    pub code: &'static str,
    /// Human-readable explanation.
    #[schema(example = "title must not be empty")]
    pub message: String,
}

impl ApiError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::UnsupportedContentEncoding => "unsupported_content_encoding",
            ApiError::Validation(_) => "validation_failed",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::TooManyInFlight { .. } => "too_many_in_flight",
            ApiError::Unavailable => "service_unavailable",
            ApiError::Internal => "internal_error",
        }
    }

    pub fn todo_not_found() -> ApiError {
        ApiError::NotFound("no todo with this id")
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        ApiError::Validation(error.to_string())
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::NotFound => ApiError::todo_not_found(),
            DbError::Unavailable(_) | DbError::Overloaded(_) | DbError::Timeout => {
                ApiError::Unavailable
            }
            // Logged once, with its operation, where it happened
            // (`actors::db`); the client sees no detail.
            DbError::Query(_) => ApiError::Internal,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType | ApiError::UnsupportedContentEncoding => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } | ApiError::TooManyInFlight { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::MethodNotAllowed { allowed } => {
                response.insert_header((header::ALLOW, HeaderValue::from_static(allowed)));
            }
            ApiError::RateLimited {
                retry_after_seconds,
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_seconds.to_string()));
            }
            ApiError::Unavailable | ApiError::TooManyInFlight { .. } => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::RequestTimeout { .. } => {
                // The rest of the body may still be on its way: the
                // connection cannot carry another request.
                response.force_close();
            }
            ApiError::UnsupportedContentEncoding => {
                // RFC 9110, 15.5.16: say which codings would have worked.
                response.insert_header((
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_static(SUPPORTED_CONTENT_ENCODINGS),
                ));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
        })
    }
}
