//! The log shipping component's metrics (part of `crate::metrics`, where the
//! sidecar's metric names live).

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};

use crate::logship::events::{CheckpointErrorReason, FailureReason, SourceErrorReason};

/// Metrics of `crate::logship`.
#[derive(Clone)]
pub struct LogshipMetrics {
    /// `todo_logship_lines_read_total`: lines read from the log files.
    pub lines_read_total: IntCounter,
    /// `todo_logship_lines_shipped_total{sink}`: lines a sink accepted.
    pub lines_shipped_total: IntCounterVec,
    /// `todo_logship_failures_total{sink,reason}`: failed attempts (each retry counts).
    pub failures_total: IntCounterVec,
    /// `todo_logship_dead_lettered_total{sink}`: lines a sink refused, written to the dead-letter file.
    pub dead_lettered_total: IntCounterVec,
    /// `todo_logship_lag_bytes`: bytes in the log files not yet acknowledged by every sink.
    pub lag_bytes: IntGauge,
    /// `todo_logship_batch_duration_seconds{sink}`: delivery of one batch, retries included.
    pub batch_duration_seconds: HistogramVec,
    /// `todo_logship_checkpoint_errors_total{reason}`: checkpoint missing or corrupt at start, or not written.
    pub checkpoint_errors_total: IntCounterVec,
    /// `todo_logship_source_errors_total{reason}`: log files the tailer could not read.
    pub source_errors_total: IntCounterVec,
}

impl std::fmt::Debug for LogshipMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LogshipMetrics")
            .finish_non_exhaustive()
    }
}

impl LogshipMetrics {
    /// Creates the metrics (unregistered); the checkpoint error counters
    /// exist at 0 from the start, one for every [`CheckpointErrorReason`].
    pub fn new() -> LogshipMetrics {
        let metrics = LogshipMetrics {
            lines_read_total: IntCounter::new(
                "todo_logship_lines_read_total",
                "Lines read from the log files.",
            )
            .expect("valid metric"),
            lines_shipped_total: IntCounterVec::new(
                Opts::new(
                    "todo_logship_lines_shipped_total",
                    "Lines accepted by a sink.",
                ),
                &["sink"],
            )
            .expect("valid metric"),
            failures_total: IntCounterVec::new(
                Opts::new(
                    "todo_logship_failures_total",
                    "Failed delivery attempts by sink and reason (connection, timeout, rate_limited, server_error, rejected, item_retryable, ...); each retry counts.",
                ),
                &["sink", "reason"],
            )
            .expect("valid metric"),
            dead_lettered_total: IntCounterVec::new(
                Opts::new(
                    "todo_logship_dead_lettered_total",
                    "Lines refused by a sink (4xx other than 408/429, or a failed _bulk item) and written to the dead-letter file.",
                ),
                &["sink"],
            )
            .expect("valid metric"),
            lag_bytes: IntGauge::new(
                "todo_logship_lag_bytes",
                "Bytes written to the log files that not every sink has acknowledged yet.",
            )
            .expect("valid metric"),
            batch_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "todo_logship_batch_duration_seconds",
                    "Time to deliver one batch to a sink, retries included.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
                &["sink"],
            )
            .expect("valid metric"),
            checkpoint_errors_total: IntCounterVec::new(
                Opts::new(
                    "todo_logship_checkpoint_errors_total",
                    "Checkpoint problems: missing or corrupt at start (the shipper starts at logship.start_at), or a failed write.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            source_errors_total: IntCounterVec::new(
                Opts::new(
                    "todo_logship_source_errors_total",
                    "Log files the tailer could not read: unreadable (skipped), or truncated_unread (truncated before it was read to its end and no copy found: those lines are lost).",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        };
        for reason in CheckpointErrorReason::ALL {
            metrics
                .checkpoint_errors_total
                .with_label_values(&[reason.as_str()]);
        }
        for reason in SourceErrorReason::ALL {
            metrics
                .source_errors_total
                .with_label_values(&[reason.as_str()]);
        }
        metrics
    }

    /// Creates the per-sink counters of a configured sink at 0 (lines
    /// shipped and dead-lettered, and a failure counter for every
    /// [`FailureReason`]), so that a sink's first events are seen by
    /// `rate()` and its panels show 0 rather than nothing. Sinks are known
    /// only once the configuration is read, hence not in [`LogshipMetrics::new`].
    pub fn expose_sink(&self, sink: &str) {
        self.lines_shipped_total.with_label_values(&[sink]);
        self.dead_lettered_total.with_label_values(&[sink]);
        for reason in FailureReason::ALL {
            self.failures_total
                .with_label_values(&[sink, reason.as_str()]);
        }
    }

    /// Every metric, for registration.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.lines_read_total.clone()),
            Box::new(self.lines_shipped_total.clone()),
            Box::new(self.failures_total.clone()),
            Box::new(self.dead_lettered_total.clone()),
            Box::new(self.lag_bytes.clone()),
            Box::new(self.batch_duration_seconds.clone()),
            Box::new(self.checkpoint_errors_total.clone()),
            Box::new(self.source_errors_total.clone()),
        ]
    }
}

impl Default for LogshipMetrics {
    fn default() -> Self {
        LogshipMetrics::new()
    }
}
