//! What aggregation reports, one type per event: its `emit` writes the log
//! line and moves the metric in one place, so what an operator reads in the
//! logs and on `/metrics` cannot tell different stories. Reasons are closed
//! sets (enums with `as_str()`): the same text is the metric's label value
//! (where the metric has a `reason` label) and the log line's `reason` field.
//!
//! Readings that are not events (`todo_app_up`, the scrape's duration, the
//! series served, the queue depth, the database gauges read) are set where
//! they are measured.
//!
//! Adding an event: a type here with `emit(&self, &AggregateMetrics)`; its
//! metric in `crate::metrics::aggregate` (a counter with a label is created
//! at 0 there for every value of its enum); `emit` where it happens.

use super::pg::PgError;
use super::remote_write::PushError;
use super::scrape::ScrapeError;
use crate::label::label_values;
use crate::metrics::AggregateMetrics;

label_values! {
    /// Why a scrape of the app failed: the `reason` label of
    /// `todo_app_scrape_failures_total` and of the warning.
    pub enum ScrapeFailureReason {
        /// No answer within `aggregate.scrape_timeout_ms`.
        Timeout => "timeout",
        /// The connection failed (nothing listens, refused, reset).
        Connect => "connect",
        /// An HTTP status other than 2xx.
        Status => "status",
        /// The body exceeds `aggregate.max_body_bytes`.
        TooLarge => "too_large",
        /// The body could not be read.
        Body => "body",
        /// The body is not a valid exposition.
        Parse => "parse",
    }
}

/// The app could not be scraped: `todo_app_scrape_failures_total{reason}`
/// and a WARN line with the same `reason`.
pub struct AppScrapeFailed<'a> {
    /// What went wrong; its [`ScrapeError::reason`] is the reason.
    pub error: &'a ScrapeError,
    /// The app's metrics URL, already redacted.
    pub url: &'a str,
}

impl AppScrapeFailed<'_> {
    /// Counts the failure and logs it.
    pub fn emit(&self, metrics: &AggregateMetrics) {
        let reason = self.error.reason();
        metrics
            .app_scrape_failures_total
            .with_label_values(&[reason.as_str()])
            .inc();
        tracing::warn!(
            reason = reason.as_str(),
            error = %self.error,
            url = %self.url,
            "cannot scrape the app's metrics"
        );
    }
}

/// The cardinality guard dropped app series:
/// `todo_aggregation_series_dropped_total` and a WARN line.
pub struct SeriesDropped {
    /// Samples dropped by this collection.
    pub dropped: usize,
    /// `aggregate.max_series`.
    pub max_series: usize,
}

impl SeriesDropped {
    /// Counts the dropped series and logs them.
    pub fn emit(&self, metrics: &AggregateMetrics) {
        metrics.series_dropped_total.inc_by(self.dropped as u64);
        tracing::warn!(
            dropped = self.dropped,
            max_series = self.max_series,
            "the app exposes more series than aggregate.max_series; the excess is dropped"
        );
    }
}

/// A rule was not applied to what the app exposes (its family is passed
/// through unaggregated): a WARN line; no metric.
pub struct RuleNotApplied<'a> {
    /// The family and why.
    pub reason: &'a str,
}

impl RuleNotApplied<'_> {
    /// Logs it.
    pub fn emit(&self) {
        tracing::warn!(reason = %self.reason, "an aggregation rule was not applied");
    }
}

/// The database gauges could not be read: `todo_pg_up` 0, the other
/// database gauges absent (a zero would read as "no connections, empty
/// database"), and a WARN line.
pub struct PgGaugesUnreadable<'a> {
    /// Why.
    pub error: &'a PgError,
}

impl PgGaugesUnreadable<'_> {
    /// Clears the gauges and logs why.
    pub fn emit(&self, metrics: &AggregateMetrics) {
        metrics.pg_up.with_label_values(&[] as &[&str]).set(0);
        metrics.pg_connections.reset();
        metrics.pg_database_size_bytes.reset();
        metrics.todos.reset();
        metrics.pg_oldest_transaction_age_seconds.reset();
        tracing::warn!(error = %self.error, "cannot read the database gauges");
    }
}

/// The receiver accepted a request: `todo_remote_write_samples_sent_total`
/// and a DEBUG line.
pub struct RemoteWriteSent {
    /// Samples in the request.
    pub samples: u64,
}

impl RemoteWriteSent {
    /// Counts the samples sent.
    pub fn emit(&self, metrics: &AggregateMetrics) {
        metrics.remote_write_samples_sent_total.inc_by(self.samples);
        tracing::debug!(samples = self.samples, "remote_write push accepted");
    }
}

label_values! {
    /// Why a request's samples were given up (the `reason` of the warning;
    /// both count in `todo_remote_write_samples_failed_total`, which has no
    /// label so that the alert can add it to the dropped samples).
    pub enum PushFailureReason {
        /// The receiver refused the data (a 4xx other than 429): not retried.
        Rejected => "rejected",
        /// Network errors, 5xx or 429 until `max_retries` was spent.
        RetriesExhausted => "retries_exhausted",
    }
}

