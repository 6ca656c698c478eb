//! What log shipping reports, one type per event: its `emit` writes the log
//! line and moves the metric in one place, so what an operator reads in the
//! logs and on `/metrics` cannot tell different stories. Reasons are closed
//! sets (enums with `as_str()`): the same text is the metric's `reason`
//! label and the log line's `reason` field.
//!
//! Readings that are not events (`todo_logship_lag_bytes`) are set where
//! they are measured.
//!
//! Adding an event: a type here with `emit(&self, &LogshipMetrics)`; its
//! metric, if new, in `crate::metrics::logship` (a counter whose labels are
//! known is created at 0 there, from its enum's `ALL`); `emit` where it
//! happens. A new failure reason is a variant of [`FailureReason`] (and a
//! word in docs/logship.md's metrics table, which a test checks).

use std::path::Path;
use std::time::Duration;

use super::checkpoint::LoadError;
use super::config::StartAt;
use crate::label::label_values;
use crate::metrics::LogshipMetrics;

label_values! {
    /// Why delivering to a sink failed: the `reason` label of
    /// `todo_logship_failures_total` and of the log line.
    pub enum FailureReason {
        /// The connection failed (refused, reset, TLS, DNS).
        Connection => "connection",
        /// No answer within `logship.retry.request_timeout_ms`.
        Timeout => "timeout",
        /// 429.
        RateLimited => "rate_limited",
        /// 5xx or 408.
        ServerError => "server_error",
        /// 401, 403 or 407: retried until the credentials are fixed.
        Unauthorized => "unauthorized",
        /// 404: retried until the URL is fixed.
        NotFound => "not_found",
        /// `_bulk` items answered 429 or 5xx: those are sent again.
        ItemRetryable => "item_retryable",
        /// Other 4xx, or failed `_bulk` items: dead-lettered.
        Rejected => "rejected",
        /// A 2xx whose body cannot be read as the sink's answer: retried.
        BadAnswer => "bad_answer",
        /// The dead-letter file cannot be written: the refused lines are lost.
        DeadLetterWrite => "dead_letter_write",
        /// Refused lines beyond the dead-letter file's bound were dropped.
        DeadLetterOverflow => "dead_letter_overflow",
        /// The batch could not be encoded.
        Encode => "encode",
        /// stdout could not be written.
        Write => "write",
        /// OTLP: the collector refused some records of a batch (dead-lettered).
        PartialSuccess => "partial_success",
        /// The drain at shutdown ended with lines this sink had not accepted.
        DrainTimeout => "drain_timeout",
    }
}

label_values! {
    /// Why the checkpoint could not be used or kept: the `reason` label of
    /// `todo_logship_checkpoint_errors_total` and of the log line.
    pub enum CheckpointErrorReason {
        /// None at start (first start, or deleted).
        Missing => "missing",
        /// Unreadable or unparsable at start.
        Corrupt => "corrupt",
        /// It could not be written.
        Write => "write",
    }
}

label_values! {
    /// Why the tailer could not read a log file: the `reason` label of
    /// `todo_logship_source_errors_total` and of the log line.
    pub enum SourceErrorReason {
        /// A file of the path's family exists but cannot be opened (skipped).
        Unreadable => "unreadable",
        /// The file was truncated before it was read to its end, and no copy of
        /// it was found among the rotated files: the unread lines are lost.
        TruncatedUnread => "truncated_unread",
    }
}

/// The tailer could not read a log file: a WARN line and
/// `todo_logship_source_errors_total{reason}`.
pub struct SourceError<'a> {
    /// What went wrong.
    pub reason: SourceErrorReason,
    /// The file (a rotated sibling for `unreadable`, the live path for
    /// `truncated_unread`).
    pub path: &'a Path,
    /// The error of the open, for `unreadable`.
    pub error: Option<&'a std::io::Error>,
}

