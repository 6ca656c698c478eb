//! Backup snapshots: the operations behind `backup run|list|verify|restore|prune`
//! and the component that `run` supervises (metrics from the store, and
//! scheduled backups when `backup.schedule` is set).

pub mod events;
pub mod postgres;
pub mod restore;
pub mod retention;
pub mod snapshot;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use futures_util::future::BoxFuture;

use crate::component::{Component, ComponentHealth, HealthHandle, Shutdown};
use crate::configuration::{RetentionSettings, Settings};
use crate::metrics::BackupMetrics;
use events::{
    BackupFailed, DrillRecordRead, DrillRecordUnreadable, RetentionApplied, RetentionFailed,
    SnapshotsListed,
};
use snapshot::{Catalog, Manifest};
use store::{Store, StoreError};

/// Why a backup operation failed; each kind has its own exit code
/// (`crate::cli::exit_code_of`).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("another backup is running (the PostgreSQL advisory lock is held); nothing was done")]
    Locked,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Damaged(String),
    #[error(
        "the target database {database} is not empty ({relations} tables, views or sequences); nothing was restored. Pass --force to drop and recreate the snapshot's objects in it"
    )]
    TargetNotEmpty { database: String, relations: i64 },
    #[error("{0}")]
    Tools(String),
    #[error("interrupted by {signal}; the partial snapshot was removed and nothing was published")]
    Interrupted { signal: &'static str },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What `prune` did.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Complete snapshots kept.
    pub kept: usize,
    /// Complete snapshots deleted.
    pub deleted: Vec<String>,
    /// Incomplete objects deleted (older than the grace period).
    pub incomplete_deleted: Vec<String>,
    /// Snapshots with an unreadable manifest, left alone for a human.
    pub damaged: Vec<String>,
}

/// Takes a snapshot, then applies retention: what `backup run` and each
/// scheduled backup do. A failure counts in `todo_backup_failures_total`; a
/// lost race for the lock does not (the other backup is the one that counts).
/// When `interrupted` resolves (with the signal's name) while the database
/// is being dumped, the upload is aborted (temporary file removed, multipart
/// upload aborted) and [`BackupError::Interrupted`] returned.
pub async fn run_backup(
    settings: &Settings,
    store: &Store,
    metrics: &BackupMetrics,
    interrupted: impl Future<Output = &'static str>,
) -> Result<Manifest, BackupError> {
    match snapshot::take_snapshot(settings, store, interrupted).await {
        Ok(manifest) => {
            // Retention only after a success: a failing backup never deletes.
            apply_retention(store, &settings.backup.retention).await;
            if let Err(error) = refresh_metrics(store, metrics).await {
                tracing::warn!(error = %error, "could not refresh the backup metrics from the store");
            }
            Ok(manifest)
        }
        Err(failed) => {
            if !matches!(failed.error, BackupError::Locked) {
                BackupFailed {
                    stage: failed.stage,
                    error: &failed.error,
                }
                .emit(metrics);
            }
            Err(failed.error)
        }
    }
}

/// Retention after a published snapshot. Its failure is not a failed backup
/// (a retried backup Job would publish one more each time): it is logged,
/// and the next backup's retention catches up.
async fn apply_retention(store: &Store, retention: &RetentionSettings) {
    match prune(store, retention).await {
        Ok(report) if !report.deleted.is_empty() => RetentionApplied {
            deleted: &report.deleted,
        }
        .emit(),
        Ok(_) => {}
        Err(error) => RetentionFailed { error: &error }.emit(),
    }
}

/// Applies the retention policy, and removes incomplete objects older than the grace period.
pub async fn prune(
    store: &Store,
    retention: &RetentionSettings,
) -> Result<PruneReport, BackupError> {
    let catalog = snapshot::catalog(store).await?;
    let now = Utc::now();
    let finished: Vec<(String, chrono::DateTime<Utc>)> = catalog
        .complete
        .iter()
        .map(|manifest| (manifest.id.clone(), manifest.finished_at))
        .collect();
    let plan = retention::plan(&finished, retention);
    let mut report = PruneReport {
        kept: plan.keep.len(),
        damaged: catalog.damaged.iter().map(|(id, _)| id.clone()).collect(),
        ..PruneReport::default()
    };
    for id in plan.delete {
        let manifest = catalog.find(&id)?;
        // Manifest first: if the data delete then fails, what is left is an
        // incomplete snapshot (never restored, cleaned later), not a
        // manifest pointing at nothing.
        store
            .delete(&format!("{}/{}.manifest.json", snapshot::SNAPSHOTS, id))
            .await
            .with_context(|| format!("Failed to delete the manifest of snapshot {id}"))?;
        store
            .delete(&manifest.data_name())
            .await
            .with_context(|| format!("Failed to delete the data of snapshot {id}"))?;
        report.deleted.push(id);
    }
    let grace = chrono::Duration::seconds(retention.incomplete_grace_seconds as i64);
    for object in catalog.incomplete {
        if now - object.modified >= grace {
            store.delete(&object.name).await.with_context(|| {
                format!("Failed to delete the incomplete object {}", object.name)
            })?;
            report.incomplete_deleted.push(object.name);
        }
    }
    for (id, reason) in &catalog.damaged {
        tracing::warn!(snapshot = %id, reason = %reason, "damaged snapshot left in place for inspection");
    }
    Ok(report)
}

