//! The embedded migrations and the one safe way to run them.

use anyhow::{Context, anyhow};
use diesel::connection::SimpleConnection;
use diesel::sql_types::BigInt;
use diesel::{PgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// `migrations/` at the repository root, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Key of the session-level advisory lock held while migrating. Any constant
/// works as long as every replica uses the same one: it spells "todomigr".
const MIGRATION_LOCK_KEY: i64 = 0x746f_646f_6d69_6772;

/// Runs every pending migration, holding an advisory lock so that replicas
/// starting together apply each migration exactly once: the others wait for
/// the lock, then find nothing pending. Returns the versions applied here.
pub fn run_pending_migrations(connection: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    // A migration may rewrite a large table: the request statement timeout
    // must not cancel it half-way (each migration runs in its own transaction).
    connection
        .batch_execute("SET statement_timeout = 0")
        .context("Failed to prepare the migration session")?;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(connection)
        .context("Failed to take the migration lock")?;
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
