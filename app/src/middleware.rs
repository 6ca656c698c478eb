//! Request-wide middleware of the API listener: the `X-Request-Id` header,
//! the request span (continuing an incoming W3C `traceparent`), the HTTP
//! metrics, the request's one completion log line, path normalisation, and
//! closing connections whose request body was not read.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::uri::PathAndQuery;
use actix_web::http::{Method, Uri};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, web};
use futures_util::Stream;
use opentelemetry::context::FutureExt as _;
use pin_project_lite::pin_project;
use tracing::Instrument;
use tracing::field::Empty;
use uuid::Uuid;

use crate::auth::Caller;
use crate::metrics::Metrics;
use crate::trace::ServerSpan;

/// The header carrying the request id, in both directions.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id accepted from a client; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Route label for requests that matched no route, so random paths cannot
/// create unbounded log fields or metric series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Uses the client's `X-Request-Id` when it is sane (1 to 128 characters of
/// `[A-Za-z0-9._:-]`), otherwise a new UUID; echoes it on the response; runs
/// the request inside a span carrying it (so every log line of the request
/// has it); counts and times the request; logs one line at the end.
///
/// The `tracing` span holds only what log lines need (request id, owner,
/// and the trace and span ids when traces are exported): every span field
/// is copied into every log line of the request (`todo_common::bunyan`), so
/// each field costs on every line. When traces are exported, the request's
/// OpenTelemetry server span ([`ServerSpan`]) is made beside it and attached
/// to the request's future.
pub async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let metrics = req
        .app_data::<web::Data<Metrics>>()
        .expect("Metrics are registered as app data")
        .clone();
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_sane_request_id(value))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let mut text = Uuid::encode_buffer();
            Uuid::new_v4()
                .hyphenated()
                .encode_lower(&mut text)
                .to_owned()
        });
    let method = method_label(req.method());
    let server_span = ServerSpan::start(req.headers(), method, req.path());
    // Fields as `&str`: a `Display` field is formatted into a new string.
    let span = match server_span.as_ref().and_then(ServerSpan::ids) {
        Some((trace_id, span_id)) => {
            let (mut trace_hex, mut span_hex) = ([0; 32], [0; 16]);
            tracing::info_span!(
                "HTTP request",
                request_id = request_id.as_str(),
                owner = Empty,
                trace_id = lower_hex(&trace_id.to_bytes(), &mut trace_hex),
                span_id = lower_hex(&span_id.to_bytes(), &mut span_hex),
            )
        }
        None => tracing::info_span!(
            "HTTP request",
            request_id = request_id.as_str(),
            owner = Empty
        ),
    };

    let started = Instant::now();
    metrics.http_requests_in_flight.inc();
    let _in_flight = InFlight(&metrics);
    let handled = next.call(req).instrument(span.clone());
    let mut response = match &server_span {
        Some(server_span) => handled.with_context(server_span.context().clone()).await?,
        None => handled.await?,
    };
    let elapsed = started.elapsed();

    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_string());
    let status = response.status().as_u16();
    metrics
        .http_requests
        .with_label_values(&[method, route.as_str(), status_label(status).as_ref()])
        .inc();
    metrics
        .http_request_duration
        .with_label_values(&[method, route.as_str()])
        .observe(elapsed.as_secs_f64());
    if let Some(server_span) = server_span {
        let request = response.request();
        let caller = request.extensions();
        let owner = caller.get::<Caller>().map(|caller| caller.owner.as_str());
        server_span.finish(method, &route, status, &request_id, owner);
    }
    span.in_scope(|| {
        tracing::info!(
            method,
            route = route.as_str(),
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request completed"
        );
    });
    response.headers_mut().insert(
        X_REQUEST_ID.clone(),
        HeaderValue::from_str(&request_id).expect("a sane request id is a valid header value"),
    );
    Ok(response)
}

