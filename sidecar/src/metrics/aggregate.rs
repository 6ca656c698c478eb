//! The aggregation component's metrics (part of `crate::metrics`, where the
//! sidecar's metric names live). Those that describe a reading (`todo_app_up`,
//! the database gauges) have no series until the first reading, so a sidecar
//! with aggregation off does not claim the app is down.

use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::aggregate::events::ScrapeFailureReason;

/// Metrics of `crate::aggregate`.
#[derive(Clone)]
pub struct AggregateMetrics {
    /// `todo_app_up`: 1 when the last scrape of the app succeeded, else 0.
    pub app_up: IntGaugeVec,
    /// `todo_app_scrape_duration_seconds`: how long the last scrape of the app took.
    pub app_scrape_duration_seconds: GaugeVec,
    /// `todo_app_scrape_failures_total{reason}`: failed scrapes of the app.
    pub app_scrape_failures_total: IntCounterVec,
    /// `todo_aggregation_series`: app series exposed after the rules and the guard.
    pub series: IntGauge,
    /// `todo_aggregation_series_dropped_total`: app series dropped by the guard.
    pub series_dropped_total: IntCounter,
    /// `todo_pg_up`: 1 when the database gauges could be read, else 0.
    pub pg_up: IntGaugeVec,
    /// `todo_pg_connections{state}`: client connections to the database by state.
    pub pg_connections: IntGaugeVec,
    /// `todo_pg_database_size_bytes`: size of the database.
    pub pg_database_size_bytes: IntGaugeVec,
    /// `todo_todos{completed}`: rows of the todos table by completed state.
    pub todos: IntGaugeVec,
    /// `todo_pg_oldest_transaction_age_seconds`: age of the oldest open transaction.
    pub pg_oldest_transaction_age_seconds: GaugeVec,
    /// `todo_remote_write_samples_sent_total`: samples the receiver accepted.
    pub remote_write_samples_sent_total: IntCounter,
    /// `todo_remote_write_samples_failed_total`: samples given up after a rejection or the last retry.
    pub remote_write_samples_failed_total: IntCounter,
    /// `todo_remote_write_samples_dropped_total`: samples dropped because the queue was full.
    pub remote_write_samples_dropped_total: IntCounter,
    /// `todo_remote_write_queue_samples`: samples waiting to be sent.
    pub remote_write_queue_samples: IntGauge,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl AggregateMetrics {
    /// Creates the metrics (the caller registers [`AggregateMetrics::collectors`]).
    /// The failure counters exist at 0 from the start for every reason, so
    /// `rate()` sees the first failure; the readings stay absent until read.
    pub fn new() -> AggregateMetrics {
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(opts(name, help), labels).expect("valid metric")
        };
        let metrics = AggregateMetrics {
            app_up: gauge_vec(
                "todo_app_up",
                "1 when the last scrape of todo-app's /metrics succeeded and parsed, else 0.",
                &[],
            ),
            app_scrape_duration_seconds: GaugeVec::new(
                opts(
                    "todo_app_scrape_duration_seconds",
                    "How long the last scrape of todo-app's /metrics took (fetch, parse, rules).",
                ),
                &[],
            )
            .expect("valid metric"),
            app_scrape_failures_total: IntCounterVec::new(
                opts(
                    "todo_app_scrape_failures_total",
                    "Failed scrapes of todo-app's /metrics, by reason (timeout, connect, status, too_large, body, parse).",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            series: IntGauge::new(
                "todo_aggregation_series",
                "App series exposed by the last aggregation, after the rules and the cardinality guard.",
            )
            .expect("valid metric"),
            series_dropped_total: IntCounter::new(
                "todo_aggregation_series_dropped_total",
                "App series dropped by the cardinality guard (aggregate.max_series), summed over scrapes.",
            )
            .expect("valid metric"),
            pg_up: gauge_vec(
                "todo_pg_up",
                "1 when the database gauges could be read, else 0 (and the todo_pg_* gauges are absent).",
                &[],
            ),
            pg_connections: gauge_vec(
                "todo_pg_connections",
                "Client connections to the database by state (pg_stat_activity).",
                &["state"],
            ),
            pg_database_size_bytes: gauge_vec(
                "todo_pg_database_size_bytes",
                "Size of the database (pg_database_size).",
                &[],
            ),
            todos: gauge_vec(
                "todo_todos",
                "Rows of the todos table by completed state.",
                &["completed"],
            ),
            pg_oldest_transaction_age_seconds: GaugeVec::new(
                opts(
                    "todo_pg_oldest_transaction_age_seconds",
                    "Age of the oldest open transaction in the database (other than the sidecar's); 0 when none.",
                ),
                &[],
            )
            .expect("valid metric"),
            remote_write_samples_sent_total: IntCounter::new(
                "todo_remote_write_samples_sent_total",
                "Samples accepted by the remote_write receiver.",
            )
            .expect("valid metric"),
            remote_write_samples_failed_total: IntCounter::new(
                "todo_remote_write_samples_failed_total",
                "Samples given up: rejected by the receiver, or still failing after the last retry.",
            )
            .expect("valid metric"),
            remote_write_samples_dropped_total: IntCounter::new(
                "todo_remote_write_samples_dropped_total",
                "Samples dropped unsent because the remote_write queue was full (or at shutdown).",
            )
            .expect("valid metric"),
            remote_write_queue_samples: IntGauge::new(
                "todo_remote_write_queue_samples",
                "Samples waiting to be sent to the remote_write receiver.",
            )
            .expect("valid metric"),
        };
        for reason in ScrapeFailureReason::ALL {
            metrics
                .app_scrape_failures_total
                .with_label_values(&[reason.as_str()]);
        }
        metrics
    }

    /// Every metric, for registration.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.app_up.clone()),
            Box::new(self.app_scrape_duration_seconds.clone()),
            Box::new(self.app_scrape_failures_total.clone()),
            Box::new(self.series.clone()),
            Box::new(self.series_dropped_total.clone()),
            Box::new(self.pg_up.clone()),
            Box::new(self.pg_connections.clone()),
            Box::new(self.pg_database_size_bytes.clone()),
            Box::new(self.todos.clone()),
            Box::new(self.pg_oldest_transaction_age_seconds.clone()),
            Box::new(self.remote_write_samples_sent_total.clone()),
            Box::new(self.remote_write_samples_failed_total.clone()),
            Box::new(self.remote_write_samples_dropped_total.clone()),
            Box::new(self.remote_write_queue_samples.clone()),
        ]
    }
}

impl Default for AggregateMetrics {
    fn default() -> Self {
        AggregateMetrics::new()
    }
}
