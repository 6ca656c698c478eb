//! The backup component's metrics (part of `crate::metrics`, where the
//! sidecar's metric names live). They are moved by the events of
//! `crate::backup::events`.

use prometheus::core::Collector;
use prometheus::{Gauge, IntCounter, IntGauge};

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

impl BackupMetrics {
    /// Creates the metrics (the caller registers [`BackupMetrics::collectors`]);
    /// every one exists at 0 from the start.
    pub fn new() -> BackupMetrics {
        BackupMetrics {
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
    }
    }

    /// Every metric, for registration.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.last_success_timestamp_seconds.clone()),
            Box::new(self.last_duration_seconds.clone()),
            Box::new(self.last_size_bytes.clone()),
            Box::new(self.snapshots.clone()),
            Box::new(self.failures_total.clone()),
            Box::new(self.restore_drill_last_success_timestamp_seconds.clone()),
        ]
    }
}

impl Default for BackupMetrics {
    fn default() -> Self {
        BackupMetrics::new()
    }
}
