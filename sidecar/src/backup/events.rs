//! What backups report, one type per event: its `emit` writes the log line
//! and moves the metric in one place, so the logs and `/metrics` cannot tell
//! different stories. The step a backup failed at is a closed set
//! ([`BackupStage`], `as_str()`), the `stage` field of the failure's line.
//!
//! `todo_backup_failures_total` has no label (its contract in
//! docs/architecture.md); the stage is in the log line. The snapshot gauges
//! are set from what the store holds ([`SnapshotsListed`],
//! [`DrillRecordRead`]), never from what this process did, so they stay
//! true across restarts and for backups taken by the CronJob.
//!
//! Adding an event: a type here with `emit` (taking `&BackupMetrics` when it
//! moves a metric); its metric in `crate::metrics::backup` (`BackupMetrics`,
//! created at 0 there); `emit` where it happens.

use chrono::{DateTime, Utc};

use super::BackupError;
use super::snapshot::{Catalog, Manifest};
use crate::label::label_values;
use crate::metrics::BackupMetrics;

label_values! {
    /// The step of a backup that failed: the `stage` field of its log line.
    /// Declared in the order a backup goes through them.
    pub enum BackupStage {
        /// Connecting to the database, or reading its version.
        Connect => "connect",
        /// Taking the advisory lock (held by another backup: not a failure).
        Lock => "lock",
        /// Finding a `pg_dump` as new as the server.
        Tools => "tools",
        /// Starting to write to the store.
        Store => "store",
        /// Opening the snapshot and streaming pg_dump → zstd → store (or
        /// interrupted by a signal meanwhile).
        Dump => "dump",
        /// Completing the data object.
        Upload => "upload",
        /// Writing the manifest (which publishes the snapshot).
        Manifest => "manifest",
    }
}

/// A backup failed and published nothing: `todo_backup_failures_total` and
/// an ERROR line with the stage.
pub struct BackupFailed<'a> {
    /// Where it failed.
    pub stage: BackupStage,
    /// Why.
    pub error: &'a BackupError,
}

impl BackupFailed<'_> {
    /// Counts the failure and logs it.
    pub fn emit(&self, metrics: &BackupMetrics) {
        metrics.failures_total.inc();
        tracing::error!(
            stage = self.stage.as_str(),
            error = format!("{:#}", self.error),
            "backup failed; nothing was published"
        );
    }
}

/// A snapshot was published: an INFO line (the gauges follow from the store,
/// [`SnapshotsListed`]).
pub struct BackupPublished<'a> {
    /// Its manifest.
    pub manifest: &'a Manifest,
}

impl BackupPublished<'_> {
    /// Logs it.
    pub fn emit(&self) {
        tracing::info!(
            snapshot = %self.manifest.id,
            compressed_bytes = self.manifest.compressed_bytes,
            raw_bytes = self.manifest.raw_bytes,
            duration_seconds = self.manifest.duration_seconds(),
            "backup published"
        );
    }
}

/// Retention deleted snapshots after a backup: an INFO line.
pub struct RetentionApplied<'a> {
    /// The snapshots deleted.
    pub deleted: &'a [String],
}

impl RetentionApplied<'_> {
    /// Logs it.
    pub fn emit(&self) {
        tracing::info!(deleted = ?self.deleted, "retention applied");
    }
}

/// Retention failed after a published backup: an ERROR line. Not a failed
/// backup (a retried backup Job would publish one more each time); the next
/// backup's retention catches up.
pub struct RetentionFailed<'a> {
    /// Why.
    pub error: &'a BackupError,
}

impl RetentionFailed<'_> {
    /// Logs it.
    pub fn emit(&self) {
        tracing::error!(
            error = format!("{:#}", self.error),
            "the snapshot was published but retention failed; old snapshots stay until a later backup prunes them"
        );
    }
}

