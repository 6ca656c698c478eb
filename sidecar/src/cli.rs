//! The command line: `run`, `check-config`, and `backup run|list|verify|restore|prune`.
//!
//! The backup commands log to stderr and print their result on stdout
//! (`list`) or stderr (the others). The process's exit codes are owned here
//! ([`exit_code`], documented in docs/backups.md): the operations return
//! typed errors, and [`exit_code_of`] maps them.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use std::io::Write;
use std::process::ExitCode;

use crate::backup::restore;
use crate::backup::snapshot::{self, Catalog, Manifest};
use crate::backup::store::Store;
use crate::backup::{self, BackupError};
use crate::configuration::Settings;
use crate::metrics::Metrics;
use crate::startup::Application;

/// Exit codes of `todo-sidecar` (documented in docs/backups.md).
pub mod exit_code {
    /// The command failed (database, store, pg_dump…); the message says why.
    pub const FAILURE: u8 = 1;
    /// The configuration is invalid (or the command line, from clap).
    pub const CONFIGURATION: u8 = 2;
    /// No such snapshot, or no complete snapshot at all.
    pub const NOT_FOUND: u8 = 3;
    /// Another backup holds the lock.
    pub const LOCKED: u8 = 4;
    /// The snapshot is corrupted, its manifest unreadable, or a restore did not match it.
    pub const DAMAGED: u8 = 5;
    /// The restore target is not empty and --force was not given.
    pub const TARGET_NOT_EMPTY: u8 = 6;
    /// pg_dump / pg_restore missing or older than required.
    pub const TOOLS: u8 = 7;
}

/// The process exit code for a failed command.
pub fn exit_code_of(error: &BackupError) -> u8 {
    match error {
        BackupError::Locked => exit_code::LOCKED,
        BackupError::NotFound(_) => exit_code::NOT_FOUND,
        BackupError::Damaged(_) => exit_code::DAMAGED,
        BackupError::TargetNotEmpty { .. } => exit_code::TARGET_NOT_EMPTY,
        BackupError::Tools(_) => exit_code::TOOLS,
        BackupError::Interrupted { .. } | BackupError::Other(_) => exit_code::FAILURE,
    }
}

/// The ops sidecar of todo-backend.
#[derive(Debug, Parser)]
#[command(name = "todo-sidecar", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar: admin listener, components, scheduled backups.
    Run,
    /// Load and validate the configuration (SIDECAR_CONFIG_FILE, SIDECAR__*
    /// and DATABASE_URL) as `run` does, without touching the database or the
    /// store, and exit: 0 when valid, 2 with the key named when not.
    CheckConfig,
    /// Backup snapshots.
    #[command(subcommand)]
    Backup(BackupCommand),
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take one snapshot now, then apply retention.
    Run,
    /// List complete snapshots, newest first.
    List {
        /// One JSON manifest per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-read a snapshot and check its SHA-256; optionally restore it into a scratch database.
    Verify {
        #[command(flatten)]
        which: Which,
        /// Also restore into a scratch database (created and dropped) and compare row counts.
        #[arg(long)]
        restore_drill: bool,
    },
    /// Restore a snapshot into a database.
    Restore {
        #[command(flatten)]
        which: Which,
        /// postgres:// URL of the target database (created if missing). A secret: prefer the variable.
        #[arg(long, env = "RESTORE_TARGET_URL", hide_env_values = true, value_parser = parse_secret)]
        target_url: SecretString,
        /// Restore into a non-empty database, dropping the snapshot's objects first.
        #[arg(long)]
        force: bool,
    },
    /// Apply the retention policy and remove stale incomplete snapshots.
    Prune,
}

/// A snapshot id, or `--latest`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// The snapshot id, as `backup list` shows it.
    id: Option<String>,
    /// The newest complete snapshot.
    #[arg(long)]
    latest: bool,
}

fn parse_secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_string()))
}

impl Command {
    /// Whether this command writes its logs to stdout (only `run` does).
    pub fn logs_to_stdout(&self) -> bool {
        matches!(self, Command::Run)
    }
}

/// Runs a command to completion and returns the process exit code.
pub fn run(command: Command, settings: Settings) -> ExitCode {
    if let Command::CheckConfig = command {
        return check_config(&settings);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("todo-sidecar: error: Failed to start the async runtime: {error}");
            return ExitCode::from(exit_code::FAILURE);
        }
    };
    let outcome = runtime.block_on(async move {
        match command {
            Command::Run => run_sidecar(settings).await,
            Command::CheckConfig => unreachable!("answered before the runtime starts"),
            Command::Backup(command) => run_backup_command(command, &settings).await,
        }
    });
    // Do not wait for a blocking thread stuck on a child process.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "todo-sidecar failed");
            eprintln!("todo-sidecar: error: {error:#}");
            ExitCode::from(exit_code_of(&error))
        }
    }
}

