//! Logging set-up: one bunyan JSON object per line, to stdout.
//!
//! The filter comes from `RUST_LOG`, else `LOG_LEVEL`, else `info`. Lines are
//! written through `tracing-appender`'s non-blocking writer so a slow stdout
//! never stalls an HTTP worker; span fields (request id, method, route…)
//! are attached to every event inside the span by `JsonStorageLayer`.

use tracing::Subscriber;
use tracing::subscriber::set_global_default;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_bunyan_formatter::{BunyanFormattingLayer, JsonStorageLayer};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The log filter the environment asks for: `RUST_LOG`, else `LOG_LEVEL`, else `default`.
pub fn env_filter(default: &str) -> EnvFilter {
    let directive = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("LOG_LEVEL"))
        .unwrap_or_else(|_| default.to_string());
    EnvFilter::try_new(&directive).unwrap_or_else(|error| {
        eprintln!("ignoring invalid log filter `{directive}` ({error}); using `{default}`");
        EnvFilter::new(default)
    })
}

/// A subscriber that writes bunyan JSON events to `sink`.
pub fn get_subscriber<Sink>(
    name: &str,
    filter: EnvFilter,
    sink: Sink,
) -> impl Subscriber + Send + Sync + use<Sink>
where
    Sink: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    Registry::default()
        .with(filter)
        .with(JsonStorageLayer)
        .with(EventsOnly(BunyanFormattingLayer::new(
            name.to_string(),
            sink,
        )))
}

/// Installs the process-wide subscriber writing to stdout through a
/// non-blocking writer. Keep the returned guard alive until exit: dropping it
/// flushes the lines still queued.
pub fn init_stdout_logging(name: &str) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    init_subscriber(get_subscriber(name, env_filter("info"), writer));
    guard
}

/// Like [`init_stdout_logging`], to stderr (for commands whose stdout is their result).
pub fn init_stderr_logging(name: &str) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    init_subscriber(get_subscriber(name, env_filter("warn"), writer));
    guard
}

/// Registers `subscriber` globally and routes `log` records (from r2d2 and
/// other crates) through it.
pub fn init_subscriber(subscriber: impl Subscriber + Send + Sync) {
    // A second call (several tests in one process) keeps the first subscriber.
    let _ = tracing_log::LogTracer::init();
    let _ = set_global_default(subscriber);
}

/// Passes only events to the wrapped layer.
///
/// `BunyanFormattingLayer` writes a `[SPAN - START]` and a `[SPAN - END]` line
/// for every span; with a span per request that would triple the log volume
/// for no information (the request's completion line carries its fields).
struct EventsOnly<L>(L);

impl<S, L> Layer<S> for EventsOnly<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        self.0.on_event(event, ctx);
    }
}
