//! PostgreSQL for backups: the session that holds the advisory lock and the
//! exported snapshot, row counts, database creation, and the client tools
//! (`pg_dump`, `pg_restore`) with their version check.
//!
//! Connections go through diesel, i.e. libpq, like the tools themselves: the
//! same URL means the same thing (sslmode, passfile, service…) to both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Bool, Integer, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use secrecy::{ExposeSecret, SecretString};
use todo_common::pg_url::decode_component;

use super::BackupError;

/// Key of the session-level advisory lock held by a running backup. Any
/// constant works as long as every process uses the same one: "todobkup".
pub const BACKUP_LOCK_KEY: i64 = 0x746f_646f_626b_7570;

/// A URL split for a child process: the password goes into `PGPASSWORD`,
/// never onto a command line that `ps` shows.
pub struct ChildConnection {
    /// The URL without its password.
    pub url: String,
    /// The password, if the URL had one.
    pub password: Option<SecretString>,
}

/// The URL with the shared libpq connection options (connect timeout, TCP
/// keepalives and user timeout, `application_name=todo-sidecar`), unless set.
pub fn with_connection_options(url: &SecretString, connect_timeout: Duration) -> SecretString {
    todo_common::pg_url::with_connection_options(url, connect_timeout, "todo-sidecar")
}

/// Splits the password out of `url` for a child process.
pub fn child_connection(url: &SecretString) -> Result<ChildConnection, BackupError> {
    let mut parsed = url::Url::parse(url.expose_secret())
        // Never echo the URL: it may hold a password.
        .map_err(|error| {
            BackupError::Other(anyhow::anyhow!("the database URL does not parse: {error}"))
        })?;
    let mut password = parsed
        .password()
        .map(|encoded| SecretString::from(decode_component(encoded)));
    let _ = parsed.set_password(None);
    // libpq also takes `?password=`; it must not reach the command line either.
    if parsed.query_pairs().any(|(key, _)| key == "password") {
        let mut kept = Vec::new();
        for (key, value) in parsed.query_pairs() {
            if key == "password" {
                password = Some(SecretString::from(value.into_owned()));
            } else {
                kept.push((key.into_owned(), value.into_owned()));
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    Ok(ChildConnection {
        url: parsed.to_string(),
        password,
    })
}

/// The database name in a URL (for messages and manifests; never the URL).
pub fn database_name(url: &SecretString) -> String {
    todo_common::pg_url::database_name(url.expose_secret())
        .unwrap_or_else(|| "postgres".to_string())
}

/// The same server with another database name.
pub fn with_database(url: &SecretString, database: &str) -> SecretString {
    SecretString::from(todo_common::pg_url::replace_database_name(
        url.expose_secret(),
        database,
    ))
}

/// A PostgreSQL session used from async code: each call runs on a blocking
/// thread, and the connection (with its locks and transaction) stays open
/// between calls.
pub struct Session {
    connection: Option<PgConnection>,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    value: bool,
}

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = Integer)]
    value: i32,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    value: i64,
}

#[derive(QueryableByName)]
struct Word {
    #[diesel(sql_type = Text)]
    value: String,
}

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    name: String,
}

/// The server's version.
#[derive(Debug, Clone)]
pub struct ServerVersion {
    /// `15.14`, as the server reports it.
    pub text: String,
    /// `15`.
    pub major: u32,
}

impl Session {
    /// Opens a session; the error says why, never with the URL.
    pub async fn connect(url: SecretString, connect_timeout: Duration) -> anyhow::Result<Session> {
        let url = with_connection_options(&url, connect_timeout);
        let connection =
            tokio::task::spawn_blocking(move || PgConnection::establish(url.expose_secret()))
                .await
                .context("The connection thread panicked")?
                .map_err(|error| anyhow::anyhow!("{}", error.to_string().trim()))?;
        Ok(Session {
            connection: Some(connection),
        })
    }

