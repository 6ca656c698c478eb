//! Taking a snapshot, and reading what the store holds.
//!
//! The pipeline: `pg_dump -Fc -Z0 --no-owner --snapshot=…` → zstd → SHA-256
//! → store, in chunks through a bounded channel, so memory stays bounded
//! and no temporary copy of the dump exists. The manifest is written last:
//! a snapshot without one is incomplete, never listed and never restored.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::BackupError;
use super::events::{BackupPublished, BackupStage};
use super::postgres::{self, PgTool, Session};
use super::store::{ObjectInfo, Store, StoreError, TEMP_PREFIX, Upload};
use crate::configuration::Settings;

/// Directory of the snapshots in the store.
pub const SNAPSHOTS: &str = "snapshots";
/// Suffix of a snapshot's data object.
const DATA_SUFFIX: &str = ".dump.zst";
/// Suffix of a snapshot's manifest.
const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Chunks handed from the compressor to the store; with the channel depth
/// this bounds the pipeline's memory (S3 adds its parts in flight).
const CHUNK_BYTES: usize = 1024 * 1024;
const CHANNEL_DEPTH: usize = 4;

/// What a snapshot is, written next to its data once the data is complete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Layout version of this document.
    pub format_version: u32,
    /// `20261126T120000Z-1a2b`: sorts by start time.
    pub id: String,
    /// The database dumped.
    pub database: String,
    /// The server's version, `15.14`.
    pub server_version: String,
    /// The pg_dump that wrote the archive, `15.14`.
    pub pg_dump_version: String,
    /// When the backup started and finished.
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Size of the stored (compressed) object.
    pub compressed_bytes: u64,
    /// Size of the pg_dump archive before compression.
    pub raw_bytes: u64,
    /// SHA-256 of the stored object, hex.
    pub sha256: String,
    /// `pg_dump custom archive, zstd`.
    pub format: String,
    /// Row count of every table, taken in the dump's own snapshot.
    pub tables: BTreeMap<String, i64>,
}

impl Manifest {
    /// The data object's name in the store.
    pub fn data_name(&self) -> String {
        data_name(&self.id)
    }

    /// How long the backup took.
    pub fn duration_seconds(&self) -> f64 {
        (self.finished_at - self.started_at).num_milliseconds() as f64 / 1000.0
    }
}

fn data_name(id: &str) -> String {
    format!("{SNAPSHOTS}/{id}{DATA_SUFFIX}")
}

fn manifest_name(id: &str) -> String {
    format!("{SNAPSHOTS}/{id}{MANIFEST_SUFFIX}")
}

/// A new snapshot id for a backup started at `at`.
pub fn new_id(at: DateTime<Utc>) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", at.format("%Y%m%dT%H%M%SZ"), &random[..6])
}

/// What the store holds.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Complete snapshots, newest first.
    pub complete: Vec<Manifest>,
    /// Snapshots whose manifest exists but cannot be read (id, why).
    pub damaged: Vec<(String, String)>,
    /// Objects of no complete snapshot: data without a manifest, temporary files.
    pub incomplete: Vec<ObjectInfo>,
}

impl Catalog {
    /// Finds a complete snapshot by id; says why when it is not complete.
    pub fn find(&self, id: &str) -> Result<&Manifest, BackupError> {
        if let Some(manifest) = self.complete.iter().find(|manifest| manifest.id == id) {
            return Ok(manifest);
        }
        if let Some((_, reason)) = self.damaged.iter().find(|(damaged, _)| damaged == id) {
            return Err(BackupError::Damaged(format!("snapshot {id}: {reason}")));
        }
        if self
            .incomplete
            .iter()
            .any(|object| object.name == data_name(id))
        {
            return Err(BackupError::NotFound(format!(
                "snapshot {id} is incomplete (no manifest): it was never finished and cannot be restored"
            )));
        }
        Err(BackupError::NotFound(format!(
            "no snapshot {id} in the store"
        )))
    }

    /// The newest complete snapshot.
    pub fn latest(&self) -> Result<&Manifest, BackupError> {
        self.complete.first().ok_or_else(|| {
            BackupError::NotFound("the store holds no complete snapshot".to_string())
        })
    }
}

