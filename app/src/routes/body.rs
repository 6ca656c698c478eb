//! How the API reads a request body: JSON only, in a `Content-Encoding` the
//! server decodes, within a size limit and a deadline. Handlers take
//! [`BoundedJson<T>`] instead of actix-web's `Json<T>`, and every way a body
//! can fail maps to one [`ApiError`] here.
//!
//! The deadline matters because `server.client_request_timeout_ms` bounds
//! only the request head: without it, a client that announces a body and
//! sends it a byte at a time (or never) holds its connection, and the memory
//! of a request in flight, for as long as it likes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::http::header::{CONTENT_ENCODING, HeaderMap};
use actix_web::{FromRequest, HttpRequest, web};
use pin_project_lite::pin_project;
use serde::de::DeserializeOwned;
use tokio::time::Sleep;

use crate::error::ApiError;

/// How large and how slow a request body may be; app data of the `/api` scope.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body, after decoding (`server.json_body_limit_bytes`).
    pub max_bytes: usize,
    /// Longest time reading the whole body may take
    /// (`server.request_body_timeout_ms`), counted from when the handler
    /// starts reading it.
    pub timeout: Duration,
}

/// A JSON request body read within [`BodyLimits`].
#[derive(Debug)]
pub struct BoundedJson<T>(pub T);

impl<T> BoundedJson<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned> FromRequest for BoundedJson<T> {
    type Error = actix_web::Error;
    type Future = BoundedJsonFuture<T>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limits = *req
            .app_data::<BodyLimits>()
            .expect("BodyLimits are registered on the /api scope");
        if !is_decodable(req.headers()) {
            return BoundedJsonFuture::Refused {
                error: Some(ApiError::UnsupportedContentEncoding),
            };
        }
        BoundedJsonFuture::Reading {
            body: web::JsonBody::new(req, payload, None, true).limit(limits.max_bytes),
            deadline: tokio::time::sleep(limits.timeout),
            limits,
        }
    }
}

pin_project! {
    /// Reads the body unless the deadline passes first.
    #[project = BoundedJsonProjection]
    pub enum BoundedJsonFuture<T> {
        Refused { error: Option<ApiError> },
        Reading {
            body: web::JsonBody<T>,
            #[pin]
            deadline: Sleep,
            limits: BodyLimits,
        },
    }
}

impl<T: DeserializeOwned> Future for BoundedJsonFuture<T> {
    type Output = Result<BoundedJson<T>, actix_web::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BoundedJsonProjection::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("a refused body is polled once")
                .into())),
            BoundedJsonProjection::Reading {
                body,
                deadline,
                limits,
            } => {
                // The body first: one that is complete wins over a deadline
                // passing in the same instant.
                if let Poll::Ready(result) = Pin::new(body).poll(cx) {
                    return Poll::Ready(
                        result
                            .map(BoundedJson)
                            .map_err(|error| json_error(error, limits.max_bytes).into()),
                    );
                }
                if deadline.poll(cx).is_ready() {
                    return Poll::Ready(Err(ApiError::RequestTimeout {
                        timeout_ms: limits.timeout.as_millis() as u64,
                    }
                    .into()));
                }
                Poll::Pending
            }
        }
    }
}

/// Whether the body's `Content-Encoding` is one actix-web decodes with the
/// features this crate enables (`compress-gzip`: gzip and deflate). Any
/// other coding would be read as if it were plain, so it is refused (415).
fn is_decodable(headers: &HeaderMap) -> bool {
    let mut codings = headers.get_all(CONTENT_ENCODING);
    match (codings.next(), codings.next()) {
        (None, _) => true,
        (Some(coding), None) => coding.to_str().is_ok_and(|coding| {
            let coding = coding.trim();
            ["identity", "gzip", "x-gzip", "deflate"]
                .iter()
                .any(|known| coding.eq_ignore_ascii_case(known))
        }),
        // Several codings (actix-web would decode none of them).
        (Some(_), Some(_)) => false,
    }
}

/// Malformed JSON is a 400; JSON of the wrong shape (missing, unknown or
/// mistyped fields) is a 422; too large a body is a 413; another content
/// type 415. A body that cannot be read (a corrupt gzip stream, a length
/// that does not match) is a 400 whose detail goes to the log only: it
/// names library internals, not anything the client can act on.
fn json_error(error: JsonPayloadError, limit: usize) -> ApiError {
    match error {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge { limit }
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(error) if error.is_data() => {
            ApiError::Validation(error.to_string())
        }
        JsonPayloadError::Deserialize(error) => ApiError::BadRequest {
            code: "malformed_json",
            message: format!("the body is not valid JSON: {error}"),
        },
        other => {
            tracing::info!(error = %other, "the request body could not be read");
            ApiError::BadRequest {
                code: "malformed_body",
                message:
                    "the body could not be read: check its Content-Encoding and Content-Length"
                        .to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn with_codings(codings: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for coding in codings {
            headers.append(CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        headers
    }

    #[test]
    fn only_codings_the_server_decodes_are_accepted() {
        for accepted in [&[][..], &["gzip"], &["GZIP"], &["deflate"], &["identity"]] {
            assert!(is_decodable(&with_codings(accepted)), "{accepted:?}");
        }
        for refused in [
            &["br"][..],
            &["zstd"],
            &["foo"],
            &["gzip, br"],
            &["gzip", "gzip"],
        ] {
            assert!(!is_decodable(&with_codings(refused)), "{refused:?}");
        }
    }
}