impl SourceError<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        let reason = self.reason.as_str();
        match self.reason {
            SourceErrorReason::Unreadable => tracing::warn!(
                path = %self.path.display(),
                reason,
                error = self.error.map(ToString::to_string),
                "cannot open a log file; skipping it"
            ),
            SourceErrorReason::TruncatedUnread => tracing::warn!(
                path = %self.path.display(),
                reason,
                "log file truncated and no copy of it found; lines not yet shipped from before the truncation are lost"
            ),
        }
        metrics
            .source_errors_total
            .with_label_values(&[reason])
            .inc();
    }
}

fn count_failure(metrics: &LogshipMetrics, sink: &str, reason: FailureReason) {
    metrics
        .failures_total
        .with_label_values(&[sink, reason.as_str()])
        .inc();
}

/// Lines were read from the files: `todo_logship_lines_read_total`. No log
/// line (every batch reads).
pub struct LinesRead {
    /// How many.
    pub lines: usize,
}

impl LinesRead {
    /// Counts them.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        metrics.lines_read_total.inc_by(self.lines as u64);
    }
}

/// A sink accepted lines: `todo_logship_lines_shipped_total{sink}` and a
/// DEBUG line.
pub struct LinesShipped {
    /// The sink.
    pub sink: &'static str,
    /// How many it accepted.
    pub lines: usize,
}

impl LinesShipped {
    /// Counts them.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        metrics
            .lines_shipped_total
            .with_label_values(&[self.sink])
            .inc_by(self.lines as u64);
        tracing::debug!(sink = self.sink, lines = self.lines, "lines shipped");
    }
}

/// A batch was delivered to a sink (accepted or dead-lettered), retries
/// included: `todo_logship_batch_duration_seconds{sink}` and a DEBUG line.
pub struct BatchDelivered {
    /// The sink.
    pub sink: &'static str,
    /// From the first attempt to the last answer.
    pub duration: Duration,
}

impl BatchDelivered {
    /// Observes the duration.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        metrics
            .batch_duration_seconds
            .with_label_values(&[self.sink])
            .observe(self.duration.as_secs_f64());
        tracing::debug!(
            sink = self.sink,
            seconds = self.duration.as_secs_f64(),
            "batch delivered"
        );
    }
}

/// An attempt failed and the batch (or its retryable items) will be sent
/// again: `todo_logship_failures_total{sink,reason}` and a WARN line with
/// the same `reason`.
pub struct DeliveryFailed<'a> {
    /// The sink.
    pub sink: &'static str,
    /// Why.
    pub reason: FailureReason,
    /// What the sink or the connection said (no secret: never the request).
    pub error: &'a str,
}

impl DeliveryFailed<'_> {
    /// Counts the failure and logs it.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        count_failure(metrics, self.sink, self.reason);
        tracing::warn!(
            sink = self.sink,
            reason = self.reason.as_str(),
            error = %self.error,
            "sending a batch failed; retrying"
        );
    }
}

/// A sink refused lines that trying again cannot help (other 4xx, failed
/// `_bulk` items): `todo_logship_failures_total{sink,reason="rejected"}`
/// and a WARN line; the lines go to the dead-letter file.
pub struct LinesRejected<'a> {
    /// The sink.
    pub sink: &'static str,
    /// How many lines were refused.
    pub lines: usize,
    /// The sink's answer (for `_bulk`, the first refused item's).
    pub answer: &'a str,
}

impl LinesRejected<'_> {
    /// Counts the refusal and logs it.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        let reason = FailureReason::Rejected;
        count_failure(metrics, self.sink, reason);
        tracing::warn!(
            sink = self.sink,
            reason = reason.as_str(),
            lines = self.lines,
            answer = %self.answer,
            "the sink refused a batch; dead-lettering the refused lines"
        );
    }
}

