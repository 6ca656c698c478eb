//! The embedded migrations and the one safe way to run them.

use std::time::Duration;

use anyhow::{Context, anyhow};
use diesel::connection::SimpleConnection;
use diesel::sql_types::BigInt;
use diesel::{PgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// `migrations/` at the repository root, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Key of the session-level advisory lock held while migrating. Any constant
/// works as long as every replica uses the same one: it spells "todomigr".
pub const MIGRATION_LOCK_KEY: i64 = 0x746f_646f_6d69_6772;

/// Longest a migration statement waits for a table lock. A DDL statement
/// queued behind a long transaction would otherwise hold up every query on
/// that table, on every replica, for as long as that transaction runs;
/// failing instead lets the next start-up try again.
const DDL_LOCK_TIMEOUT: &str = "10s";

/// Runs every pending migration, holding an advisory lock so that replicas
/// starting together apply each migration exactly once: the others wait for
/// the lock (at most `lock_wait`, `database.migration_lock_wait_seconds`),
/// then find nothing pending. Returns the versions applied here.
pub fn run_pending_migrations(
    connection: &mut PgConnection,
    lock_wait: Duration,
) -> anyhow::Result<Vec<String>> {
    // A migration may rewrite a large table: the request statement timeout
    // must not cancel it half-way (each migration runs in its own transaction).
    // lock_timeout bounds the wait for the advisory lock, which a hung
    // migration or an idle session could otherwise hold for ever.
    connection
        .batch_execute(&format!(
            "SET statement_timeout = 0; SET lock_timeout = {}",
            lock_wait.as_millis().max(1)
        ))
        .context("Failed to prepare the migration session")?;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(connection)
        .with_context(|| {
            format!(
                "Failed to take the migration lock within {} s (database.migration_lock_wait_seconds): \
                 another replica or `todo-app migrate` is still migrating, or a session holds the lock \
                 (see docs/configuration.md)",
                lock_wait.as_secs()
            )
        })?;
    connection
        .batch_execute(&format!("SET lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
        .context("Failed to prepare the migration session")?;
    let outcome = connection
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|error| anyhow!("Failed to run migrations: {error}"));
    // Unlock even when a migration failed; closing the session would too.
    let unlock = diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(connection)
        .context("Failed to release the migration lock");
    let applied = outcome?;
    unlock?;
    Ok(applied)
}