/// A request's samples were given up:
/// `todo_remote_write_samples_failed_total` and a WARN line.
pub struct RemoteWriteFailed<'a> {
    /// Samples in the request.
    pub samples: u64,
    /// The last attempt's failure; [`PushError::reason`] is the reason.
    pub error: &'a PushError,
}

impl RemoteWriteFailed<'_> {
    /// Counts the samples given up and logs why.
    pub fn emit(&self, metrics: &AggregateMetrics) {
        metrics
            .remote_write_samples_failed_total
            .inc_by(self.samples);
        tracing::warn!(
            reason = self.error.reason().as_str(),
            error = %self.error,
            samples = self.samples,
            "remote_write push failed; samples given up"
        );
    }
}

label_values! {
    /// Why samples were dropped unsent (the `reason` of the log line; both
    /// count in `todo_remote_write_samples_dropped_total`).
    pub enum DropReason {
        /// A snapshot did not fit in `max_queued_samples`: the oldest went.
        QueueFull => "queue_full",
        /// Still queued, or being pushed, when the sidecar stopped.
        Shutdown => "shutdown",
    }
}

/// Samples were dropped unsent: `todo_remote_write_samples_dropped_total`
/// and a WARN line (INFO at shutdown, which is expected).
pub struct RemoteWriteDropped {
    /// Samples dropped.
    pub samples: u64,
    /// Why.
    pub reason: DropReason,
}

impl RemoteWriteDropped {
    /// Counts the samples dropped and logs why.
    pub fn emit(&self, metrics: &AggregateMetrics) {
        metrics
            .remote_write_samples_dropped_total
            .inc_by(self.samples);
        let reason = self.reason.as_str();
        match self.reason {
            DropReason::QueueFull => tracing::warn!(
                reason,
                dropped = self.samples,
                "remote_write queue full; dropped the oldest samples"
            ),
            DropReason::Shutdown => tracing::info!(
                reason,
                samples = self.samples,
                "remote_write stopped with samples unsent"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_scrape_failure_counts_under_its_own_reason_only() {
        for reason in ScrapeFailureReason::ALL {
            let metrics = AggregateMetrics::new();
            let error = match reason {
                ScrapeFailureReason::Timeout => ScrapeError::Timeout(Duration::from_secs(3)),
                ScrapeFailureReason::Connect => ScrapeError::Connect("refused".into()),
                ScrapeFailureReason::Status => ScrapeError::Status(503),
                ScrapeFailureReason::TooLarge => ScrapeError::TooLarge(10),
                ScrapeFailureReason::Body => ScrapeError::Body("reset".into()),
                ScrapeFailureReason::Parse => {
                    ScrapeError::Parse(crate::aggregate::parse::ParseError {
                        line: 1,
                        message: "garbage".into(),
                        near: "<html>".into(),
                    })
                }
            };

            AppScrapeFailed {
                error: &error,
                url: "http://127.0.0.1:9000/metrics",
            }
            .emit(&metrics);

            for other in ScrapeFailureReason::ALL {
                let count = metrics
                    .app_scrape_failures_total
                    .with_label_values(&[other.as_str()])
                    .get();
                assert_eq!(count, u64::from(other == reason), "{other} after {reason}");
            }
        }
    }

    #[test]
    fn reasons_have_distinct_label_values() {
        let scrape: HashSet<&str> = ScrapeFailureReason::ALL.map(|r| r.as_str()).into();
        let push: HashSet<&str> = PushFailureReason::ALL.map(|r| r.as_str()).into();
        let dropped: HashSet<&str> = DropReason::ALL.map(|r| r.as_str()).into();

        assert_eq!(scrape.len(), ScrapeFailureReason::ALL.len());
        assert_eq!(push.len(), PushFailureReason::ALL.len());
        assert_eq!(dropped.len(), DropReason::ALL.len());
    }

    #[test]
    fn remote_write_events_count_their_samples() {
        let metrics = AggregateMetrics::new();
        let rejected = PushError::Rejected("400 out of order".into());
        let unreachable = PushError::retryable("connection refused");

        RemoteWriteSent { samples: 7 }.emit(&metrics);
        RemoteWriteFailed {
            samples: 3,
            error: &rejected,
        }
        .emit(&metrics);
        RemoteWriteFailed {
            samples: 2,
            error: &unreachable,
        }
        .emit(&metrics);
        for reason in DropReason::ALL {
            RemoteWriteDropped { samples: 5, reason }.emit(&metrics);
        }

        assert_eq!(metrics.remote_write_samples_sent_total.get(), 7);
        assert_eq!(metrics.remote_write_samples_failed_total.get(), 5);
        assert_eq!(metrics.remote_write_samples_dropped_total.get(), 10);
        assert_eq!(rejected.reason(), PushFailureReason::Rejected);
        assert_eq!(unreachable.reason(), PushFailureReason::RetriesExhausted);
    }

    #[test]
    fn series_dropped_by_the_guard_are_counted() {
        let metrics = AggregateMetrics::new();

        SeriesDropped {
            dropped: 12,
            max_series: 100,
        }
        .emit(&metrics);

        assert_eq!(metrics.series_dropped_total.get(), 12);
    }
}
