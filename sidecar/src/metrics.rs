//! Every metric `todo-sidecar` exposes, in its own registry: names are owned
//! here and nowhere else (dashboards and alerts use exactly these).
//!
//! Each component gets one struct of metrics (`BackupMetrics` today; the log
//! shipping and aggregation components add theirs beside it).

use prometheus::{Gauge, IntCounter, IntGauge, Registry};

mod aggregate;
mod logship;
pub use aggregate::AggregateMetrics;
pub use logship::{CHECKPOINT_ERROR_REASONS, LogshipMetrics};

/// The sidecar's registry and every metric in it.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// The backup component's metrics.
    pub backup: BackupMetrics,
    /// The aggregation component's metrics (`metrics/aggregate.rs`).
    pub aggregate: AggregateMetrics,
    /// The log shipping component's metrics (`metrics/logship.rs`).
    pub logship: LogshipMetrics,
}

/// Backup metrics. The "last" and "snapshots" gauges are set from the store
/// itself (see `backup::refresh_metrics`), so they stay true across restarts
/// and for backups taken by another process (the CronJob).
#[derive(Clone)]
pub struct BackupMetrics {
    /// `todo_backup_last_success_timestamp_seconds`: finish time of the newest complete snapshot.
    pub last_success_timestamp_seconds: Gauge,
    /// `todo_backup_last_duration_seconds`: how long the newest complete snapshot took.
    pub last_duration_seconds: Gauge,
    /// `todo_backup_last_size_bytes`: compressed size of the newest complete snapshot.
    pub last_size_bytes: IntGauge,
    /// `todo_backup_snapshots`: complete snapshots in the store.
    pub snapshots: IntGauge,
    /// `todo_backup_failures_total`: backups attempted by this process that failed.
    pub failures_total: IntCounter,
    /// `todo_backup_restore_drill_last_success_timestamp_seconds`: the last successful restore drill.
    pub restore_drill_last_success_timestamp_seconds: Gauge,
}

impl Metrics {
    /// Creates and registers every metric, plus the process metrics.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let backup = BackupMetrics {
            last_success_timestamp_seconds: Gauge::new(
                "todo_backup_last_success_timestamp_seconds",
                "Unix time the newest complete backup snapshot in the store finished; 0 when there is none.",
            )
            .expect("valid metric"),
            last_duration_seconds: Gauge::new(
                "todo_backup_last_duration_seconds",
                "How long the newest complete backup snapshot took, start to finish.",
            )
            .expect("valid metric"),
            last_size_bytes: IntGauge::new(
                "todo_backup_last_size_bytes",
                "Compressed size of the newest complete backup snapshot.",
            )
            .expect("valid metric"),
            snapshots: IntGauge::new(
                "todo_backup_snapshots",
                "Complete backup snapshots in the store.",
            )
            .expect("valid metric"),
            failures_total: IntCounter::new(
                "todo_backup_failures_total",
                "Backups started by this process that failed (nothing was published).",
            )
            .expect("valid metric"),
            restore_drill_last_success_timestamp_seconds: Gauge::new(
                "todo_backup_restore_drill_last_success_timestamp_seconds",
                "Unix time of the last successful restore drill recorded in the store; 0 when none.",
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(backup.last_success_timestamp_seconds.clone())
                as Box<dyn prometheus::core::Collector>,
            Box::new(backup.last_duration_seconds.clone()),
            Box::new(backup.last_size_bytes.clone()),
            Box::new(backup.snapshots.clone()),
            Box::new(backup.failures_total.clone()),
            Box::new(backup.restore_drill_last_success_timestamp_seconds.clone()),
        ] {
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
        todo_app::metrics::register_process_metrics(&registry);
        Metrics {
            registry,
            backup,
            aggregate,
            logship,
        }
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        todo_app::metrics::render_registry(&self.registry)
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
            "todo_logship_lines_shipped_total{sink=\"loki\"} 0".to_string(),
            "todo_logship_dead_lettered_total{sink=\"loki\"} 0".to_string(),
        ];
        for reason in crate::aggregate::events::ScrapeFailureReason::ALL {
            expected.push(format!(
                "todo_app_scrape_failures_total{{reason=\"{}\"}} 0",
                reason.as_str()
            ));
        }
        for reason in CHECKPOINT_ERROR_REASONS {
            expected.push(format!(
                "todo_logship_checkpoint_errors_total{{reason=\"{reason}\"}} 0"
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