/// The store was listed: `todo_backup_snapshots` and the newest complete
/// snapshot's `todo_backup_last_*` gauges (0 when there is none).
pub struct SnapshotsListed<'a> {
    /// What the store holds.
    pub catalog: &'a Catalog,
}

impl SnapshotsListed<'_> {
    /// Sets the gauges.
    pub fn emit(&self, metrics: &BackupMetrics) {
        metrics.snapshots.set(self.catalog.complete.len() as i64);
        match self.catalog.complete.first() {
            Some(newest) => {
                metrics
                    .last_success_timestamp_seconds
                    .set(seconds(newest.finished_at));
                metrics.last_duration_seconds.set(newest.duration_seconds());
                metrics.last_size_bytes.set(newest.compressed_bytes as i64);
            }
            None => {
                metrics.last_success_timestamp_seconds.set(0.0);
                metrics.last_duration_seconds.set(0.0);
                metrics.last_size_bytes.set(0);
            }
        }
    }
}

/// The store's restore drill record was read:
/// `todo_backup_restore_drill_last_success_timestamp_seconds` (0 without one).
pub struct DrillRecordRead {
    /// When the last successful drill finished; `None` when none is recorded.
    pub succeeded_at: Option<DateTime<Utc>>,
}

impl DrillRecordRead {
    /// Sets the gauge.
    pub fn emit(&self, metrics: &BackupMetrics) {
        metrics
            .restore_drill_last_success_timestamp_seconds
            .set(self.succeeded_at.map_or(0.0, seconds));
    }
}

/// The restore drill record does not parse: a WARN line (the gauge keeps
/// its value).
pub struct DrillRecordUnreadable<'a> {
    /// Why.
    pub error: &'a serde_json::Error,
}

impl DrillRecordUnreadable<'_> {
    /// Logs it.
    pub fn emit(&self) {
        tracing::warn!(error = %self.error, "the restore drill record does not parse");
    }
}

/// A restore drill succeeded and was recorded in the store: an INFO line
/// (the gauge follows from the record, [`DrillRecordRead`]).
pub struct RestoreDrillSucceeded<'a> {
    /// The snapshot restored.
    pub snapshot: &'a str,
    /// Tables whose row counts matched the manifest.
    pub tables_checked: usize,
}

impl RestoreDrillSucceeded<'_> {
    /// Logs it.
    pub fn emit(&self) {
        tracing::info!(
            snapshot = %self.snapshot,
            tables_checked = self.tables_checked,
            "restore drill succeeded"
        );
    }
}

/// Unix time in seconds, with milliseconds.
fn seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn a_failed_backup_is_counted_once_whatever_its_stage() {
        let metrics = BackupMetrics::new();
        let error = BackupError::Other(anyhow::anyhow!("pg_dump failed"));

        for stage in BackupStage::ALL {
            BackupFailed {
                stage,
                error: &error,
            }
            .emit(&metrics);
        }

        assert_eq!(metrics.failures_total.get(), BackupStage::ALL.len() as u64);
    }

    #[test]
    fn stages_have_distinct_names() {
        let names: HashSet<&str> = BackupStage::ALL.map(BackupStage::as_str).into();

        assert_eq!(names.len(), BackupStage::ALL.len());
    }

    #[test]
    fn an_empty_store_sets_the_gauges_to_0() {
        let metrics = BackupMetrics::new();
        metrics.snapshots.set(3);
        metrics.last_size_bytes.set(10);
        metrics
            .restore_drill_last_success_timestamp_seconds
            .set(5.0);

        SnapshotsListed {
            catalog: &Catalog::default(),
        }
        .emit(&metrics);
        DrillRecordRead { succeeded_at: None }.emit(&metrics);

        assert_eq!(metrics.snapshots.get(), 0);
        assert_eq!(metrics.last_size_bytes.get(), 0);
        assert_eq!(
            metrics.restore_drill_last_success_timestamp_seconds.get(),
            0.0
        );
    }
}