    /// Runs `work` on the connection on a blocking thread.
    async fn with<R, F>(&mut self, work: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut PgConnection) -> anyhow::Result<R> + Send + 'static,
    {
        let mut connection = self
            .connection
            .take()
            .context("The session was lost by an earlier failure")?;
        let (connection, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = work(&mut connection);
            (connection, outcome)
        })
        .await
        .context("The database thread panicked")?;
        self.connection = Some(connection);
        outcome
    }

    /// Takes the backup lock without waiting: false when another session holds it.
    pub async fn try_backup_lock(&mut self) -> anyhow::Result<bool> {
        self.with(|connection| {
            let row: Flag = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS value")
                .bind::<BigInt, _>(BACKUP_LOCK_KEY)
                .get_result(connection)?;
            Ok(row.value)
        })
        .await
        .context("Failed to take the backup lock")
    }

    /// The server's version.
    pub async fn server_version(&mut self) -> anyhow::Result<ServerVersion> {
        self.with(|connection| {
            let number: Number =
                diesel::sql_query("SELECT current_setting('server_version_num')::int AS value")
                    .get_result(connection)?;
            let text: Word = diesel::sql_query("SELECT current_setting('server_version') AS value")
                .get_result(connection)?;
            Ok(ServerVersion {
                text: text
                    .value
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                major: (number.value / 10_000) as u32,
            })
        })
        .await
        .context("Failed to read the server version")
    }

    /// Opens a repeatable-read transaction, exports its snapshot for pg_dump
    /// (`--snapshot`), and counts every table's rows in that same snapshot.
    /// The transaction stays open until [`Session::end_snapshot`].
    /// Counting waits at most `lock_wait` for each table's lock.
    pub async fn begin_snapshot(
        &mut self,
        lock_wait: Duration,
    ) -> anyhow::Result<(String, BTreeMap<String, i64>)> {
        self.with(move |connection| {
            // The session sits idle in this transaction while pg_dump runs: a
            // server-side idle timeout would end it and release the backup lock.
            // lock_timeout bounds the wait behind an ACCESS EXCLUSIVE lock.
            connection.batch_execute(&format!(
                "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
                 SET lock_timeout = {}; BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                lock_wait.as_millis().max(1)
            ))?;
            let snapshot: Word =
                diesel::sql_query("SELECT pg_export_snapshot() AS value").get_result(connection)?;
            let counts = count_rows(connection)?;
            Ok((snapshot.value, counts))
        })
        .await
        .context("Failed to open a consistent snapshot of the database")
    }

    /// Ends the snapshot transaction.
    pub async fn end_snapshot(&mut self) -> anyhow::Result<()> {
        self.with(|connection| Ok(connection.batch_execute("COMMIT")?))
            .await
            .context("Failed to close the snapshot transaction")
    }

    /// Every table's row count.
    pub async fn count_rows(&mut self) -> anyhow::Result<BTreeMap<String, i64>> {
        self.with(count_rows).await.context("Failed to count rows")
    }

    /// Tables, views, sequences… outside the system schemas.
    pub async fn user_relations(&mut self) -> anyhow::Result<i64> {
        self.with(|connection| {
            let row: Count = diesel::sql_query(
                "SELECT count(*) AS value FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r','p','v','m','S','f') \
                 AND n.nspname NOT IN ('pg_catalog','information_schema') \
                 AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'",
            )
            .get_result(connection)?;
            Ok(row.value)
        })
        .await
        .context("Failed to inspect the target database")
    }

    /// Runs a statement that returns nothing (CREATE/DROP DATABASE).
    pub async fn execute(&mut self, statement: String) -> anyhow::Result<()> {
        self.with(move |connection| Ok(connection.batch_execute(&statement)?))
            .await
    }
}

fn count_rows(connection: &mut PgConnection) -> anyhow::Result<BTreeMap<String, i64>> {
    let tables: Vec<TableName> = diesel::sql_query(
        "SELECT n.nspname AS schema, c.relname AS name FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog','information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
         ORDER BY 1, 2",
    )
    .load(connection)?;
    let mut counts = BTreeMap::new();
    for table in tables {
        let row: Count = diesel::sql_query(format!(
            "SELECT count(*) AS value FROM {}.{}",
            quote_identifier(&table.schema),
            quote_identifier(&table.name)
        ))
        .get_result(connection)?;
        counts.insert(format!("{}.{}", table.schema, table.name), row.value);
    }
    Ok(counts)
}