/// Reads the store: every manifest, and what has none.
pub async fn catalog(store: &Store) -> Result<Catalog, BackupError> {
    let objects = store
        .list(SNAPSHOTS)
        .await
        .with_context(|| format!("Failed to list the snapshots in {}", store.describe()))?;
    let mut catalog = Catalog::default();
    let mut manifest_ids = Vec::new();
    for object in &objects {
        let file = object
            .name
            .strip_prefix(&format!("{SNAPSHOTS}/"))
            .unwrap_or(&object.name);
        if let Some(id) = file.strip_suffix(MANIFEST_SUFFIX)
            && !file.starts_with(TEMP_PREFIX)
        {
            manifest_ids.push(id.to_string());
        }
    }
    for id in &manifest_ids {
        let bytes = match store.get(&manifest_name(id)).await {
            Ok(bytes) => bytes,
            // Deleted between the listing and now (a concurrent prune).
            Err(StoreError::NotFound { .. }) => continue,
            Err(error) => {
                return Err(anyhow::Error::new(error)
                    .context(format!("Failed to read the manifest of snapshot {id}"))
                    .into());
            }
        };
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(manifest) if manifest.id == *id => catalog.complete.push(manifest),
            Ok(manifest) => catalog.damaged.push((
                id.clone(),
                format!("its manifest names another snapshot ({})", manifest.id),
            )),
            Err(error) => catalog
                .damaged
                .push((id.clone(), format!("its manifest does not parse ({error})"))),
        }
    }
    for object in objects {
        let file = object
            .name
            .strip_prefix(&format!("{SNAPSHOTS}/"))
            .unwrap_or(&object.name);
        let owner = file
            .strip_suffix(DATA_SUFFIX)
            .or_else(|| file.strip_suffix(MANIFEST_SUFFIX));
        let has_manifest = !file.starts_with(TEMP_PREFIX)
            && owner.is_some_and(|id| manifest_ids.iter().any(|known| known == id));
        if !has_manifest {
            catalog.incomplete.push(object);
        }
    }
    catalog.complete.sort_by(|a, b| {
        b.finished_at
            .cmp(&a.finished_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    Ok(catalog)
}

/// A snapshot that failed, and the step it failed at.
#[derive(Debug)]
pub struct FailedAt {
    /// The step.
    pub stage: BackupStage,
    /// Why.
    pub error: BackupError,
}

/// Tags an error with the step of the backup it happened at.
trait AtStage<T> {
    fn at(self, stage: BackupStage) -> Result<T, FailedAt>;
}

impl<T, E: Into<BackupError>> AtStage<T> for Result<T, E> {
    fn at(self, stage: BackupStage) -> Result<T, FailedAt> {
        self.map_err(|error| FailedAt {
            stage,
            error: error.into(),
        })
    }
}

/// Takes one snapshot and publishes it; on any failure nothing is published,
/// and nothing is left behind. `interrupted` resolving while the database is
/// dumped aborts the upload (see [`super::run_backup`]).
pub async fn take_snapshot(
    settings: &Settings,
    store: &Store,
    interrupted: impl Future<Output = &'static str>,
) -> Result<Manifest, FailedAt> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let database = &settings.database;
    let mut session = Session::connect(database.url.clone(), database.connect_timeout())
        .await
        .context("Failed to connect to the database")
        .at(BackupStage::Connect)?;
    if !session.try_backup_lock().await.at(BackupStage::Lock)? {
        return Err(BackupError::Locked).at(BackupStage::Lock);
    }
    let server = session.server_version().await.at(BackupStage::Connect)?;
    let pg_dump = postgres::find_tool(
        "pg_dump",
        settings.backup.pg_dump_path.as_deref(),
        server.major,
        &format!("the server (PostgreSQL {})", server.text),
    )
    .at(BackupStage::Tools)?;
    let id = new_id(started_at);
    tracing::info!(snapshot = %id, store = %store.describe(), pg_dump = %pg_dump.path.display(), "backup started");
    // The store first: an unwritable store or a missing bucket fails before
    // the database does any work.
    let mut upload = store
        .begin_upload(&data_name(&id))
        .await
        .with_context(|| {
            format!(
                "Failed to start writing snapshot {id} to {}",
                store.describe()
            )
        })
        .at(BackupStage::Store)?;
    let streamed = tokio::select! {
        streamed = stream_dump(settings, &mut session, &pg_dump, &mut upload) => streamed,
        // Dropping the dump closes its channel, which kills pg_dump.
        signal = interrupted => {
            tracing::warn!(snapshot = %id, signal, "backup interrupted; removing the partial snapshot");
            Err(BackupError::Interrupted { signal })
        }
    };
    let (tables, outcome) = match streamed {
        Ok(streamed) => streamed,
        Err(error) => {
            upload.abort().await;
            return Err(match error {
                BackupError::Other(error) => error
                    .context(format!(
                        "Failed to take snapshot {id} into {}",
                        store.describe()
                    ))
                    .into(),
                error => error,
            })
            .at(BackupStage::Dump);
        }
    };
    upload
        .finish()
        .await
        .with_context(|| format!("Failed to write snapshot {id} to {}", store.describe()))
        .at(BackupStage::Upload)?;
    // The data is complete: failing to close the read-only transaction
    // changes nothing about it.
    if let Err(error) = session.end_snapshot().await {
        tracing::warn!(
            error = format!("{error:#}"),
            "could not close the snapshot transaction"
        );
    }

    let manifest = Manifest {
        format_version: 1,
        id: id.clone(),
        database: postgres::database_name(&database.url),
        server_version: server.text,
        pg_dump_version: pg_dump.version,
        started_at,
        finished_at: started_at + chrono::Duration::from_std(clock.elapsed()).unwrap_or_default(),
        compressed_bytes: outcome.compressed_bytes,
        raw_bytes: outcome.raw_bytes,
        sha256: outcome.sha256,
        format: "pg_dump custom archive, zstd".to_string(),
        tables,
    };
    let document = serde_json::to_vec_pretty(&manifest)
        .context("Failed to encode the manifest")
        .at(BackupStage::Manifest)?;
    store
        .put(&manifest_name(&id), Bytes::from(document))
        .await
        .with_context(|| {
            format!(
                "Failed to write the manifest of snapshot {id} to {}",
                store.describe()
            )
        })
        .at(BackupStage::Manifest)?;
    // The session (and with it the advisory lock) closes when dropped.
    drop(session);
    BackupPublished {
        manifest: &manifest,
    }
    .emit();
    Ok(manifest)
}

/// Opens the snapshot, counts rows in it, and streams pg_dump → zstd →
/// SHA-256 into `upload`; returns the row counts and what was measured.
async fn stream_dump(
    settings: &Settings,
    session: &mut Session,
    pg_dump: &PgTool,
    upload: &mut Upload,
) -> Result<(BTreeMap<String, i64>, DumpOutcome), BackupError> {
    let (exported, tables) = session
        .begin_snapshot(Duration::from_secs(settings.backup.lock_wait_seconds))
        .await?;
    let command = pg_dump_command(settings, pg_dump, &exported)?;
    let level = settings.backup.compression_level;
    let (sender, mut receiver) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let process = DumpProcess::default();
    // Dropped with this future (a backup interrupted): pg_dump is killed
    // even while it writes nothing (waiting for a lock).
    let _kill_on_drop = process.clone();
    let producer =
        tokio::task::spawn_blocking(move || dump_and_compress(command, level, sender, &process));
    let mut upload_error = None;
    while let Some(chunk) = receiver.recv().await {
        if let Err(error) = upload.write(chunk).await {
            upload_error = Some(error);
            break;
        }
    }
    // Closing the channel stops the producer (it kills pg_dump) if the
    // store failed first.
    drop(receiver);
    let produced = producer.await.context("The compression thread panicked");
    if let Some(error) = upload_error {
        return Err(anyhow::Error::new(error).into());
    }
    let outcome = produced
        .and_then(|outcome| outcome)
        .context("Failed to dump the database")?;
    Ok((tables, outcome))
}

fn pg_dump_command(
    settings: &Settings,
    pg_dump: &PgTool,
    exported_snapshot: &str,
) -> Result<Command, BackupError> {
    let url = postgres::with_connection_options(
        &settings.database.url,
        settings.database.connect_timeout(),
    );
    let child = postgres::child_connection(&url)?;
    let mut command = Command::new(&pg_dump.path);
    command
        .arg("--format=custom")
        // Compression is ours (zstd, faster and smaller than pg_dump's gzip).
        .arg("--compress=0")
        .arg("--no-owner")
        .arg(format!("--snapshot={exported_snapshot}"))
        .arg(format!(
            "--lock-wait-timeout={}s",
            settings.backup.lock_wait_seconds
        ))
        .arg(format!("--dbname={}", child.url))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(password) = child.password {
        use secrecy::ExposeSecret;
        command.env("PGPASSWORD", password.expose_secret());
    }
    Ok(command)
}

/// What the producer measured.
struct DumpOutcome {
    raw_bytes: u64,
    compressed_bytes: u64,
    sha256: String,
}

/// Hashes and forwards the compressed stream in chunks.
struct ChunkSender {
    sender: mpsc::Sender<Bytes>,
    buffer: Vec<u8>,
    hasher: Sha256,
    written: u64,
}

impl ChunkSender {
    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        self.sender.blocking_send(Bytes::from(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the store stopped accepting data",
            )
        })
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(data);
        self.written += data.len() as u64;
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The running pg_dump, shared between the thread that reads it and the task
/// that may abandon it: a clone dropped kills it if it still runs. Both are
/// dropped only after the wait in the normal course, and once waited for,
/// `Child::kill` signals nothing, so no reused pid is ever hit.
#[derive(Clone, Default)]
struct DumpProcess(std::sync::Arc<std::sync::Mutex<Option<std::process::Child>>>);

impl Drop for DumpProcess {
    fn drop(&mut self) {
        if let Some(child) = self.0.lock().expect("never poisoned").as_mut() {
            let _ = child.kill();
        }
    }
}

/// Runs pg_dump and compresses its output into `sender` (on a blocking thread).
fn dump_and_compress(
    mut command: Command,
    level: i32,
    sender: mpsc::Sender<Bytes>,
    process: &DumpProcess,
) -> anyhow::Result<DumpOutcome> {
    let mut child = command.spawn().context("Failed to start pg_dump")?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || read_limited(stderr));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    *process.0.lock().expect("never poisoned") = Some(child);
    let sink = ChunkSender {
        sender,
        buffer: Vec::with_capacity(CHUNK_BYTES),
        hasher: Sha256::new(),
        written: 0,
    };
    let mut raw_bytes = 0u64;
    let piped = (|| -> std::io::Result<ChunkSender> {
        let mut encoder = zstd::stream::write::Encoder::new(sink, level)?;
        // A frame checksum lets the decoder reject corruption on its own,
        // beyond the SHA-256 of the whole object.
        encoder.include_checksum(true)?;
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let read = match stdout.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            raw_bytes += read as u64;
            encoder.write_all(&buffer[..read])?;
        }
        let mut sink = encoder.finish()?;
        sink.send_buffer()?;
        Ok(sink)
    })();
    drop(stdout);
    let status = {
        let mut child = process.0.lock().expect("never poisoned");
        let child = child.as_mut().expect("stored above");
        if piped.is_err() {
            // The store failed or the pipe broke: pg_dump must not run on alone.
            let _ = child.kill();
        }
        child.wait().context("Failed to wait for pg_dump")?
    };
    let messages = stderr_reader.join().unwrap_or_default();
    let sink = piped.context("Failed to compress the dump")?;
    if !status.success() {
        anyhow::bail!("pg_dump failed ({status}): {}", messages.trim());
    }
    Ok(DumpOutcome {
        raw_bytes,
        compressed_bytes: sink.written,
        sha256: hex::encode(sink.hasher.finalize()),
    })
}

