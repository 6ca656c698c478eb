//! todo-app's OpenTelemetry spans: one server span per API request
//! ([`ServerSpan`], continuing an incoming W3C `traceparent`) and one client
//! span per database operation ([`DbSpan`], a child of its request's).
//!
//! They are made with the SDK's tracer directly (`todo_common::telemetry::tracer`),
//! not bridged from `tracing` spans: the bridge (tracing-opentelemetry) kept
//! OpenTelemetry state in every `tracing` span, visited every field and
//! looked it up on every enter and exit, so configuring traces cost about a
//! third of a GET's CPU whether a request was sampled or not. Here a request
//! the sampler leaves out costs one sampling decision, and its database
//! operations nothing. The `tracing` span of a request (`middleware`) holds
//! only what the log lines need.
//!
//! The request's OpenTelemetry context travels with the request's future
//! (attached on each poll, see [`ServerSpan::context`]), and the database
//! client takes it from there into its message ([`sampled_parent`]).

use actix_web::http::header::{HeaderMap, HeaderName};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::Span as _;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, Span as SdkSpan};

use crate::db::DbError;
use crate::telemetry;

/// The server span's name until the route is known; then `METHOD /route`.
const SERVER_SPAN_NAME: &str = "HTTP request";

/// An API request's server span, in the context its children are made in.
pub struct ServerSpan {
    /// The incoming trace's context with the server span as its active span.
    context: Context,
}

impl ServerSpan {
    /// Starts the request's span, a child of the caller's when the request
    /// carries a valid `traceparent`; `None` when traces are not exported.
    pub fn start(headers: &HeaderMap, method: &'static str, path: &str) -> Option<ServerSpan> {
        Some(Self::start_with(
            telemetry::tracer()?,
            headers,
            method,
            path,
        ))
    }

