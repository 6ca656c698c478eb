//! The shipping loop: batch → send to every sink → acknowledge → checkpoint.
//!
//! A reader thread fills batches (reading is blocking file I/O, and decoding
//! the lines is CPU work) while the previous batch is being sent; the
//! channel between them holds one batch and a batch is only read once it
//! has room, so at most two batches are in memory. Nothing more is read
//! while a batch is being retried: when a sink is down the log files are the
//! buffer, memory stays bounded, and `todo_logship_lag_bytes` grows. The checkpoint moves only after every
//! sink accepted (or dead-lettered) a batch, so a crash loses nothing and
//! repeats at most the batch in flight (the one read ahead was never sent).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::checkpoint::{Checkpoint, LoadError};
use super::config::LogshipSettings;
use super::event::Event;
use super::sinks::{DeadLetter, DeliveryContext, Sink};
use super::source::{Line, Position, Tailer, TailerOptions};
use crate::component::{ComponentHealth, HealthHandle, Shutdown};
use crate::metrics::LogshipMetrics;

/// Lines read together, and where each path stands after them.
struct Batch {
    events: Vec<Event>,
    positions: BTreeMap<usize, Position>,
    bytes: u64,
}

/// Runs the pipeline until shutdown. I/O errors on the log files end it
/// with an error (the supervisor restarts it from the checkpoint).
pub async fn run(
    settings: LogshipSettings,
    sinks: &[Sink],
    metrics: LogshipMetrics,
    health: HealthHandle,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let checkpoint = load_checkpoint(&settings, &metrics);
    let (tailer, resumed) = Tailer::open(
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
    // Bytes read and handed over but not acknowledged yet (part of the lag).
    let unacknowledged = Arc::new(AtomicU64::new(0));
    let (sender, mut batches) = mpsc::channel::<std::io::Result<Batch>>(1);
    let reader = {
        let settings = settings.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let unacknowledged = unacknowledged.clone();
        // To wait on the channel with a timeout from the blocking thread.
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            read_batches(
                tailer,
                &settings,
                &metrics,
                &shutdown,
                &unacknowledged,
                (&sender, &runtime),
            )
        })
    };
    health.set(ComponentHealth::Ok);
    let outcome = async {
        while let Some(batch) = batches.recv().await {
            let batch = batch?;
            if !batch.events.is_empty() {
                let context = DeliveryContext {
                    metrics: &metrics,
                    retry: &settings.retry,
                    dead_letter: &dead_letter,
                    shutdown: shutdown.clone(),
                    health: &health,
                };
                let results = futures_util::future::join_all(
                    sinks
                        .iter()
                        .map(|sink| sink.deliver(&batch.events, &context)),
                )
                .await;
                if results.iter().any(Result::is_err) {
                    tracing::info!(
                        lines = batch.events.len(),
                        "stopped with a batch not delivered; it is sent again after the restart"
                    );
                    return Ok(());
                }
            }
            if !batch.positions.is_empty() {
                save(
                    &mut saved,
                    &paths,
                    &batch.positions,
                    &settings.checkpoint_path,
                    &metrics,
                    &health,
                );
            }
            unacknowledged.fetch_sub(batch.bytes, Ordering::SeqCst);
        }
        Ok(())
    }
    .await;
    // The reader stops once it sees shutdown or the closed channel.
    drop(batches);
    if let Err(error) = reader.await {
        // A bug; the supervisor restarts the component from the checkpoint.
        anyhow::bail!("the log reader thread failed: {error}");
    }
    outcome
}

/// The reader thread: fills batches and hands them over until shutdown (the
/// last, partial batch is handed over too) or until the pipeline is gone.
fn read_batches(
    mut tailer: Tailer,
    settings: &LogshipSettings,
    metrics: &LogshipMetrics,
    shutdown: &Shutdown,
    unacknowledged: &AtomicU64,
    (sender, runtime): (
        &mpsc::Sender<std::io::Result<Batch>>,
        &tokio::runtime::Handle,
    ),
) {
    let limits = &settings.batch;
    let timeout = Duration::from_millis(limits.timeout_ms);
    loop {
        // A batch is only read once the channel has room for it: with the
        // batch being sent, at most two batches exist (the backpressure).
        // The lag is refreshed while waiting, as the sink may be down.
        let permit = loop {
            let reserve = tokio::time::timeout(settings.poll_interval(), sender.reserve());
            match runtime.block_on(reserve) {
                Ok(Ok(permit)) => break permit,
                Ok(Err(_closed)) => return,
                Err(_waited) => set_lag(metrics, &tailer, 0, unacknowledged),
            }
        };
        let mut lines: Vec<Line> = Vec::new();
        let mut positions: BTreeMap<usize, Position> = BTreeMap::new();
        let mut bytes = 0usize;
        let mut first_line_at: Option<Instant> = None;
        loop {
            let before = lines.len();
            let consumed = match tailer.read(
                limits.max_lines.saturating_sub(lines.len()),
                limits.max_bytes.saturating_sub(bytes),
                &mut lines,
                &mut positions,
            ) {
                Ok(consumed) => consumed,
                Err(error) => {
                    permit.send(Err(error));
                    return;
                }
            };
            bytes += lines[before..]
                .iter()
                .map(|line| line.bytes.len())
                .sum::<usize>();
            metrics
                .lines_read_total
                .inc_by((lines.len() - before) as u64);
            set_lag(metrics, &tailer, bytes, unacknowledged);
            if !lines.is_empty() && first_line_at.is_none() {
                first_line_at = Some(Instant::now());
            }
            let waited = first_line_at.map(|at| at.elapsed());
            let full = lines.len() >= limits.max_lines || bytes >= limits.max_bytes;
            let old = waited.is_some_and(|waited| waited >= timeout);
            // Only empty lines or a move to a newer file: nothing to send,
            // but the position is worth keeping.
            let position_only = !consumed && lines.is_empty() && !positions.is_empty();
            if full || old || position_only || shutdown.is_requested() {
                break;
            }
            if !consumed {
                std::thread::sleep(match waited {
                    Some(waited) => settings.poll_interval().min(timeout - waited),
                    None => settings.poll_interval(),
                });
            }
        }
        let stopping = shutdown.is_requested();
        if !lines.is_empty() || !positions.is_empty() {
            unacknowledged.fetch_add(bytes as u64, Ordering::SeqCst);
            permit.send(Ok(Batch {
                events: lines.iter().map(Event::from_line).collect(),
                positions,
                bytes: bytes as u64,
            }));
        }
        if stopping {
            return;
        }
    }
}

fn set_lag(metrics: &LogshipMetrics, tailer: &Tailer, reading: usize, unacknowledged: &AtomicU64) {
    let lag = tailer.unread_bytes() + reading as u64 + unacknowledged.load(Ordering::SeqCst);
    metrics.lag_bytes.set(lag as i64);
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
