//! Restoring a snapshot into a database, and the restore drill.
//!
//! The object is checked against its manifest's SHA-256 first, then streamed
//! store → SHA-256 → zstd → `pg_restore --single-transaction`, so a failure
//! part-way leaves the target as it was; finally the row counts of the
//! manifest's tables are compared with the target's.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::BackupError;
use super::events::RestoreDrillSucceeded;
use super::postgres::{self, PgTool, Session, quote_identifier};
use super::snapshot::{self, Manifest, read_limited};
use super::store::Store;
use crate::configuration::Settings;

/// Where the last successful restore drill is recorded in the store.
pub const DRILL_RECORD: &str = "drills/last-success.json";

/// The record of a successful restore drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillRecord {
    /// The snapshot restored.
    pub snapshot: String,
    /// When the drill succeeded.
    pub succeeded_at: chrono::DateTime<chrono::Utc>,
}

/// What a restore did.
#[derive(Debug)]
pub struct RestoreReport {
    /// The target database's name.
    pub database: String,
    /// Whether the database was created by the restore.
    pub created: bool,
    /// Tables whose row counts were compared.
    pub tables_checked: usize,
}

/// Restores `manifest`'s snapshot into the database at `target`, creating the
/// database when it does not exist. Refuses a non-empty target unless `force`
/// (then objects of the snapshot are dropped and recreated).
pub async fn restore(
    settings: &Settings,
    store: &Store,
    manifest: &Manifest,
    target: &SecretString,
    force: bool,
) -> Result<RestoreReport, BackupError> {
    let timeout = settings.database.connect_timeout();
    let database = postgres::database_name(target);
    let (mut session, created) = match Session::connect(target.clone(), timeout).await {
        Ok(session) => (session, false),
        Err(error) if error.to_string().contains("does not exist") => {
            let mut maintenance = Session::connect(
                postgres::with_database(target, "postgres"),
                timeout,
            )
            .await
            .context(
                "Failed to connect to the target server's `postgres` database to create the target",
            )?;
            maintenance
                .execute(format!("CREATE DATABASE {}", quote_identifier(&database)))
                .await
                .with_context(|| format!("Failed to create the target database {database}"))?;
            let session = Session::connect(target.clone(), timeout)
                .await
                .context("Failed to connect to the newly created target database")?;
            (session, true)
        }
        Err(error) => {
            return Err(error
                .context("Failed to connect to the target database")
                .into());
        }
    };
    let relations = session.user_relations().await?;
    if relations > 0 && !force {
        return Err(BackupError::TargetNotEmpty {
            database,
            relations,
        });
    }
    let required_major = postgres::parse_tool_version(&manifest.pg_dump_version)
        .map(|(_, major)| major)
        .unwrap_or(0);
    let pg_restore = postgres::find_tool(
        "pg_restore",
        settings.backup.pg_restore_path.as_deref(),
        required_major,
        &format!("the pg_dump that wrote snapshot {}", manifest.id),
    )?;
    snapshot::verify_checksum(store, manifest).await?;
    tracing::info!(snapshot = %manifest.id, database = %database, force, "restore started");
    // The same libpq options (connect timeout, keepalives) as every other
    // connection of the sidecar.
    let target_with_options = postgres::with_connection_options(target, timeout);
    run_pg_restore(store, manifest, &target_with_options, &pg_restore, force).await?;
    let counts = session.count_rows().await?;
    let tables_checked = compare_counts(&manifest.tables, &counts).map_err(|difference| {
        BackupError::Damaged(format!(
            "snapshot {} was restored into {database} but row counts differ from its manifest: {difference}",
            manifest.id
        ))
    })?;
    tracing::info!(snapshot = %manifest.id, database = %database, tables_checked, "restore finished");
    Ok(RestoreReport {
        database,
        created,
        tables_checked,
    })
}

/// Compares the manifest's counts with the restored ones; returns how many
/// tables were checked, or a description of the differences.
pub fn compare_counts(
    expected: &BTreeMap<String, i64>,
    actual: &BTreeMap<String, i64>,
) -> Result<usize, String> {
    let differences: Vec<String> = expected
        .iter()
        .filter(|(table, count)| actual.get(*table) != Some(count))
        .map(|(table, count)| match actual.get(table) {
            Some(found) => format!("{table}: {count} in the snapshot, {found} restored"),
            None => format!("{table}: missing after the restore"),
        })
        .collect();
    if differences.is_empty() {
        Ok(expected.len())
    } else {
        Err(differences.join("; "))
    }
}