/// Reads a child's stderr, keeping at most 16 KiB of it for the message.
pub fn read_limited(mut stream: impl Read) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(read) = stream.read(&mut buffer) {
        if read == 0 {
            break;
        }
        if kept.len() < 16 * 1024 {
            kept.extend_from_slice(&buffer[..read]);
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Re-reads a snapshot's object and checks its size and SHA-256.
pub async fn verify_checksum(store: &Store, manifest: &Manifest) -> Result<(), BackupError> {
    let mut stream =
        store
            .get_stream(&manifest.data_name())
            .await
            .map_err(|error| match error {
                StoreError::NotFound { .. } => BackupError::Damaged(format!(
                    "snapshot {}: its data object is missing",
                    manifest.id
                )),
                error => anyhow::Error::new(error)
                    .context(format!("Failed to read snapshot {}", manifest.id))
                    .into(),
            })?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("Failed to read snapshot {}", manifest.id))?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let sha256 = hex::encode(hasher.finalize());
    if size != manifest.compressed_bytes || sha256 != manifest.sha256 {
        return Err(BackupError::Damaged(format!(
            "snapshot {} is corrupted: expected {} bytes with SHA-256 {}, found {size} bytes with SHA-256 {sha256}",
            manifest.id, manifest.compressed_bytes, manifest.sha256
        )));
    }
    Ok(())
}