/// Quotes an SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL client program and its version.
#[derive(Debug, Clone)]
pub struct PgTool {
    /// Where it is.
    pub path: PathBuf,
    /// `15.14`.
    pub version: String,
    /// `15`.
    pub major: u32,
}

/// Finds `name` (`pg_dump`, `pg_restore`) at `configured` or on PATH, and
/// checks that its major version is at least `required_major`: an older
/// pg_dump refuses a newer server, and an older pg_restore cannot read a
/// newer archive.
pub fn find_tool(
    name: &str,
    configured: Option<&Path>,
    required_major: u32,
    why: &str,
) -> Result<PgTool, BackupError> {
    let install = format!("install postgresql-client-{required_major} (or newer)");
    let config_key = format!("backup.{name}_path");
    let path = match configured {
        Some(path) => {
            if !path.is_file() {
                return Err(BackupError::Tools(format!(
                    "{name} was not found at {} ({config_key}): {install}, or fix {config_key}",
                    path.display()
                )));
            }
            path.to_path_buf()
        }
        None => search_path(name).ok_or_else(|| {
            BackupError::Tools(format!(
                "{name} was not found on PATH: {install}, or set {config_key} to its location"
            ))
        })?,
    };
    let output = Command::new(&path)
        .arg("--version")
        .output()
        .map_err(|error| {
            BackupError::Tools(format!(
                "{name} at {} cannot be run ({error}): {install}",
                path.display()
            ))
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (version, major) = parse_tool_version(&text).ok_or_else(|| {
        BackupError::Tools(format!(
            "{name} at {} did not report a PostgreSQL version (it said {:?}): {install}",
            path.display(),
            text.trim()
        ))
    })?;
    if major < required_major {
        return Err(BackupError::Tools(format!(
            "{name} at {} is version {version}, older than {why} ({required_major}): {install}, or set {config_key}",
            path.display()
        )));
    }
    Ok(PgTool {
        path,
        version,
        major,
    })
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

/// `pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)` → (`15.14`, 15).
pub fn parse_tool_version(text: &str) -> Option<(String, u32)> {
    let version = text
        .split_whitespace()
        .find(|word| word.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let major = version.split(['.', 'b', 'r']).next()?.parse().ok()?;
    Some((version.to_string(), major))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_versions_parse() {
        assert_eq!(
            parse_tool_version("pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n"),
            Some(("15.14".to_string(), 15))
        );
        assert_eq!(
            parse_tool_version("pg_restore (PostgreSQL) 17beta1"),
            Some(("17beta1".to_string(), 17))
        );
        assert_eq!(parse_tool_version("something else"), None);
    }

    #[test]
    fn the_password_moves_out_of_the_url() {
        let child = child_connection(&SecretString::from(
            "postgres://app:p%40ss+w@db:5432/todo?sslmode=require",
        ))
        .expect("parses");
        assert_eq!(child.url, "postgres://app@db:5432/todo?sslmode=require");
        assert_eq!(child.password.expect("has one").expose_secret(), "p@ss+w");
        let child =
            child_connection(&SecretString::from("postgres://app@db/todo")).expect("parses");
        assert!(child.password.is_none());
    }

    #[test]
    fn a_password_in_the_query_moves_out_too() {
        let child = child_connection(&SecretString::from(
            "postgres://app@db/todo?sslmode=require&password=s%26cret&connect_timeout=3",
        ))
        .expect("parses");
        assert_eq!(
            child.url,
            "postgres://app@db/todo?sslmode=require&connect_timeout=3"
        );
        assert_eq!(child.password.expect("has one").expose_secret(), "s&cret");
        let only = child_connection(&SecretString::from("postgres://app@db/todo?password=x"))
            .expect("parses");
        assert_eq!(only.url, "postgres://app@db/todo");
    }

    #[test]
    fn connection_options_are_added_once() {
        let url = with_connection_options(
            &SecretString::from("postgres://db/todo?connect_timeout=9"),
            Duration::from_secs(3),
        );
        let text = url.expose_secret();
        assert!(
            text.starts_with("postgres://db/todo?connect_timeout=9&application_name=todo-sidecar&"),
            "{text}"
        );
        assert_eq!(text.matches("connect_timeout=").count(), 1, "{text}");
        assert!(text.contains("tcp_user_timeout="), "{text}");
    }
}