/// OTLP `partial_success`: the collector refused some records without
/// saying which, so the whole batch is dead-lettered:
/// `todo_logship_failures_total{sink,reason="partial_success"}` and a WARN line.
pub struct PartiallyRejected<'a> {
    /// The sink.
    pub sink: &'static str,
    /// Lines in the batch.
    pub lines: usize,
    /// How many the collector refused.
    pub rejected: usize,
    /// The collector's message.
    pub answer: &'a str,
}

impl PartiallyRejected<'_> {
    /// Counts the partial success and logs it.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        let reason = FailureReason::PartialSuccess;
        count_failure(metrics, self.sink, reason);
        tracing::warn!(
            sink = self.sink,
            reason = reason.as_str(),
            lines = self.lines,
            rejected = self.rejected,
            answer = %self.answer,
            "the sink refused part of a batch without saying which lines; dead-lettering the batch"
        );
    }
}

/// Refused lines were written to the dead-letter file:
/// `todo_logship_dead_lettered_total{sink}` and a DEBUG line (the refusal
/// itself was logged at WARN).
pub struct LinesDeadLettered {
    /// The sink that refused them.
    pub sink: &'static str,
    /// How many were written.
    pub lines: usize,
}

impl LinesDeadLettered {
    /// Counts them.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        metrics
            .dead_lettered_total
            .with_label_values(&[self.sink])
            .inc_by(self.lines as u64);
        tracing::debug!(
            sink = self.sink,
            lines = self.lines,
            "lines written to the dead-letter file"
        );
    }
}

/// Refused lines did not fit in the dead-letter file's bound and were
/// dropped: `todo_logship_failures_total{sink,reason="dead_letter_overflow"}`
/// and an ERROR line.
pub struct DeadLetterOverflow<'a> {
    /// The sink that refused them.
    pub sink: &'static str,
    /// The dead-letter file.
    pub path: &'a std::path::Path,
    /// Lines written.
    pub written: usize,
    /// Lines dropped.
    pub dropped: usize,
}

impl DeadLetterOverflow<'_> {
    /// Counts the overflow and logs it.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        let reason = FailureReason::DeadLetterOverflow;
        count_failure(metrics, self.sink, reason);
        tracing::error!(
            sink = self.sink,
            reason = reason.as_str(),
            path = %self.path.display(),
            written = self.written,
            dropped = self.dropped,
            "the refused lines do not fit in the dead-letter file's bound; the rest are dropped"
        );
    }
}

/// The dead-letter file could not be written and the refused lines were
/// dropped: `todo_logship_failures_total{sink,reason="dead_letter_write"}`
/// and an ERROR line.
pub struct DeadLetterWriteFailed<'a> {
    /// The sink that refused them.
    pub sink: &'static str,
    /// The dead-letter file.
    pub path: &'a std::path::Path,
    /// Why.
    pub error: &'a str,
    /// Lines dropped.
    pub lines: usize,
}

impl DeadLetterWriteFailed<'_> {
    /// Counts the failure and logs it.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        let reason = FailureReason::DeadLetterWrite;
        count_failure(metrics, self.sink, reason);
        tracing::error!(
            sink = self.sink,
            reason = reason.as_str(),
            path = %self.path.display(),
            error = %self.error,
            lines = self.lines,
            "cannot write the dead-letter file; the refused lines are dropped"
        );
    }
}

/// stdout could not be written (never retried: nobody would read the
/// retries either): `todo_logship_failures_total{sink="stdout",reason="write"}`
/// and a WARN line (on stdout, so it may be lost with it).
pub struct StdoutWriteFailed<'a> {
    /// Lines not written.
    pub lines: usize,
    /// Why.
    pub error: &'a std::io::Error,
}

impl StdoutWriteFailed<'_> {
    /// Counts the failure and logs it.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        let reason = FailureReason::Write;
        count_failure(metrics, "stdout", reason);
        tracing::warn!(
            sink = "stdout",
            reason = reason.as_str(),
            lines = self.lines,
            error = %self.error,
            "cannot write lines to stdout; they are not shipped there"
        );
    }
}

