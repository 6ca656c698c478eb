//! Metrics every program of the pod exposes the same way: the standard
//! process metrics, the text rendering of a registry, and the telemetry
//! counters (`todo_trace_spans_dropped_total{reason}`,
//! `todo_log_lines_dropped_total`, `todo_http_connection_errors_total{reason}`),
//! which count what this process's logging and tracing (see
//! [`crate::telemetry`]) dropped or kept out of the log. Each program
//! registers them in its own registry ([`register_telemetry_metrics`]); the
//! sidecar's aggregation serves a name both programs expose once, with a
//! `source` label.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};
use tracing_appender::non_blocking::ErrorCounter;

/// `reason` label values of `todo_trace_spans_dropped_total`.
pub const SPAN_DROP_REASONS: &[&str] = &["queue_full", "export_failed", "collector_down"];

/// Adds the standard process metrics (CPU seconds, resident memory, open
/// fds, start time) to a registry; both programs expose them.
pub fn register_process_metrics(registry: &Registry) {
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process metrics register once per registry");
}

/// The Prometheus text exposition (format 0.0.4) of a registry.
pub fn render_registry(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .expect("encoding metrics into a Vec cannot fail");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}

/// Adds this process's telemetry counters to a registry (each program's
/// `Metrics::new` calls it once per registry it builds).
pub fn register_telemetry_metrics(registry: &Registry) {
    for collector in [
        Box::new(telemetry_counters().spans_dropped.clone()) as Box<dyn Collector>,
        Box::new(DroppedLogLines),
        Box::new(connection_errors().clone()),
    ] {
        registry
            .register(collector)
            .expect("telemetry metrics register once per registry");
    }
}

/// Process-wide telemetry counters: logging and tracing are set up once per
/// process, before any registry exists, and count into these.
pub struct TelemetryCounters {
    /// `todo_trace_spans_dropped_total{reason}`: spans not exported.
    spans_dropped: IntCounterVec,
    log_writers: Mutex<Vec<ErrorCounter>>,
    /// Lines the log file could not take (disk full, say).
    unwritten_log_lines: AtomicU64,
}

impl TelemetryCounters {
    /// Counts spans that were not exported (`queue_full`, `export_failed` or
    /// `collector_down`).
    pub fn spans_dropped(&self, reason: &str, spans: u64) {
        self.spans_dropped
            .with_label_values(&[reason])
            .inc_by(spans);
    }

    /// The counter of one `reason`, to count without looking it up each time.
    pub fn spans_dropped_counter(&self, reason: &str) -> IntCounter {
        self.spans_dropped.with_label_values(&[reason])
    }

    /// Includes a non-blocking log writer's drops in `todo_log_lines_dropped_total`.
    pub fn watch_log_writer(&self, counter: ErrorCounter) {
        self.log_writers
            .lock()
            .expect("never poisoned")
            .push(counter);
    }

    /// Counts lines that reached a log writer but could not be written.
    pub fn log_lines_unwritten(&self, lines: u64) {
        self.unwritten_log_lines.fetch_add(lines, Ordering::Relaxed);
    }

    /// Lines dropped so far: by the non-blocking writers (queue full) and
    /// by a log file that could not take them.
    pub fn dropped_log_lines(&self) -> u64 {
        let queue_full: u64 = self
            .log_writers
            .lock()
            .expect("never poisoned")
            .iter()
            .map(|counter| counter.dropped_lines() as u64)
            .sum();
        queue_full + self.unwritten_log_lines.load(Ordering::Relaxed)
    }
}

static TELEMETRY_COUNTERS: LazyLock<TelemetryCounters> = LazyLock::new(|| {
    let spans_dropped = IntCounterVec::new(
        Opts::new(
            "todo_trace_spans_dropped_total",
            "Trace spans dropped instead of exported, by reason (queue_full, export_failed, collector_down).",
        ),
        &["reason"],
    )
    .expect("valid metric");
    for reason in SPAN_DROP_REASONS {
        spans_dropped.with_label_values(&[reason]);
    }
    TelemetryCounters {
        spans_dropped,
        log_writers: Mutex::new(Vec::new()),
        unwritten_log_lines: AtomicU64::new(0),
    }
});

