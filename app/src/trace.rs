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
use opentelemetry_sdk::trace::Span as SdkSpan;

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
        let tracer = telemetry::tracer()?;
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let span = tracer
            .span_builder(SERVER_SPAN_NAME)
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("url.path", path.to_owned()),
            ])
            .start_with_context(tracer, &parent);
        Some(ServerSpan {
            context: parent.with_span(span),
        })
    }

    /// The trace and span ids, for the request's log lines (also when the
    /// sampler left the trace out: a caller that sampled it has it).
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
        let span = parent.zip(telemetry::tracer()).map(|(parent, tracer)| {
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