async fn run_pg_restore(
    store: &Store,
    manifest: &Manifest,
    target: &SecretString,
    pg_restore: &PgTool,
    force: bool,
) -> Result<(), BackupError> {
    let child_connection = postgres::child_connection(target)?;
    let mut command = Command::new(&pg_restore.path);
    command
        .arg("--no-owner")
        .arg("--exit-on-error")
        // All or nothing: a failure part-way leaves the target as it was.
        .arg("--single-transaction")
        .arg(format!("--dbname={}", child_connection.url))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if force {
        command.arg("--clean").arg("--if-exists");
    }
    if let Some(password) = child_connection.password {
        command.env("PGPASSWORD", password.expose_secret());
    }
    let mut stream = store
        .get_stream(&manifest.data_name())
        .await
        .with_context(|| format!("Failed to read snapshot {}", manifest.id))?;
    let (sender, receiver) = mpsc::channel::<Bytes>(4);
    let expected_sha256 = manifest.sha256.clone();
    let id = manifest.id.clone();
    let consumer = tokio::task::spawn_blocking(move || {
        decompress_into(command, receiver, &expected_sha256, &id)
    });
    let mut read_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                if sender.send(chunk).await.is_err() {
                    break; // pg_restore stopped; its error is the one to report
                }
            }
            Err(error) => {
                read_error = Some(error);
                break;
            }
        }
    }
    if let Some(error) = read_error {
        // The consumer sees a short stream whose hash cannot match, and
        // kills pg_restore before it commits.
        drop(sender);
        let _ = consumer.await;
        return Err(anyhow::Error::new(error)
            .context(format!(
                "Failed to read snapshot {}; the target is unchanged",
                manifest.id
            ))
            .into());
    }
    drop(sender);
    consumer.await.context("The restore thread panicked")?
}

/// Feeds the stream, checked and decompressed, into pg_restore (blocking thread).
fn decompress_into(
    mut command: Command,
    mut receiver: mpsc::Receiver<Bytes>,
    expected_sha256: &str,
    id: &str,
) -> Result<(), BackupError> {
    let mut child = command.spawn().context("Failed to start pg_restore")?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || read_limited(stderr));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut hasher = Sha256::new();
    // pg_restore's stdin stays open until the hash is checked: closing it
    // lets pg_restore commit.
    let fed = (|| -> std::io::Result<()> {
        let mut decoder = zstd::stream::write::Decoder::new(&mut stdin)?;
        while let Some(chunk) = receiver.blocking_recv() {
            hasher.update(&chunk);
            decoder.write_all(&chunk)?;
        }
        decoder.flush()?;
        Ok(())
    })();
    let sha256 = hex::encode(hasher.finalize());
    // The object was checked before; a different hash now means it changed
    // under us or the read was cut short: kill pg_restore before it commits.
    let intact = sha256 == expected_sha256;
    if fed.is_err() || !intact {
        let _ = child.kill();
    }
    drop(stdin);
    let status = child.wait().context("Failed to wait for pg_restore")?;
    let messages = stderr_reader.join().unwrap_or_default();
    if !intact && fed.is_ok() {
        return Err(BackupError::Damaged(format!(
            "snapshot {id} changed while it was restored (SHA-256 {sha256}); the target is unchanged"
        )));
    }
    if !status.success() {
        return Err(BackupError::Other(anyhow::anyhow!(
            "pg_restore failed ({status}); the target is unchanged: {}",
            messages.trim()
        )));
    }
    fed.context("Failed to decompress the snapshot into pg_restore")?;
    Ok(())
}

/// Restores `manifest` into a scratch database on the configured server,
/// compares the row counts, drops the scratch database, and records the
/// success in the store.
pub async fn restore_drill(
    settings: &Settings,
    store: &Store,
    manifest: &Manifest,
) -> Result<RestoreReport, BackupError> {
    let scratch = format!(
        "todo_restore_drill_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let scratch_url = postgres::with_database(&settings.database.url, &scratch);
    let mut admin = Session::connect(
        settings.database.url.clone(),
        settings.database.connect_timeout(),
    )
    .await
    .context("Failed to connect to the database server for the restore drill")?;
    admin
        .execute(format!("CREATE DATABASE {}", quote_identifier(&scratch)))
        .await
        .with_context(|| format!("Failed to create the scratch database {scratch}"))?;
    let outcome = restore(settings, store, manifest, &scratch_url, false).await;
    // Dropped whatever happened: a drill must not leave databases behind.
    let dropped = admin
        .execute(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(&scratch)
        ))
        .await;
    if outcome.is_err()
        && let Err(error) = &dropped
    {
        tracing::error!(
            database = %scratch,
            error = %format!("{error:#}"),
            "the restore drill failed and its scratch database could not be dropped; drop it by hand"
        );
    }
    let report = outcome?;
    dropped.with_context(|| {
        format!("The drill succeeded but the scratch database {scratch} could not be dropped")
    })?;
    let record = DrillRecord {
        snapshot: manifest.id.clone(),
        succeeded_at: chrono::Utc::now(),
    };
    store
        .put(
            DRILL_RECORD,
            Bytes::from(
                serde_json::to_vec_pretty(&record).context("Failed to encode the drill record")?,
            ),
        )
        .await
        .context("Failed to record the restore drill's success in the store")?;
    RestoreDrillSucceeded {
        snapshot: &manifest.id,
        tables_checked: report.tables_checked,
    }
    .emit();
    Ok(report)
}