/// The process-wide telemetry counters.
pub fn telemetry_counters() -> &'static TelemetryCounters {
    &TELEMETRY_COUNTERS
}

/// `todo_http_connection_errors_total{reason}`: connections that ended in an
/// error before a request reached a handler (see [`crate::connection_errors`]).
/// Process-wide, like the telemetry counters: the log layer that counts
/// them exists before any registry.
pub fn connection_errors() -> &'static IntCounterVec {
    static CONNECTION_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        let counter = IntCounterVec::new(
            Opts::new(
                "todo_http_connection_errors_total",
                "Connections that ended in an error before a request reached the API (requests the HTTP parser refused, broken connections), by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        // A closed set of reasons: each exists at 0 from start-up.
        for reason in crate::connection_errors::Reason::ALL {
            counter.with_label_values(&[reason.label()]);
        }
        counter
    });
    &CONNECTION_ERRORS
}

/// `todo_log_lines_dropped_total`, read from the log writers at each scrape.
struct DroppedLogLines;

const DROPPED_LOG_LINES_NAME: &str = "todo_log_lines_dropped_total";
const DROPPED_LOG_LINES_HELP: &str = "Log lines dropped because the log writer could not keep up or the log file could not be written.";

impl Collector for DroppedLogLines {
    fn desc(&self) -> Vec<&Desc> {
        static DESC: LazyLock<Desc> = LazyLock::new(|| {
            Desc::new(
                DROPPED_LOG_LINES_NAME.to_string(),
                DROPPED_LOG_LINES_HELP.to_string(),
                vec![],
                Default::default(),
            )
            .expect("valid metric")
        });
        vec![&DESC]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let counter =
            IntCounter::new(DROPPED_LOG_LINES_NAME, DROPPED_LOG_LINES_HELP).expect("valid metric");
        counter.inc_by(telemetry_counters().dropped_log_lines());
        counter.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_telemetry_counters_exist_in_a_registry_from_the_start() {
        let registry = Registry::new();
        register_telemetry_metrics(&registry);

        let text = render_registry(&registry);

        // Process-wide counters: another test of this process may have
        // counted already (nextest runs each test alone, `cargo test` not).
        assert!(text.contains("\ntodo_log_lines_dropped_total "), "{text}");
        for reason in SPAN_DROP_REASONS {
            let series = format!("todo_trace_spans_dropped_total{{reason=\"{reason}\"}} ");
            assert!(text.contains(&series), "{series} missing in {text}");
        }
        for reason in crate::connection_errors::Reason::ALL {
            let series = format!(
                "todo_http_connection_errors_total{{reason=\"{}\"}} ",
                reason.label()
            );
            assert!(text.contains(&series), "{series} missing in {text}");
        }
    }

    #[test]
    fn unwritten_lines_count_as_dropped_in_every_registry() {
        let first = Registry::new();
        let second = Registry::new();
        register_telemetry_metrics(&first);
        register_telemetry_metrics(&second);

        telemetry_counters().log_lines_unwritten(2);
        telemetry_counters().spans_dropped("export_failed", 3);

        for registry in [&first, &second] {
            let text = render_registry(registry);
            let dropped: u64 = text
                .lines()
                .find_map(|line| line.strip_prefix("todo_log_lines_dropped_total "))
                .and_then(|value| value.parse().ok())
                .expect("the counter is exposed");
            assert!(dropped >= 2, "{text}");
            assert!(
                !text.contains("todo_trace_spans_dropped_total{reason=\"export_failed\"} 0"),
                "{text}"
            );
        }
    }

    #[test]
    fn process_metrics_register_and_render() {
        let registry = Registry::new();
        register_process_metrics(&registry);

        let text = render_registry(&registry);

        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
