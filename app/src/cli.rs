//! The command line: `serve` (default), `migrate`, `check-config`, and
//! `keys create|list|revoke`.
//!
//! Commands other than `serve` log to stderr, so that stdout carries only
//! their result (for `keys create`, the token alone).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::auth::{generate_token, reveal};
use crate::configuration::Settings;
use crate::db::api_keys::{self, RevokeOutcome};
use crate::db::{self, migrations};
use crate::domain::Owner;
use crate::startup::Application;

/// The todo API server and its administration commands.
#[derive(Debug, Parser)]
#[command(name = "todo-app", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default): HTTP(S) on server.port, health and metrics on admin.port.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Load and validate the configuration (files, APP__* and the standard
    /// variables) as `serve` does, without touching the database, and exit:
    /// 0 when valid, 2 with the key named when not.
    CheckConfig,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token, alone on stdout. It is shown only this once.
    Create {
        /// Whose todos the key reads and writes.
        #[arg(long)]
        owner: String,
    },
    /// List keys (never their secrets).
    List {
        /// One JSON object per key instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; servers refuse it within auth.key_cache_ttl_seconds.
    Revoke {
        /// The key's id, as shown by `keys list`.
        id: Uuid,
    },
}

impl Command {
    /// Whether this command writes its logs to stdout (only the server does).
    pub fn logs_to_stdout(&self) -> bool {
        matches!(self, Command::Serve)
    }
}

/// Exit code when the command was understood but could not be carried out.
const EXIT_FAILURE: u8 = 1;
/// Exit code of `keys revoke` for an id that does not exist.
const EXIT_NOT_FOUND: u8 = 3;

/// Runs a command to completion and returns the process exit code.
pub fn run(command: Command, settings: Settings) -> ExitCode {
    let outcome = match command {
        Command::Serve => serve(settings),
        Command::Migrate => migrate(&settings),
        Command::CheckConfig => check_config(&settings),
        Command::Keys(KeysCommand::Create { owner }) => create_key(&settings, &owner),
        Command::Keys(KeysCommand::List { json }) => list_keys(&settings, json),
        Command::Keys(KeysCommand::Revoke { id }) => revoke_key(&settings, id),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "todo-app failed");
            eprintln!("todo-app: error: {error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    actix_web::rt::System::new().block_on(async move {
        let application = Application::build(settings).await?;
        let shutdown = application.shutdown_handle();
        actix_web::rt::spawn(async move {
            wait_for_stop_signal().await;
            shutdown.shutdown().await;
        });
        application
            .run_until_stopped()
            .await
            .context("The server stopped with an error")?;
        tracing::info!("todo-app stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "stop signal received");
}

/// The settings were loaded and validated before any command runs (an
/// invalid one exits 2 in `main`); this only reports it, never a value.
fn check_config(settings: &Settings) -> anyhow::Result<ExitCode> {
    let log_to = match (&settings.log.file, settings.log.stdout) {
        (Some(path), true) => format!("stdout and {}", path.display()),
        (Some(path), false) => path.display().to_string(),
        (None, _) => "stdout".to_string(),
    };
    eprintln!(
        "todo-app: the configuration is valid (API port {}, admin port {}, logs to {log_to})",
        settings.server.port, settings.admin.port
    );
    Ok(ExitCode::SUCCESS)
}

fn migrate(settings: &Settings) -> anyhow::Result<ExitCode> {
    let mut connection =
        db::connect(&settings.database).context("Failed to connect to the database")?;
    let applied = migrations::run_pending_migrations(
        &mut connection,
        settings.database.migration_lock_wait(),
    )?;
    if applied.is_empty() {
        eprintln!("todo-app: the database schema is up to date");
    } else {
        eprintln!("todo-app: applied migrations {}", applied.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn connect_for_keys(settings: &Settings) -> anyhow::Result<diesel::PgConnection> {
    db::connect(&settings.database).context("Failed to connect to the database")
}

/// Turns "relation does not exist" into advice an operator can act on.
fn keys_table_context(error: db::DbError) -> anyhow::Error {
    let text = error.to_string();
    if text.contains("does not exist") {
        anyhow::anyhow!("{text}: the schema is missing; run `todo-app migrate` first")
    } else {
        anyhow::Error::new(error)
    }
}

fn create_key(settings: &Settings, owner: &str) -> anyhow::Result<ExitCode> {
    let owner = Owner::parse(owner).map_err(|error| anyhow::anyhow!("--owner: {error}"))?;
    let mut connection = connect_for_keys(settings)?;
    let token = generate_token();
    api_keys::insert(&mut connection, token.id, &owner, &token.secret_hash)
        .map_err(keys_table_context)
        .context("Failed to store the new API key")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", reveal(&token)).context("Failed to print the token")?;
    stdout.flush().context("Failed to print the token")?;
    eprintln!(
        "todo-app: created API key {} for owner {owner}; the token above is shown only once",
        token.id
    );
    Ok(ExitCode::SUCCESS)
}

fn list_keys(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let mut connection = connect_for_keys(settings)?;
    let keys = api_keys::list(&mut connection)
        .map_err(keys_table_context)
        .context("Failed to list API keys")?;
    let mut stdout = std::io::stdout().lock();
    if json {
        for key in &keys {
            let line = serde_json::json!({
                "id": key.id,
                "owner": key.owner,
                "created_at": key.created_at,
                "last_used_at": key.last_used_at,
                "revoked_at": key.revoked_at,
            });
            writeln!(stdout, "{line}")?;
        }
    } else {
        writeln!(
            stdout,
            "{:<36}  {:<20}  {:<8}  {:<25}  LAST USED",
            "ID", "OWNER", "STATUS", "CREATED"
        )?;
        for key in &keys {
            writeln!(
                stdout,
                "{:<36}  {:<20}  {:<8}  {:<25}  {}",
                key.id,
                key.owner,
                if key.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                },
                key.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                key.last_used_at
                    .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "never".to_string()),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn revoke_key(settings: &Settings, id: Uuid) -> anyhow::Result<ExitCode> {
    let mut connection = connect_for_keys(settings)?;
    let outcome = api_keys::revoke(&mut connection, id)
        .map_err(keys_table_context)
        .context("Failed to revoke the API key")?;
    Ok(match outcome {
        RevokeOutcome::Revoked => {
            eprintln!(
                "todo-app: revoked API key {id}; servers refuse it within {} s",
                settings.auth.key_cache_ttl_seconds
            );
            ExitCode::SUCCESS
        }
        RevokeOutcome::AlreadyRevoked => {
            eprintln!("todo-app: API key {id} was already revoked");
            ExitCode::SUCCESS
        }
        RevokeOutcome::NotFound => {
            eprintln!("todo-app: error: no API key with id {id}");
            ExitCode::from(EXIT_NOT_FOUND)
        }
    })
}
