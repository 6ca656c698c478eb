//! Every metric `todo-sidecar` exposes, in its own registry: names are owned
//! here and nowhere else (dashboards and alerts use exactly these), except
//! those both programs expose the same way (process metrics and the
//! telemetry counters `todo_trace_spans_dropped_total`,
//! `todo_log_lines_dropped_total`, `todo_http_connection_errors_total`), which
//! `todo_common::metrics` owns and this registry includes.
//!
//! Each component gets one struct of metrics, in a file of its own
//! (`metrics/{backup,aggregate,logship}.rs`); what moves them is the
//! component's internal events (`backup/events.rs`, `aggregate/events.rs`, `logship/events.rs`),
//! which write the log line in the same place.

use prometheus::Registry;

mod aggregate;
mod backup;
mod logship;
pub use aggregate::AggregateMetrics;
pub use backup::BackupMetrics;
pub use logship::LogshipMetrics;

/// The sidecar's registry and every metric in it.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// The backup component's metrics (`metrics/backup.rs`).
    pub backup: BackupMetrics,
    /// The aggregation component's metrics (`metrics/aggregate.rs`).
    pub aggregate: AggregateMetrics,
    /// The log shipping component's metrics (`metrics/logship.rs`).
    pub logship: LogshipMetrics,
}

impl Metrics {
    /// Creates and registers every metric, plus the process metrics.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let backup = BackupMetrics::new();
        for collector in backup.collectors() {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        let aggregate = AggregateMetrics::new();
        for collector in aggregate.collectors() {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        let logship = LogshipMetrics::new();
        for collector in logship.collectors() {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        todo_common::metrics::register_telemetry_metrics(&registry);
        todo_common::metrics::register_process_metrics(&registry);
        Metrics {
            registry,
            backup,
            aggregate,
            logship,
        }
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        todo_common::metrics::render_registry(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backup_metric_renders() {
        let metrics = Metrics::new();
        metrics.backup.failures_total.inc();
        let text = metrics.render();
        for name in [
            "todo_backup_last_success_timestamp_seconds",
            "todo_backup_last_duration_seconds",
            "todo_backup_last_size_bytes",
            "todo_backup_snapshots",
            "todo_backup_restore_drill_last_success_timestamp_seconds",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing in {text}"
            );
        }
        assert!(text.contains("todo_backup_failures_total 1"));
    }

    #[test]
    fn counters_with_known_label_values_exist_at_zero_before_any_event() {
        let metrics = Metrics::new();
        metrics.logship.expose_sink("loki");

        let text = metrics.render();

        let mut expected = vec![
            "todo_backup_failures_total 0".to_string(),
            "todo_aggregation_series_dropped_total 0".to_string(),
            "todo_remote_write_samples_sent_total 0".to_string(),
            "todo_remote_write_samples_failed_total 0".to_string(),
            "todo_remote_write_samples_dropped_total 0".to_string(),
            "todo_logship_lines_read_total 0".to_string(),
            // Its own logging's drops, not the app's (issue 13).
            "todo_log_lines_dropped_total 0".to_string(),
            "todo_trace_spans_dropped_total{reason=\"queue_full\"} 0".to_string(),
            "todo_trace_spans_dropped_total{reason=\"export_failed\"} 0".to_string(),
            "todo_trace_spans_dropped_total{reason=\"collector_down\"} 0".to_string(),
            "todo_logship_lines_shipped_total{sink=\"loki\"} 0".to_string(),
            "todo_logship_dead_lettered_total{sink=\"loki\"} 0".to_string(),
        ];
        for reason in crate::aggregate::events::ScrapeFailureReason::ALL {
            expected.push(format!(
                "todo_app_scrape_failures_total{{reason=\"{}\"}} 0",
                reason.as_str()
            ));
        }
        for reason in crate::logship::events::CheckpointErrorReason::ALL {
            expected.push(format!(
                "todo_logship_checkpoint_errors_total{{reason=\"{reason}\"}} 0"
            ));
        }
        for reason in crate::logship::events::FailureReason::ALL {
            expected.push(format!(
                "todo_logship_failures_total{{reason=\"{reason}\",sink=\"loki\"}} 0"
            ));
        }
        for line in expected {
            assert!(text.lines().any(|l| l == line), "{line} missing in {text}");
        }
        // Readings stay absent until read: no claim that the app or the database is down.
        assert!(!text.contains("\ntodo_app_up "), "{text}");
        assert!(!text.contains("\ntodo_pg_up "), "{text}");
    }
}
