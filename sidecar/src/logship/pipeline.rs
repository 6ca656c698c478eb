//! The shipping loop: batch → send to every sink → acknowledge → checkpoint.
//!
//! One batch is in flight at a time and nothing more is read while it is
//! being retried: when a sink is down the log files are the buffer, memory
//! stays bounded by one batch, and `todo_logship_lag_bytes` grows. The
//! checkpoint moves only after every sink accepted (or dead-lettered) the
//! batch, so a crash loses nothing and repeats at most that batch.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::checkpoint::{Checkpoint, LoadError};
use super::config::LogshipSettings;
use super::event::Event;
use super::sinks::{DeadLetter, DeliveryContext, Sink};
use super::source::{Line, Position, Tailer, TailerOptions};
use crate::component::{ComponentHealth, HealthHandle, Shutdown};
use crate::metrics::LogshipMetrics;

/// How often the lag gauge is refreshed while a batch is being retried.
const LAG_REFRESH: Duration = Duration::from_secs(1);

/// Runs the pipeline until shutdown. I/O errors on the log files end it
/// with an error (the supervisor restarts it from the checkpoint).
pub async fn run(
    settings: LogshipSettings,
    sinks: &[Sink],
    metrics: LogshipMetrics,
    health: HealthHandle,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let checkpoint = load_checkpoint(&settings, &metrics);
    let (mut tailer, resumed) = Tailer::open(
        TailerOptions {
            paths: settings.paths.clone(),
            start_at: settings.start_at,
            max_line_bytes: settings.max_line_bytes,
            fingerprint_bytes: settings.fingerprint_bytes,
            max_rotated_files: settings.max_rotated_files,
        },
        checkpoint.as_ref(),
    );
    tracing::info!(
        resumed = resumed.resumed,
        started_fresh = resumed.fresh,
        checkpointed_file_gone = resumed.file_gone,
        sinks = ?sinks.iter().map(Sink::name).collect::<Vec<_>>(),
        "log shipping started"
    );
    let mut saved = checkpoint.unwrap_or_default();
    let paths = tailer.paths();
    let dead_letter = DeadLetter::new(&settings.dead_letter);
    let batch = &settings.batch;
    health.set(ComponentHealth::Ok);
    loop {
        // Fill one batch.
        let mut lines: Vec<Line> = Vec::new();
        let mut positions: BTreeMap<usize, Position> = BTreeMap::new();
        let mut bytes = 0usize;
        let mut first_line_at: Option<Instant> = None;
        let mut stopping = false;
        loop {
            let before = lines.len();
            let consumed = tailer.read(
                batch.max_lines.saturating_sub(lines.len()),
                batch.max_bytes.saturating_sub(bytes),
                &mut lines,
                &mut positions,
            )?;
            bytes += lines[before..]
                .iter()
                .map(|line| line.bytes.len())
                .sum::<usize>();
            metrics
                .lines_read_total
                .inc_by((lines.len() - before) as u64);
            metrics
                .lag_bytes
                .set((tailer.unread_bytes() + bytes as u64) as i64);
            if !lines.is_empty() && first_line_at.is_none() {
                first_line_at = Some(Instant::now());
            }
            if lines.len() >= batch.max_lines || bytes >= batch.max_bytes {
                break;
            }
            let timeout = Duration::from_millis(batch.timeout_ms);
            let waited = first_line_at.map(|at| at.elapsed());
            if waited.is_some_and(|waited| waited >= timeout) {
                break;
            }
            if consumed {
                continue;
            }
            if lines.is_empty() && !positions.is_empty() {
                // Only empty lines or a move to a newer file: nothing to
                // send, but the position is worth keeping.
                save(
                    &mut saved,
                    &paths,
                    &positions,
                    &settings.checkpoint_path,
                    &metrics,
                    &health,
                );
                positions.clear();
            }
            let nap = match waited {
                Some(waited) => settings.poll_interval().min(timeout - waited),
                None => settings.poll_interval(),
            };
            tokio::select! {
                _ = shutdown.requested() => { stopping = true; break; }
                _ = tokio::time::sleep(nap) => {}
            }
        }
        if !lines.is_empty() {
            let events: Vec<Event> = lines.iter().map(Event::from_line).collect();
            drop(lines);
            let context = DeliveryContext {
                metrics: &metrics,
                retry: &settings.retry,
                dead_letter: &dead_letter,
                shutdown: shutdown.clone(),
            };
            let deliveries = futures_util::future::join_all(
                sinks.iter().map(|sink| sink.deliver(&events, &context)),
            );
            tokio::pin!(deliveries);
            let mut lag_refresh = tokio::time::interval(LAG_REFRESH);
            let results = loop {
                tokio::select! {
                    results = &mut deliveries => break results,
                    _ = lag_refresh.tick() => metrics
                        .lag_bytes
                        .set((tailer.unread_bytes() + bytes as u64) as i64),
                }
            };
            if results.iter().any(Result::is_err) {
                tracing::info!(
                    lines = events.len(),
                    "stopped with a batch not delivered; it is sent again after the restart"
                );
                return Ok(());
            }
        }
        if !positions.is_empty() {
            save(
                &mut saved,
                &paths,
                &positions,
                &settings.checkpoint_path,
                &metrics,
                &health,
            );
        }
        metrics.lag_bytes.set(tailer.unread_bytes() as i64);
        if stopping || shutdown.is_requested() {
            return Ok(());
        }
    }
}

/// The checkpoint at start-up; a missing or corrupt one is logged and
/// counted, and the files start at `start_at` (never a crash loop).
fn load_checkpoint(settings: &LogshipSettings, metrics: &LogshipMetrics) -> Option<Checkpoint> {
    match Checkpoint::load(&settings.checkpoint_path) {
        Ok(checkpoint) => Some(checkpoint),
        Err(error) => {
            metrics
                .checkpoint_errors_total
                .with_label_values(&[error.reason()])
                .inc();
            match &error {
                LoadError::Missing(_) => tracing::info!(
                    error = %error,
                    start_at = ?settings.start_at,
                    "no log shipping checkpoint; files start at start_at"
                ),
                LoadError::Corrupt { .. } => tracing::warn!(
                    error = %error,
                    start_at = ?settings.start_at,
                    "the log shipping checkpoint is unusable; files start at start_at"
                ),
            }
            None
        }
    }
}

fn save(
    saved: &mut Checkpoint,
    paths: &[PathBuf],
    positions: &BTreeMap<usize, Position>,
    checkpoint_path: &std::path::Path,
    metrics: &LogshipMetrics,
    health: &HealthHandle,
) {
    for (&index, &position) in positions {
        saved.set(&paths[index], position);
    }
    match saved.save(checkpoint_path) {
        Ok(()) => health.set(ComponentHealth::Ok),
        Err(error) => {
            // Shipping goes on; a restart would repeat more lines.
            let message = format!("{error:#}");
            tracing::error!(error = %message, "cannot write the log shipping checkpoint");
            metrics
                .checkpoint_errors_total
                .with_label_values(&["write"])
                .inc();
            health.set(ComponentHealth::Degraded { message });
        }
    }
}