    fn start_with(
        tracer: &SdkTracer,
        headers: &HeaderMap,
        method: &'static str,
        path: &str,
    ) -> ServerSpan {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let span = tracer
            .span_builder(SERVER_SPAN_NAME)
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("url.path", path.to_owned()),
            ])
            .start_with_context(tracer, &parent);
        ServerSpan {
            context: parent.with_span(span),
        }
    }

    /// The trace and span ids, for the request's log lines; also when the
    /// sampler left the trace out, so that the lines of one call chain
    /// across services share an id whatever each service exported.
    pub fn ids(&self) -> Option<(TraceId, SpanId)> {
        let span = self.context.span();
        let span_context = span.span_context();
        span_context
            .is_valid()
            .then(|| (span_context.trace_id(), span_context.span_id()))
    }

    /// The context to attach while the request is handled, so that
    /// [`sampled_parent`] finds the span.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Names the span after its route, sets what is known once the response
    /// exists, and ends it. An unsampled span skips all of it.
    pub fn finish(
        self,
        method: &str,
        route: &str,
        status: u16,
        request_id: &str,
        owner: Option<&str>,
    ) {
        let span = self.context.span();
        if !span.is_recording() {
            return;
        }
        span.update_name(format!("{method} {route}"));
        span.set_attribute(KeyValue::new("http.route", route.to_owned()));
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.set_attribute(KeyValue::new("request_id", request_id.to_owned()));
        if let Some(owner) = owner {
            span.set_attribute(KeyValue::new("owner", owner.to_owned()));
        }
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// The current request's context when its span is sampled: the parent of
/// the database spans it makes. `None` (no database span) when traces are
/// not exported or the sampler left the request out.
pub fn sampled_parent() -> Option<Context> {
    telemetry::tracer()?;
    let context = Context::current();
    context.span().is_recording().then_some(context)
}

/// The client span of one database operation (`None` inside: no span).
pub struct DbSpan(Option<SdkSpan>);

impl DbSpan {
    /// Starts the span of `operation` under `parent` (see [`sampled_parent`]);
    /// `batch_size` is how many requests' rows its statement carries.
    pub fn start(parent: Option<&Context>, operation: &'static str, batch_size: usize) -> DbSpan {
        Self::start_with(telemetry::tracer(), parent, operation, batch_size)
    }

    fn start_with(
        tracer: Option<&SdkTracer>,
        parent: Option<&Context>,
        operation: &'static str,
        batch_size: usize,
    ) -> DbSpan {
        let span = parent.zip(tracer).map(|(parent, tracer)| {
            tracer
                .span_builder(operation)
                .with_kind(SpanKind::Client)
                .with_attributes([
                    KeyValue::new("db.system.name", "postgresql"),
                    KeyValue::new("db.operation.name", operation),
                    KeyValue::new("db.operation.batch.size", batch_size as i64),
                ])
                .start_with_context(tracer, parent)
        });
        DbSpan(span)
    }

    /// Ends the span, marked as an error when the operation failed (a
    /// missing row is an answer, not a failure).
    pub fn end<T>(self, outcome: &Result<T, DbError>) {
        let Some(mut span) = self.0 else { return };
        if let Err(error) = outcome
            && !matches!(error, DbError::NotFound)
        {
            span.set_attribute(KeyValue::new("error.type", error.kind()));
            span.set_status(Status::error(error.kind()));
        }
        span.end();
    }
}

/// Reads W3C trace context headers from a request.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

    use super::*;

    /// Keeps every span it is given.
    #[derive(Debug, Clone, Default)]
    struct Kept(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Kept {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// The spans exported for one request to `GET /api/todos/{id}` answered
    /// `status`, made with `traceparent` (if any).
    fn server_spans(traceparent: Option<&str>, status: u16) -> Vec<SpanData> {
        let kept = Kept::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(kept.clone())
            .build();
        let tracer = provider.tracer("test");
        let mut headers = HeaderMap::new();
        if let Some(traceparent) = traceparent {
            headers.insert(
                HeaderName::from_static("traceparent"),
                traceparent.parse().unwrap(),
            );
        }
        let span = ServerSpan::start_with(&tracer, &headers, "GET", "/api/todos/1");
        span.finish("GET", "/api/todos/{id}", status, "request-1", Some("alice"));
        kept.0.lock().unwrap().clone()
    }

    #[test]
    fn a_server_span_continues_the_callers_trace_and_is_named_after_its_route() {
        let spans = server_spans(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            503,
        );

        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.name, "GET /api/todos/{id}");
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_eq!(
            span.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(span.status, Status::error(""), "a 5xx is an error");
        for expected in [
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("url.path", "/api/todos/1"),
            KeyValue::new("http.route", "/api/todos/{id}"),
            KeyValue::new("http.response.status_code", 503),
            KeyValue::new("request_id", "request-1"),
            KeyValue::new("owner", "alice"),
        ] {
            assert!(span.attributes.contains(&expected), "{expected:?}");
        }
    }

    #[test]
    fn a_request_the_caller_did_not_sample_exports_nothing() {
        let spans = server_spans(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            200,
        );

        assert!(spans.is_empty());
    }

    #[test]
    fn a_request_without_traceparent_starts_a_trace_and_a_4xx_is_no_error() {
        let spans = server_spans(None, 404);

        assert_eq!(spans.len(), 1);
        assert!(spans[0].parent_span_id == SpanId::INVALID);
        assert_eq!(spans[0].status, Status::Unset);
    }

    /// The spans of one database operation ended with `outcome` under a
    /// sampled parent (or none).
    fn db_spans(with_parent: bool, outcome: &Result<(), DbError>) -> Vec<SpanData> {
        let kept = Kept::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(kept.clone())
            .build();
        let tracer = provider.tracer("test");
        let parent = Context::new().with_span(tracer.start("HTTP request"));
        let span = DbSpan::start_with(Some(&tracer), with_parent.then_some(&parent), "get_todo", 1);
        span.end(outcome);
        kept.0.lock().unwrap().clone()
    }

    #[test]
    fn a_failed_operation_marks_its_span_as_an_error_of_its_kind() {
        let spans = db_spans(true, &Err(DbError::Unavailable("refused".to_string())));

        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.name, "get_todo");
        assert_eq!(span.span_kind, SpanKind::Client);
        assert_eq!(span.status, Status::error("unavailable"));
        assert!(
            span.attributes
                .contains(&KeyValue::new("error.type", "unavailable"))
        );
        assert!(
            span.attributes
                .contains(&KeyValue::new("db.system.name", "postgresql"))
        );
        assert!(
            !format!("{:?}", span.attributes).contains("refused"),
            "no error text"
        );
    }

    #[test]
    fn a_missing_row_is_an_answer_not_an_error() {
        let spans = db_spans(true, &Err(DbError::NotFound));

        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].status, Status::Unset);
    }

    #[test]
    fn without_a_sampled_parent_there_is_no_span() {
        assert!(db_spans(false, &Ok(())).is_empty());
    }
}