/// The settings were loaded and validated before any command runs (an
/// invalid one exits 2 in `main`); this only reports which components `run`
/// would start, never a value (URLs may carry credentials).
fn check_config(settings: &Settings) -> ExitCode {
    let mut components = Vec::new();
    if settings.backup.enabled {
        components.push("backup");
    }
    if settings.logship.enabled() {
        components.push("logship");
    }
    if settings.aggregate.enabled {
        components.push("aggregate");
    }
    eprintln!(
        "todo-sidecar: the configuration is valid (admin port {}, components: {})",
        settings.admin.port,
        if components.is_empty() {
            "none".to_string()
        } else {
            components.join(", ")
        }
    );
    ExitCode::SUCCESS
}

async fn run_sidecar(settings: Settings) -> Result<(), BackupError> {
    Application::build(settings)?.run_until_stopped().await?;
    Ok(())
}

/// Listens for SIGTERM (Kubernetes) and SIGINT (Ctrl-C) from now on (they
/// no longer end the process by themselves); the future resolves with the
/// first one's name.
pub(crate) fn stop_signals() -> std::io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}

async fn run_backup_command(
    command: BackupCommand,
    settings: &Settings,
) -> Result<(), BackupError> {
    let store = Store::from_settings(&settings.backup.store)
        .context("Failed to set up the backup store")?;
    match command {
        BackupCommand::Run => {
            // Metrics of a one-shot process die with it; the CronJob's
            // failures show as failed Jobs, its successes in the store.
            let metrics = Metrics::new();
            // Listening before the upload starts: a signal at any point
            // after it leaves nothing behind.
            let interrupted = stop_signals().context("Failed to listen for stop signals")?;
            let manifest =
                backup::run_backup(settings, &store, &metrics.backup, interrupted).await?;
            eprintln!(
                "todo-sidecar: snapshot {} published to {} ({} bytes compressed from {}, sha256 {})",
                manifest.id,
                store.describe(),
                manifest.compressed_bytes,
                manifest.raw_bytes,
                manifest.sha256
            );
            Ok(())
        }
        BackupCommand::List { json } => {
            let catalog = snapshot::catalog(&store).await?;
            warn_about_damaged(&catalog);
            print_list(&catalog, json).context("Failed to print the list")?;
            Ok(())
        }
        BackupCommand::Verify {
            which,
            restore_drill,
        } => {
            let catalog = snapshot::catalog(&store).await?;
            let manifest = choose(&catalog, &which)?;
            snapshot::verify_checksum(&store, manifest).await?;
            eprintln!(
                "todo-sidecar: snapshot {} is intact (sha256 {})",
                manifest.id, manifest.sha256
            );
            if restore_drill {
                let report = restore::restore_drill(settings, &store, manifest).await?;
                eprintln!(
                    "todo-sidecar: restore drill of snapshot {} succeeded: {} tables' row counts match the manifest",
                    manifest.id, report.tables_checked
                );
            }
            Ok(())
        }
        BackupCommand::Restore {
            which,
            target_url,
            force,
        } => {
            let catalog = snapshot::catalog(&store).await?;
            let manifest = choose(&catalog, &which)?;
            let report = restore::restore(settings, &store, manifest, &target_url, force).await?;
            eprintln!(
                "todo-sidecar: restored snapshot {} into database {}{}; {} tables' row counts match the manifest",
                manifest.id,
                report.database,
                if report.created { " (created)" } else { "" },
                report.tables_checked
            );
            Ok(())
        }
        BackupCommand::Prune => {
            let report = backup::prune(&store, &settings.backup.retention).await?;
            eprintln!(
                "todo-sidecar: kept {} snapshots; deleted {} ({}); removed {} incomplete objects; {} damaged left in place",
                report.kept,
                report.deleted.len(),
                report.deleted.join(", "),
                report.incomplete_deleted.len(),
                report.damaged.len()
            );
            Ok(())
        }
    }
}

fn choose<'a>(catalog: &'a Catalog, which: &Which) -> Result<&'a Manifest, BackupError> {
    match (&which.id, which.latest) {
        (Some(id), _) => catalog.find(id),
        (None, _) => catalog.latest(),
    }
}

fn warn_about_damaged(catalog: &Catalog) {
    for (id, reason) in &catalog.damaged {
        eprintln!("todo-sidecar: warning: snapshot {id} is not listed: {reason}");
    }
}

fn print_list(catalog: &Catalog, json: bool) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        for manifest in &catalog.complete {
            writeln!(
                stdout,
                "{}",
                serde_json::to_string(manifest).map_err(std::io::Error::other)?
            )?;
        }
    } else {
        writeln!(
            stdout,
            "{:<24}  {:<20}  {:>12}  {:>12}  {:>8}  DATABASE",
            "ID", "FINISHED", "SIZE", "RAW", "SECONDS"
        )?;
        for manifest in &catalog.complete {
            writeln!(
                stdout,
                "{:<24}  {:<20}  {:>12}  {:>12}  {:>8.1}  {}",
                manifest.id,
                manifest
                    .finished_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                manifest.compressed_bytes,
                manifest.raw_bytes,
                manifest.duration_seconds(),
                manifest.database
            )?;
        }
    }
    stdout.flush()
}