/// Sets the snapshot gauges from what the store holds.
pub async fn refresh_metrics(
    store: &Store,
    metrics: &BackupMetrics,
) -> Result<Catalog, BackupError> {
    let catalog = snapshot::catalog(store).await?;
    SnapshotsListed { catalog: &catalog }.emit(metrics);
    match store.get(restore::DRILL_RECORD).await {
        Ok(bytes) => match serde_json::from_slice::<restore::DrillRecord>(&bytes) {
            Ok(record) => DrillRecordRead {
                succeeded_at: Some(record.succeeded_at),
            }
            .emit(metrics),
            Err(error) => DrillRecordUnreadable { error: &error }.emit(),
        },
        Err(StoreError::NotFound { .. }) => DrillRecordRead { succeeded_at: None }.emit(metrics),
        Err(error) => {
            return Err(anyhow::Error::new(error)
                .context("Failed to read the restore drill record")
                .into());
        }
    }
    Ok(catalog)
}

/// The backup component of `run`. Its store is set up when it runs, so a
/// store that cannot be set up (a credential file missing from the mounted
/// Secret) fails this component, which the supervisor reports and retries,
/// and not the whole sidecar with log shipping and metrics.
pub struct BackupComponent {
    settings: Settings,
    metrics: BackupMetrics,
    schedule: Option<croner::Cron>,
}

impl BackupComponent {
    /// Builds the component; fails on a schedule that cannot work.
    pub fn new(settings: Settings, metrics: BackupMetrics) -> anyhow::Result<BackupComponent> {
        let schedule = settings
            .backup
            .schedule
            .as_deref()
            .map(crate::configuration::parse_schedule)
            .transpose()
            .context("Failed to parse backup.schedule")?;
        Ok(BackupComponent {
            settings,
            metrics,
            schedule,
        })
    }

    /// When the next scheduled backup is due, from now; `None` without a schedule.
    fn next_scheduled_backup(&self) -> anyhow::Result<Option<tokio::time::Instant>> {
        let Some(schedule) = &self.schedule else {
            return Ok(None);
        };
        let now = Utc::now();
        let at = schedule
            .find_next_occurrence(&now, false)
            .context("backup.schedule has no next occurrence")?;
        Ok(Some(
            tokio::time::Instant::now() + (at - now).to_std().unwrap_or_default(),
        ))
    }

    async fn refresh(
        &self,
        store: &Store,
        health: &HealthHandle,
        last_backup_error: &Option<String>,
    ) {
        match refresh_metrics(store, &self.metrics).await {
            Ok(catalog) => health.set(match last_backup_error {
                Some(message) => ComponentHealth::Degraded {
                    message: message.clone(),
                },
                None if !catalog.damaged.is_empty() => ComponentHealth::Degraded {
                    message: format!(
                        "{} snapshot(s) with an unreadable manifest",
                        catalog.damaged.len()
                    ),
                },
                None => ComponentHealth::Ok,
            }),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "could not read the backup store"
                );
                health.set(ComponentHealth::Degraded {
                    message: format!("cannot read the store: {error:#}"),
                });
            }
        }
    }
}

impl Component for BackupComponent {
    fn name(&self) -> &'static str {
        "backup"
    }

    fn run(
        self: Arc<Self>,
        health: HealthHandle,
        mut shutdown: Shutdown,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let store = Store::from_settings(&self.settings.backup.store)
                .context("Failed to set up the backup store")?;
            let refresh_every = Duration::from_secs(self.settings.backup.refresh_interval_seconds);
            let mut last_backup_error = None;
            self.refresh(&store, &health, &last_backup_error).await;
            let mut next_refresh = tokio::time::Instant::now() + refresh_every;
            // Planned once and kept until that backup has run: planning again
            // on every wake-up could step past an occurrence when a metrics
            // refresh ends just after it.
            let mut next_backup = self.next_scheduled_backup()?;
            loop {
                let wake = next_backup.map_or(next_refresh, |at| at.min(next_refresh));
                tokio::select! {
                    _ = shutdown.requested() => return Ok(()),
                    _ = tokio::time::sleep_until(wake) => {}
                }
                if next_backup.is_some_and(|at| at <= tokio::time::Instant::now()) {
                    // A running backup is not interrupted by the select above:
                    // shutdown waits for it (bounded by admin.shutdown_timeout_seconds).
                    let never = std::future::pending();
                    match run_backup(&self.settings, &store, &self.metrics, never).await {
                        Ok(_) => last_backup_error = None,
                        Err(BackupError::Locked) => {
                            tracing::info!("skipped a scheduled backup: another backup is running");
                        }
                        Err(error) => {
                            last_backup_error = Some(format!("last backup failed: {error:#}"))
                        }
                    }
                    self.refresh(&store, &health, &last_backup_error).await;
                    next_refresh = tokio::time::Instant::now() + refresh_every;
                    next_backup = self.next_scheduled_backup()?;
                } else if tokio::time::Instant::now() >= next_refresh {
                    self.refresh(&store, &health, &last_backup_error).await;
                    next_refresh = tokio::time::Instant::now() + refresh_every;
                }
            }
        })
    }
}