/// The drain at shutdown ended with everything shipped: an INFO line.
pub struct Drained;

impl Drained {
    /// Logs it.
    pub fn emit(&self) {
        tracing::info!("log shipping drained: every line written was shipped");
    }
}

/// The drain at shutdown reached its deadline with lines not shipped:
/// `todo_logship_failures_total{sink,reason="drain_timeout"}` for each sink
/// that had not accepted them, and an ERROR line.
pub struct DrainTimedOut<'a> {
    /// Lines read whose batch not every sink accepted.
    pub lines_read_not_shipped: usize,
    /// Bytes of the files not acknowledged by every sink, read or not.
    pub bytes_not_shipped: u64,
    /// The sinks that had not accepted them.
    pub sinks: &'a [&'static str],
}

impl DrainTimedOut<'_> {
    /// Counts it for each sink and logs it.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        let reason = FailureReason::DrainTimeout;
        for sink in self.sinks {
            count_failure(metrics, sink, reason);
        }
        tracing::error!(
            reason = reason.as_str(),
            lines_read_not_shipped = self.lines_read_not_shipped,
            bytes_not_shipped = self.bytes_not_shipped,
            sinks = ?self.sinks,
            "log shipping stopped at the drain deadline with lines not shipped; they are shipped after a restart if the log files remain, and lost if they go with the pod (raise logship.drain_timeout_seconds and the pod's grace period)"
        );
    }
}

/// The checkpoint could not be used at start, and the files start at
/// `start_at`: `todo_logship_checkpoint_errors_total{reason}` and a line,
/// INFO when it is missing (a first start), WARN when it is corrupt.
pub struct CheckpointUnusable<'a> {
    /// Why.
    pub error: &'a LoadError,
    /// Where the files start instead.
    pub start_at: StartAt,
}

impl CheckpointUnusable<'_> {
    /// Counts it and logs it.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        let reason = self.error.reason();
        metrics
            .checkpoint_errors_total
            .with_label_values(&[reason.as_str()])
            .inc();
        match reason {
            CheckpointErrorReason::Corrupt => tracing::warn!(
                reason = reason.as_str(),
                error = %self.error,
                start_at = ?self.start_at,
                "the log shipping checkpoint is unusable; files start at start_at"
            ),
            _ => tracing::info!(
                reason = reason.as_str(),
                error = %self.error,
                start_at = ?self.start_at,
                "no log shipping checkpoint; files start at start_at"
            ),
        }
    }
}

/// The checkpoint could not be written (shipping goes on; a restart would
/// repeat more): `todo_logship_checkpoint_errors_total{reason="write"}` and
/// an ERROR line.
pub struct CheckpointWriteFailed<'a> {
    /// Why.
    pub error: &'a str,
}

impl CheckpointWriteFailed<'_> {
    /// Counts it and logs it.
    pub fn emit(&self, metrics: &LogshipMetrics) {
        let reason = CheckpointErrorReason::Write;
        metrics
            .checkpoint_errors_total
            .with_label_values(&[reason.as_str()])
            .inc();
        tracing::error!(
            reason = reason.as_str(),
            error = %self.error,
            "cannot write the log shipping checkpoint"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_reason_is_documented_in_the_metrics_table() {
        let docs = include_str!("../../../docs/logship.md");
        let table_row = docs
            .lines()
            .find(|line| line.starts_with("| `todo_logship_failures_total{sink,reason}`"))
            .expect("docs/logship.md has the failures row");
        for reason in FailureReason::ALL {
            assert!(
                table_row.contains(&format!("`{}`", reason.as_str())),
                "{reason} is not in docs/logship.md's metrics table"
            );
        }
    }

    #[test]
    fn label_values_are_distinct() {
        let mut values: Vec<&str> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), FailureReason::ALL.len());
    }
}
