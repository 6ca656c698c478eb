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

use super::checkpoint::Checkpoint;
use super::config::LogshipSettings;
use super::event::Event;
use super::events::{CheckpointUnusable, CheckpointWriteFailed, DrainTimedOut, Drained, LinesRead};
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

/// Runs the pipeline until shutdown, then drains (see `Drain`). I/O
/// errors on the log files end it with an error (the supervisor restarts it
/// from the checkpoint).
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
            metrics: metrics.clone(),
        },
        &|path| checkpoint.as_ref()?.position(path),
    );
    tracing::info!(
        resumed = resumed.resumed,
        started_fresh = resumed.fresh,
        checkpointed_file_gone = resumed.file_gone,
        resume_deferred = resumed.deferred,
        sinks = ?sinks.iter().map(Sink::name).collect::<Vec<_>>(),
        "log shipping started"
    );
    let mut saved = checkpoint.unwrap_or_default();
    let paths = tailer.paths();
    let dead_letter = DeadLetter::new(&settings.dead_letter);
    let drain = Drain::start(shutdown, settings.drain_timeout());
    // Bytes read and handed over but not acknowledged yet (part of the lag).
    let unacknowledged = Arc::new(AtomicU64::new(0));
    let (sender, mut batches) = mpsc::channel::<std::io::Result<Batch>>(1);
    let reader = {
        let settings = settings.clone();
        let metrics = metrics.clone();
        let drain = drain.clone();
        let unacknowledged = unacknowledged.clone();
        // To wait on the channel with a timeout from the blocking thread.
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            read_batches(
                tailer,
                &settings,
                &metrics,
                &drain,
                &unacknowledged,
                (&sender, &runtime),
            )
        })
    };
    health.set(ComponentHealth::Ok);
    let mut undelivered = Undelivered::default();
    let outcome: std::io::Result<()> = async {
        while let Some(batch) = batches.recv().await {
            let batch = batch?;
            if !batch.events.is_empty() {
                let context = DeliveryContext {
                    metrics: &metrics,
                    retry: &settings.retry,
                    dead_letter: &dead_letter,
                    shutdown: drain.shutdown.clone(),
                    give_up: drain.give_up.clone(),
                    health: &health,
                };
                let results = futures_util::future::join_all(
                    sinks
                        .iter()
                        .map(|sink| sink.deliver(&batch.events, &context)),
                )
                .await;
                if results.iter().any(Result::is_err) {
                    undelivered.lines += batch.events.len();
                    undelivered.sinks = sinks
                        .iter()
                        .zip(&results)
                        .filter(|(_, result)| result.is_err())
                        .map(|(sink, _)| sink.name())
                        .collect();
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
    // The reader stops once it sees the end of the drain or the closed
    // channel; a batch it read ahead is counted as not shipped.
    batches.close();
    while let Some(batch) = batches.recv().await {
        if let Ok(batch) = batch {
            undelivered.lines += batch.events.len();
        }
    }
    let unread = match reader.await {
        Ok(unread) => unread,
        // A bug; the supervisor restarts the component from the checkpoint.
        Err(error) => anyhow::bail!("the log reader thread failed: {error}"),
    };
    outcome?;
    let not_acknowledged = unread + unacknowledged.load(Ordering::SeqCst);
    metrics.lag_bytes.set(not_acknowledged as i64);
    if undelivered.sinks.is_empty() && not_acknowledged > 0 {
        // Stopped while reading: no sink has what was left unread.
        undelivered.sinks = sinks.iter().map(Sink::name).collect();
    }
    report_drain(&undelivered, not_acknowledged, &metrics);
    Ok(())
}

/// The shutdown of log shipping: on SIGTERM (`shutdown`) the files are read
/// to their end and the sinks retried, until everything read is shipped or
/// `give_up` fires, `logship.drain_timeout_seconds` later. In a cluster the
/// sidecar gets SIGTERM once the app has exited, and the files go with the
/// pod: what is not shipped during the drain is lost.
#[derive(Clone)]
struct Drain {
    shutdown: Shutdown,
    give_up: Shutdown,
}

impl Drain {
    /// Arms the deadline: `give_up` fires `timeout` after `shutdown`.
    fn start(shutdown: Shutdown, timeout: Duration) -> Drain {
        let (fire, give_up) = Shutdown::new();
        let mut requested = shutdown.clone();
        tokio::spawn(async move {
            let deadline = async {
                requested.requested().await;
                tokio::time::sleep(timeout).await;
            };
            tokio::select! {
                _ = deadline => {
                    let _ = fire.send(true);
                }
                // The pipeline ended (or failed) before the deadline.
                _ = fire.closed() => {}
            }
        });
        Drain { shutdown, give_up }
    }

    fn draining(&self) -> bool {
        self.shutdown.is_requested()
    }

    fn gave_up(&self) -> bool {
        self.give_up.is_requested()
    }
}

/// What the drain could not ship.
#[derive(Default)]
struct Undelivered {
    /// Lines read but not accepted by every sink.
    lines: usize,
    /// The sinks that had not accepted them.
    sinks: Vec<&'static str>,
}

/// Logs how the drain ended; what was not shipped is counted as
/// `todo_logship_failures_total{reason="drain_timeout"}` for each sink
/// that still held lines.
fn report_drain(undelivered: &Undelivered, not_acknowledged: u64, metrics: &LogshipMetrics) {
    if not_acknowledged == 0 && undelivered.lines == 0 {
        Drained.emit();
        return;
    }
    DrainTimedOut {
        lines_read_not_shipped: undelivered.lines,
        bytes_not_shipped: not_acknowledged,
        sinks: &undelivered.sinks,
    }
    .emit(metrics);
}

/// The reader thread: fills batches and hands them over; on shutdown reads
/// every file to its end (the unterminated last lines too), hands the rest
/// over and returns, or returns at the end of the drain or once the
/// pipeline is gone. Returns the bytes left unread.
fn read_batches(
    mut tailer: Tailer,
    settings: &LogshipSettings,
    metrics: &LogshipMetrics,
    drain: &Drain,
    unacknowledged: &AtomicU64,
    (sender, runtime): (
        &mpsc::Sender<std::io::Result<Batch>>,
        &tokio::runtime::Handle,
    ),
) -> u64 {
    let limits = &settings.batch;
    let timeout = Duration::from_millis(limits.timeout_ms);
    loop {
        // A batch is only read once the channel has room for it: with the
        // batch being sent, at most two batches exist (the backpressure).
        // The lag is refreshed while waiting, as the sink may be down.
        let permit = loop {
            if drain.gave_up() {
                return tailer.unread_bytes();
            }
            let reserve = tokio::time::timeout(settings.poll_interval(), sender.reserve());
            match runtime.block_on(reserve) {
                Ok(Ok(permit)) => break permit,
                Ok(Err(_closed)) => return tailer.unread_bytes(),
                Err(_waited) => set_lag(metrics, &tailer, 0, unacknowledged),
            }
        };
        let mut lines: Vec<Line> = Vec::new();
        let mut positions: BTreeMap<usize, Position> = BTreeMap::new();
        let mut bytes = 0usize;
        let mut first_line_at: Option<Instant> = None;
        let mut at_end = false;
        loop {
            let draining = drain.draining();
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
                    return tailer.unread_bytes();
                }
            };
            if draining && !consumed {
                // Every file read to its end, and its writer gone: the
                // unterminated last lines will not be finished.
                tailer.take_unterminated(&mut lines);
                at_end = true;
            }
            bytes += lines[before..]
                .iter()
                .map(|line| line.bytes.len())
                .sum::<usize>();
            LinesRead {
                lines: lines.len() - before,
            }
            .emit(metrics);
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
            // Draining, each read is handed over at once.
            if full || old || position_only || draining || drain.gave_up() {
                break;
            }
            if !consumed {
                std::thread::sleep(match waited {
                    Some(waited) => settings.poll_interval().min(timeout - waited),
                    None => settings.poll_interval(),
                });
            }
        }
        if !lines.is_empty() || !positions.is_empty() {
            unacknowledged.fetch_add(bytes as u64, Ordering::SeqCst);
            permit.send(Ok(Batch {
                events: lines.iter().map(Event::from_line).collect(),
                positions,
                bytes: bytes as u64,
            }));
        }
        if at_end || drain.gave_up() {
            return tailer.unread_bytes();
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
            CheckpointUnusable {
                error: &error,
                start_at: settings.start_at,
            }
            .emit(metrics);
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
            CheckpointWriteFailed { error: &message }.emit(metrics);
            health.set(ComponentHealth::Degraded { message });
        }
    }
}
