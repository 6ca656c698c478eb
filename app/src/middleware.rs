//! Request-wide middleware of the API listener: the `X-Request-Id` header and
//! the request span with its one completion log line.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;
use uuid::Uuid;

/// The header carrying the request id, in both directions.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id accepted from a client; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Route label for requests that matched no route, so random paths cannot
/// create unbounded log fields or metric series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Uses the client's `X-Request-Id` when it is sane (1 to 128 characters of
/// `[A-Za-z0-9._:-]`), otherwise a new UUID; echoes it on the response and
/// runs the request inside a span carrying it, so every log line of the
/// request has it. Logs one line when the request completes.
pub async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_sane_request_id(value))
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let span = tracing::info_span!(
        "http_request",
        request_id = %request_id,
        method = %req.method(),
        route = tracing::field::Empty,
        owner = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.call(req).instrument(span.clone()).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_string());
    span.record("route", route.as_str());
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request completed"
        );
    });
    response.headers_mut().insert(
        X_REQUEST_ID.clone(),
        HeaderValue::from_str(&request_id).expect("a sane request id is a valid header value"),
    );
    Ok(response)
}

fn is_sane_request_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_request_ids_are_trusted() {
        assert!(is_sane_request_id("abc-123_x.y:z"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id(&"a".repeat(129)));
        assert!(!is_sane_request_id("a b"));
        assert!(!is_sane_request_id("a\"b"));
    }
}