/// Trims trailing slashes and merges repeated ones before routing
/// (`/api//todos/` is `/api/todos`), as actix-web's `NormalizePath::trim()`
/// does. That middleware runs a regex replacement and allocates on every
/// request; this one scans the path and only rewrites the rare one that
/// needs it.
pub async fn normalize_path(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(normalized) = normalized_path(req.path()) {
        let uri = &req.head().uri;
        let path_and_query = match uri.query() {
            Some(query) => format!("{normalized}?{query}"),
            None => normalized,
        };
        let mut parts = uri.clone().into_parts();
        // Cannot fail: removing slashes from a valid path leaves a valid path.
        parts.path_and_query = Some(
            PathAndQuery::try_from(path_and_query).map_err(actix_web::error::ErrorBadRequest)?,
        );
        let uri = Uri::from_parts(parts).map_err(actix_web::error::ErrorBadRequest)?;
        req.match_info_mut().get_mut().update(&uri);
        req.head_mut().uri = uri;
    }
    next.call(req).await
}

/// Closes the connection after an answer given without reading the whole
/// request body (401, 404, 408, 415, 429…), whatever the body's framing.
///
/// actix-http closes such a connection when the request's body stream is
/// still alive as the answer goes out, but when the handler has dropped it
/// and the body is chunked, it reads the rest of the body to discard it,
/// for as long as the client takes: a client trickling a chunked body after
/// its 401 would hold the connection for ever. Here the body stream is kept
/// alive until the answer has been written, so the connection is closed.
///
/// Costs nothing but a check for requests without a body (every GET and
/// DELETE); a request with one pays two small allocations (the shared
/// stream and its box).
pub async fn close_on_unread_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let payload = req.take_payload();
    if matches!(payload, Payload::None) {
        let response = next.call(req).await?;
        return Ok(response.map_body(|_, body| EitherBody::left(body)));
    }
    let payload = Rc::new(RefCell::new(payload));
    req.set_payload(Payload::Stream {
        payload: Box::pin(SharedPayload(Rc::clone(&payload))),
    });
    let response = next.call(req).await?;
    Ok(response.map_body(|_, body| EitherBody::right(HoldsPayload { body, payload })))
}

/// The request body stream, shared with the answer that keeps it alive.
struct SharedPayload(Rc<RefCell<Payload>>);

impl Stream for SharedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_next(cx)
    }
}

pin_project! {
    /// An answer's body that holds the request body stream until it is dropped.
    struct HoldsPayload<B> {
        #[pin]
        body: B,
        payload: Rc<RefCell<Payload>>,
    }
}

impl<B: MessageBody> MessageBody for HoldsPayload<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.project().body.poll_next(cx)
    }
}

/// The path with trailing slashes trimmed and runs of slashes merged, or
/// `None` when it is already normal.
fn normalized_path(path: &str) -> Option<String> {
    let trailing_slash = path.len() > 1 && path.ends_with('/');
    if !trailing_slash && !path.contains("//") {
        return None;
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in path.split('/').filter(|segment| !segment.is_empty()) {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    Some(normalized)
}

/// Decrements the in-flight gauge however the request ends (also when the
/// client goes away and the future is dropped).
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.http_requests_in_flight.dec();
    }
}

/// `bytes` in lower-case hex, written into `out` (twice as long), as the
/// W3C trace context and the OpenTelemetry ids' `Display` write them.
fn lower_hex<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    assert_eq!(out.len(), 2 * bytes.len(), "out is twice as long as bytes");
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    std::str::from_utf8(out).expect("hex digits are ASCII")
}

/// Methods as metric labels: the standard ones, anything else is `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Status codes as labels, without allocating for the common ones.
fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    match status {
        200 => "200".into(),
        201 => "201".into(),
        204 => "204".into(),
        400 => "400".into(),
        401 => "401".into(),
        404 => "404".into(),
        422 => "422".into(),
        429 => "429".into(),
        503 => "503".into(),
        other => other.to_string().into(),
    }
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

    #[test]
    fn paths_are_trimmed_and_merged_only_when_needed() {
        assert_eq!(normalized_path("/api/todos"), None);
        assert_eq!(normalized_path("/"), None);
        assert_eq!(
            normalized_path("/api/todos/").as_deref(),
            Some("/api/todos")
        );
        assert_eq!(
            normalized_path("/api//todos///").as_deref(),
            Some("/api/todos")
        );
        assert_eq!(normalized_path("//").as_deref(), Some("/"));
    }

    #[test]
    fn ids_are_written_as_their_display_form() {
        let trace_id =
            opentelemetry::trace::TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        let mut out = [0; 32];

        assert_eq!(
            lower_hex(&trace_id.to_bytes(), &mut out),
            trace_id.to_string()
        );
    }

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
