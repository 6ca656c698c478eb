//! Logs and traces, set up once per process, the same way in both programs.
//!
//! Logs: one bunyan JSON object per line, to stdout (unless a program asks
//! for its file alone) and to the program's log file if it gives one (todo-app's
//! rotating `log.file`). The filter comes from `RUST_LOG`, else `LOG_LEVEL`,
//! else `info`. Lines go through `tracing-appender`'s non-blocking writer so
//! a slow stdout or disk never stalls the work; lines it has to drop are
//! counted (`todo_log_lines_dropped_total`, see [`crate::metrics`]). Its
//! writer thread writes lines in batches, at most every [`LOG_FLUSH_PAUSE`]
//! (see `PacedFlush`). The lines are written by [`BunyanLayer`]
//! (`crate::bunyan`, the format): span fields (request id, owner, trace and
//! span ids) are attached to every event inside the span.
//!
//! Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set,
//! [`tracer`] hands out the OpenTelemetry SDK's tracer, with which a program
//! makes its spans directly (todo-app's request and database spans,
//! `app/src/trace.rs`); `tracing` spans are not bridged to OpenTelemetry:
//! the bridge (tracing-opentelemetry) cost about a third of a GET's CPU
//! whenever traces were configured, whether a request was sampled or not. Spans are exported over OTLP/HTTP protobuf by a batch
//! processor on its own thread with a bounded queue; spans that do not fit,
//! or whose export fails, are dropped and counted
//! (`todo_trace_spans_dropped_total`), never waited for. After a failed
//! export no span is made (the sampler drops them, counted as
//! `collector_down`) until the collector is tried again, 1 s later, doubling
//! to 30 s while it stays down: a down collector costs the requests nothing
//! (`SkipWhileCollectorDown`). W3C `traceparent`
//! is the propagation format. An `https://` collector is verified with the
//! system's roots, or with the certificates of
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` (see `otlp_http_client`).

use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context as OtelContext, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SamplingDecision, SamplingResult, SdkTracer,
    SdkTracerProvider, ShouldSample, SpanData, SpanExporter, SpanProcessor,
};
use prometheus::IntCounter;
use tracing::Subscriber;
use tracing::subscriber::set_global_default;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::bunyan::BunyanLayer;
use crate::connection_errors::ConnectionErrorLayer;
use crate::metrics::telemetry_counters;

/// How much stdout's writer gathers before a `write(2)` (todo-app's log
/// file buffers as much).
pub const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// The log writer thread's pause after each write, so lines gather in its
/// channel and go out together: a log line reaches stdout or the file at
/// most this much later.
pub const LOG_FLUSH_PAUSE: Duration = Duration::from_millis(10);

/// Spans waiting for export at most; more are dropped and counted.
const SPAN_QUEUE_CAPACITY: usize = 4096;
/// Longest an export request may take before its spans count as dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed export, how long no span is made before trying the
/// collector again; doubled after each further failure, up to
/// [`COLLECTOR_RETRY_MAX`].
const COLLECTOR_RETRY_FIRST: Duration = Duration::from_secs(1);
const COLLECTOR_RETRY_MAX: Duration = Duration::from_secs(30);

/// Whether spans are exported (set by each set-up of a server's telemetry).
static TRACES_EXPORTED: AtomicBool = AtomicBool::new(false);

/// The tracer of the first trace pipeline built in this process (a test
/// process may set up telemetry more than once; the first set-up stays, as
/// the first subscriber does).
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// True when spans go to an OTLP collector. Without one, the request path
/// skips the work that only traces need (spans, attributes, trace ids in
/// the log line).
pub fn traces_exported() -> bool {
    TRACES_EXPORTED.load(Ordering::Relaxed)
}

/// The tracer to make spans with, when spans are exported. The SDK samples
/// at the start of each span (`OTEL_TRACES_SAMPLER`): a span it does not
/// sample is not recording and costs next to nothing.
pub fn tracer() -> Option<&'static SdkTracer> {
    if traces_exported() {
        TRACER.get()
    } else {
        None
    }
}

/// The log filter: a boxed layer so that the cheaper [`Targets`] can stand
/// in for [`EnvFilter`] when the directives allow (see [`env_filter`]).
pub type LogFilter = Box<dyn Layer<Registry> + Send + Sync>;

/// The log filter the environment asks for: `RUST_LOG`, else `LOG_LEVEL`,
/// else `default`.
///
/// Directives of targets and levels only (`info`, `todo_app=debug,warn`), by
/// far the usual case, become a [`Targets`] filter: it decides once per
/// call site, where `EnvFilter` also takes a lock and looks the span up on
/// every span's creation, enter, exit and close, a few times per request.
/// Directives that need `EnvFilter` (span and field filters such as
/// `[HTTP request]=debug`) get it.
pub fn env_filter(default: &str) -> LogFilter {
    let directive = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("LOG_LEVEL"))
        .unwrap_or_else(|_| default.to_string());
    parse_log_filter(&directive).unwrap_or_else(|error| {
        eprintln!("ignoring invalid log filter `{directive}` ({error}); using `{default}`");
        parse_log_filter(default).expect("the default log filter is valid")
    })
}

/// [`Targets`] when `directive` is only targets and levels, else [`EnvFilter`].
fn parse_log_filter(directive: &str) -> Result<LogFilter, String> {
    // `Targets` would take `[span]=debug` for a target named "[span]" and
    // drop field lists: anything with brackets or braces is EnvFilter's.
    let only_targets_and_levels = !directive.contains(['[', ']', '{', '}']);
    if only_targets_and_levels && let Ok(targets) = directive.parse::<Targets>() {
        return Ok(Box::new(targets));
    }
    EnvFilter::try_new(directive)
        .map(|filter| Box::new(filter) as LogFilter)
        .map_err(|error| error.to_string())
}

/// A subscriber that writes bunyan JSON events to `sink`; actix-http's
/// per-connection errors (both programs serve HTTP with actix-web) are
/// counted and summarised instead ([`ConnectionErrorLayer`]).
pub fn get_subscriber<Sink>(
    name: &str,
    filter: LogFilter,
    sink: Sink,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a> + use<Sink>
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    Registry::default()
        .with(filter)
        .with(BunyanLayer::new(name, sink))
        .with(ConnectionErrorLayer)
}

/// Where a server's log lines go: stdout, a file of the program's (todo-app's
/// rotating `log.file`), or both; at least one.
pub struct LogOutput {
    /// Write every line to stdout; with no file, lines go to stdout anyway.
    pub stdout: bool,
    /// Also write every line here (whole lines, one per write).
    pub file: Option<Box<dyn Write + Send>>,
}

impl LogOutput {
    /// Lines to stdout only (todo-sidecar).
    pub fn stdout_only() -> LogOutput {
        LogOutput {
            stdout: true,
            file: None,
        }
    }
}

/// Keeps logging and tracing alive; dropping it flushes queued log lines
/// and exports the spans still queued (graceful shutdown).
pub struct TelemetryGuard {
    _log_writers: Vec<WorkerGuard>,
    tracer_provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces at shutdown failed: {error}");
        }
    }
}

/// Sets up logging to `output` and, when the OTLP endpoint is configured,
/// trace export. For a long-running program (todo-app's `serve`,
/// todo-sidecar's `run`).
pub fn init_server_telemetry(name: &str, output: LogOutput) -> TelemetryGuard {
    let mut guards = Vec::new();
    let tracer_provider = build_tracer_provider(name);
    if let Some(provider) = &tracer_provider {
        let _ = TRACER.set(provider.tracer(name.to_string()));
    }
    TRACES_EXPORTED.store(
        tracer_provider.is_some() && TRACER.get().is_some(),
        Ordering::Relaxed,
    );
    let file = output.file.map(|file| {
        let (file, guard) = non_blocking(PacedFlush(file));
        guards.push(guard);
        file
    });
    // Without a file, lines go to stdout whatever `output.stdout` says:
    // they must go somewhere.
    let stdout = (output.stdout || file.is_none()).then(|| {
        let stdout = BufWriter::with_capacity(WRITE_BUFFER_BYTES, std::io::stdout());
        let (stdout, guard) = non_blocking(PacedFlush(stdout));
        guards.push(guard);
        stdout
    });
    match (stdout, file) {
        (Some(stdout), Some(file)) => install(name, stdout.and(file)),
        (Some(stdout), None) => install(name, stdout),
        (None, Some(file)) => install(name, file),
        (None, None) => unreachable!("one of stdout and the file is always set"),
    }
    TelemetryGuard {
        _log_writers: guards,
        tracer_provider,
    }
}

/// Installs the bunyan subscriber writing to `sink`.
fn install<Sink>(name: &str, sink: Sink)
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    init_subscriber(get_subscriber(name, env_filter("info"), sink));
}

/// Logging to stderr only, for commands whose stdout is their result.
pub fn init_command_telemetry(name: &str) -> TelemetryGuard {
    let (stderr, guard) = non_blocking(std::io::stderr());
    init_subscriber(get_subscriber(name, env_filter("warn"), stderr));
    TelemetryGuard {
        _log_writers: vec![guard],
        tracer_provider: None,
    }
}

/// A lossy non-blocking writer whose drops are counted in the metrics.
fn non_blocking<W: std::io::Write + Send + 'static>(writer: W) -> (NonBlocking, WorkerGuard) {
    let (writer, guard) = tracing_appender::non_blocking(writer);
    telemetry_counters().watch_log_writer(writer.error_counter());
    (writer, guard)
}

/// The writer behind the server's non-blocking log channels: after each
/// flush it pauses for [`LOG_FLUSH_PAUSE`] before the writer thread takes
/// the next lines.
///
/// `tracing-appender`'s writer thread writes lines as they arrive and
/// flushes whenever its channel is empty. Under load that is a wake-up of
/// the thread and a `write(2)` for every request. With the pause, lines gather in the channel (sending to a
/// channel nobody is waiting on takes no system call) and the inner writer,
/// which buffers whole lines, writes them at once: about a hundred writes a
/// second whatever the request rate. The channel's bound, and the counting
/// of lines dropped when it is full, stay as they are.
struct PacedFlush<W>(W);

impl<W: Write> Write for PacedFlush<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()?;
        std::thread::sleep(LOG_FLUSH_PAUSE);
        Ok(())
    }
}

/// Registers `subscriber` globally and routes `log` records (from r2d2 and
/// other crates) through it.
pub fn init_subscriber(subscriber: impl Subscriber + Send + Sync) {
    // A second call (several tests in one process) keeps the first subscriber.
    let _ = tracing_log::LogTracer::init();
    let _ = set_global_default(subscriber);
}

/// The OTLP trace pipeline, when the standard variables ask for one.
fn build_tracer_provider(name: &str) -> Option<SdkTracerProvider> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|variable| std::env::var(variable).is_ok_and(|value| !value.is_empty()));
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|value| value == "true");
    if !configured || disabled {
        return None;
    }
    let client = match otlp_http_client(&|variable| std::env::var(variable).ok()) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("traces disabled: {error}");
            return None;
        }
    };
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("traces disabled: the OTLP exporter could not be built: {error}");
            return None;
        }
    };
    let pending = Arc::new(AtomicUsize::new(0));
    let health = Arc::new(CollectorHealth::new(COLLECTOR_RETRY_FIRST));
    let batch = BatchSpanProcessor::builder(CountingExporter {
        inner: exporter,
        pending: Arc::clone(&pending),
        health: Arc::clone(&health),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(SPAN_QUEUE_CAPACITY)
            .with_max_export_batch_size(512)
            .with_scheduled_delay(Duration::from_millis(1000))
            .build(),
    )
    .build();
    let service_name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| name.to_string());
    Some(
        SdkTracerProvider::builder()
            // The sampler `OTEL_TRACES_SAMPLER` asks for, the SDK's reading.
            .with_sampler(SkipWhileCollectorDown {
                inner: opentelemetry_sdk::trace::Config::default().sampler,
                health,
                dropped: telemetry_counters().spans_dropped_counter("collector_down"),
            })
            .with_span_processor(BoundedProcessor {
                inner: batch,
                pending,
            })
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .build(),
    )
}

/// The variables naming the PEM file of the certificates that verify the
/// collector, most specific first (the OpenTelemetry specification's names).
const CERTIFICATE_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];

/// The OTLP exporter's HTTP client: reqwest's blocking client over rustls
/// (with the process's ring crypto provider), so an `https://`
/// collector works. When `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` or
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` names a PEM file, its certificates are
/// the only roots that verify the collector, as in the other OpenTelemetry
/// SDKs; otherwise the system's roots do.
///
/// The client is built here rather than by opentelemetry-otlp, which has no
/// TLS unless a feature asks for it and ignores the certificate variables.
fn otlp_http_client(
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<reqwest::blocking::Client, String> {
    let mut builder = crate::http::blocking_client_builder().timeout(EXPORT_TIMEOUT);
    let configured = CERTIFICATE_VARIABLES.iter().find_map(|variable| {
        var(variable)
            .filter(|path| !path.is_empty())
            .map(|path| (*variable, path))
    });
    if let Some((variable, path)) = configured {
        let pem = std::fs::read(&path)
            .map_err(|error| format!("{variable}: cannot read {path}: {error}"))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|certificates| !certificates.is_empty())
            .ok_or_else(|| format!("{variable}: {path} holds no PEM certificate"))?;
        builder = builder.tls_certs_only(certificates);
    }
    // The blocking client starts a runtime of its own, which cannot be done
    // from a thread that already runs one: build it on a thread of its own.
    std::thread::spawn(move || builder.build())
        .join()
        .map_err(|_| "building the OTLP HTTP client panicked".to_string())?
        .map_err(|error| format!("the OTLP HTTP client could not be built: {error}"))
}

/// Counts spans in and out of the batch processor so that the spans it
/// cannot take are counted as dropped instead of silently lost.
#[derive(Debug)]
struct BoundedProcessor<P> {
    inner: P,
    pending: Arc<AtomicUsize>,
}

impl<P: SpanProcessor> SpanProcessor for BoundedProcessor<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= SPAN_QUEUE_CAPACITY {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            telemetry_counters().spans_dropped("queue_full", 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Whether the collector took the latest export: reported by the exporter
/// ([`CountingExporter`]), read by the sampler ([`SkipWhileCollectorDown`]).
#[derive(Debug)]
struct CollectorHealth {
    since: Instant,
    /// Until when (milliseconds after `since`) no span is made; 0 once an
    /// export went through.
    down_until_ms: AtomicU64,
    /// Exports failed in a row.
    failures: AtomicU32,
    retry_first: Duration,
}

impl CollectorHealth {
    fn new(retry_first: Duration) -> CollectorHealth {
        CollectorHealth {
            since: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            retry_first,
        }
    }

    fn now_ms(&self) -> u64 {
        self.since.elapsed().as_millis() as u64
    }

    /// Whether spans are not to be made now.
    fn is_down(&self) -> bool {
        self.is_down_at(self.now_ms())
    }

    fn is_down_at(&self, now_ms: u64) -> bool {
        let until = self.down_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms < until
    }

    fn export_failed(&self) {
        self.export_failed_at(self.now_ms());
    }

    fn export_failed_at(&self, now_ms: u64) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let wait = self
            .retry_first
            .saturating_mul(1 << (failures - 1).min(16))
            .min(COLLECTOR_RETRY_MAX);
        // At least 1: 0 means "up".
        let until = (now_ms + wait.as_millis() as u64).max(1);
        self.down_until_ms.store(until, Ordering::Relaxed);
        if failures == 1 {
            tracing::warn!(
                retry_in_ms = wait.as_millis() as u64,
                "the trace collector did not take an export: no spans are made until it is tried again"
            );
        }
    }

    fn export_succeeded(&self) {
        self.down_until_ms.store(0, Ordering::Relaxed);
        if self.failures.swap(0, Ordering::Relaxed) > 0 {
            tracing::info!("the trace collector takes exports again: spans are made again");
        }
    }
}

/// The configured sampler, except while the collector is down: then no span
/// is sampled, so none is recorded only to be dropped at export (a down
/// collector must not cost the requests anything). Each span not sampled
/// for that reason is counted in `todo_trace_spans_dropped_total{reason=
/// "collector_down"}` (a request's database spans are not made either, and
/// not counted). A span's ids are still made, so log lines keep their
/// trace and span ids. After [`COLLECTOR_RETRY_FIRST`] (doubled per failure
/// in a row, at most [`COLLECTOR_RETRY_MAX`]) spans are made again and the
/// next export tells whether the collector is back.
#[derive(Debug, Clone)]
struct SkipWhileCollectorDown {
    inner: Box<dyn ShouldSample>,
    health: Arc<CollectorHealth>,
    dropped: IntCounter,
}

impl ShouldSample for SkipWhileCollectorDown {
    fn should_sample(
        &self,
        parent_context: Option<&OtelContext>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if self.health.is_down() {
            self.dropped.inc();
            return SamplingResult {
                decision: SamplingDecision::Drop,
                attributes: Vec::new(),
                trace_state: parent_context
                    .map(|parent| parent.span().span_context().trace_state().clone())
                    .unwrap_or_default(),
            };
        }
        self.inner
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// The OTLP exporter, counting the spans of failed exports as dropped and
/// telling [`CollectorHealth`] how each export went.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    pending: Arc<AtomicUsize>,
    health: Arc<CollectorHealth>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        self.pending.fetch_sub(spans, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        if result.is_err() {
            telemetry_counters().spans_dropped("export_failed", spans as u64);
            self.health.export_failed();
        } else {
            self.health.export_succeeded();
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        }
    }

    fn pem_file(contents: &str) -> std::path::PathBuf {
        let path = tempfile::Builder::new()
            .prefix("todo-otlp-")
            .suffix(".pem")
            .tempfile()
            .unwrap()
            .into_temp_path()
            .keep()
            .unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn without_a_certificate_variable_the_client_uses_the_system_roots() {
        let client = otlp_http_client(&variables(&[]));

        assert!(client.is_ok(), "{:?}", client.err());
    }

    #[test]
    fn an_unreadable_certificate_file_is_refused_naming_the_variable_and_the_path() {
        let error = otlp_http_client(&variables(&[(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "/nonexistent/ca.pem",
        )]))
        .unwrap_err();

        assert!(
            error.starts_with("OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read /nonexistent/ca.pem"),
            "{error}"
        );
    }

    #[test]
    fn a_certificate_file_without_a_pem_certificate_is_refused() {
        let path = pem_file("not a certificate\n");

        let error = otlp_http_client(&variables(&[(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            path.to_str().unwrap(),
        )]))
        .unwrap_err();

        assert!(error.ends_with("holds no PEM certificate"), "{error}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn the_traces_certificate_variable_wins_over_the_general_one() {
        let general = pem_file("not a certificate either\n");

        let error = otlp_http_client(&variables(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "/nonexistent/traces.pem",
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", general.to_str().unwrap()),
        ]))
        .unwrap_err();

        assert!(
            error.starts_with("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: cannot read"),
            "{error}"
        );
        std::fs::remove_file(general).unwrap();
    }

    /// Which of a few events `directive` lets through, as `target:level`
    /// (one event inside a span named "HTTP request").
    fn enabled_events(directive: &str) -> Vec<String> {
        use std::sync::Mutex;

        struct Seen(Arc<Mutex<Vec<String>>>);
        impl<S: Subscriber> Layer<S> for Seen {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let metadata = event.metadata();
                let in_span = if metadata.name().contains("in_span") {
                    "+span"
                } else {
                    ""
                };
                self.0.lock().unwrap().push(format!(
                    "{}:{}{in_span}",
                    metadata.target(),
                    metadata.level()
                ));
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let filter = parse_log_filter(directive).unwrap();
        let subscriber = Registry::default()
            .with(filter)
            .with(Seen(Arc::clone(&seen)));
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "todo_app::db", "a");
            tracing::info!(target: "todo_app::db", "b");
            tracing::debug!(target: "actix_server", "c");
            tracing::warn!(target: "actix_server", "d");
            tracing::info_span!("HTTP request").in_scope(|| {
                tracing::debug!(name: "in_span", target: "actix_server", "e");
            });
        });
        seen.lock().unwrap().clone()
    }

    #[test]
    fn target_and_level_directives_filter_as_env_filter_does() {
        assert_eq!(
            enabled_events("todo_app=debug,warn"),
            [
                "todo_app::db:DEBUG",
                "todo_app::db:INFO",
                "actix_server:WARN"
            ]
        );
        assert_eq!(
            enabled_events("info"),
            ["todo_app::db:INFO", "actix_server:WARN"]
        );
    }

    #[test]
    fn span_directives_still_filter_by_span() {
        assert_eq!(
            enabled_events("warn,[HTTP request]=debug"),
            ["actix_server:WARN", "actix_server:DEBUG+span"]
        );
    }

    #[test]
    fn an_invalid_directive_is_refused() {
        assert!(parse_log_filter("todo_app=loud").is_err());
    }

    #[test]
    fn paced_flush_writes_through_and_pauses_after_each_flush() {
        let mut writer = PacedFlush(BufWriter::new(Vec::new()));
        writer.write_all(b"one\n").unwrap();
        writer.write_all(b"two\n").unwrap();
        assert!(writer.0.get_ref().is_empty(), "lines wait for the flush");

        let started = std::time::Instant::now();
        writer.flush().unwrap();

        assert!(started.elapsed() >= LOG_FLUSH_PAUSE);
        assert_eq!(writer.0.get_ref().as_slice(), b"one\ntwo\n");
    }

    #[test]
    fn a_failed_export_stops_spans_for_a_while_doubling_and_a_good_one_resumes_them() {
        let health = CollectorHealth::new(Duration::from_millis(100));
        assert!(!health.is_down_at(0), "up until an export fails");

        health.export_failed_at(1_000);
        assert!(health.is_down_at(1_000) && health.is_down_at(1_099));
        assert!(
            !health.is_down_at(1_100),
            "tried again after the first wait"
        );

        health.export_failed_at(2_000);
        assert!(health.is_down_at(2_199), "the second wait is twice as long");
        assert!(!health.is_down_at(2_200));
        health.export_failed_at(3_000);
        assert!(health.is_down_at(3_399) && !health.is_down_at(3_400));

        health.export_succeeded();
        assert!(
            !health.is_down_at(3_001),
            "a good export ends the wait at once"
        );
        health.export_failed_at(4_000);
        assert!(!health.is_down_at(4_100), "and starts the doubling over");
        assert!(health.is_down(), "counted on the process's own clock");
    }

    #[test]
    fn the_wait_never_exceeds_the_maximum() {
        let health = CollectorHealth::new(COLLECTOR_RETRY_FIRST);
        for _ in 0..40 {
            health.export_failed_at(0);
        }
        let most = COLLECTOR_RETRY_MAX.as_millis() as u64;

        assert!(health.is_down_at(most - 1) && !health.is_down_at(most));
    }

    #[test]
    fn while_the_collector_is_down_spans_are_not_recorded_but_keep_their_ids_and_are_counted() {
        use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};

        let health = Arc::new(CollectorHealth::new(Duration::from_secs(60)));
        let dropped = IntCounter::new("test_spans_dropped", "test").unwrap();
        let provider = SdkTracerProvider::builder()
            .with_sampler(SkipWhileCollectorDown {
                inner: Box::new(opentelemetry_sdk::trace::Sampler::AlwaysOn),
                health: Arc::clone(&health),
                dropped: dropped.clone(),
            })
            .build();
        let tracer = provider.tracer("test");

        let mut up = tracer.start("while up");
        health.export_failed();
        let mut down = tracer.start("while down");

        assert!(up.is_recording());
        assert!(
            !down.is_recording(),
            "no span is recorded only to be dropped"
        );
        assert!(down.span_context().is_valid(), "log lines still get ids");
        assert!(!down.span_context().is_sampled());
        assert_eq!(dropped.get(), 1);
        up.end();
        down.end();

        health.export_succeeded();
        assert!(tracer.start("back up").is_recording());
        assert_eq!(dropped.get(), 1);
    }
}
