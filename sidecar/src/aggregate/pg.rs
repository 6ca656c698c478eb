//! The database gauges: connections by state, database size, todos by
//! completed state and the age of the oldest open transaction, read over
//! one long-lived session with a short `statement_timeout`.
//!
//! Through diesel (libpq) like the rest of the sidecar, on a blocking
//! thread; the whole read also has a deadline on the async side, so a
//! black-holed database costs one scrape the deadline and later scrapes
//! nothing (they see the session still busy and report the database down).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Double, Nullable, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use secrecy::{ExposeSecret, SecretString};

/// The states `todo_pg_connections` always reports (0 when none), so a
/// state's series does not come and go with its connections.
pub const CONNECTION_STATES: [&str; 4] = [
    "active",
    "idle",
    "idle_in_transaction",
    "idle_in_transaction_aborted",
];

/// One reading of the database gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct PgStats {
    /// Client connections to this database by state (`pg_stat_activity`,
    /// the sidecar's own active one included).
    pub connections: Vec<(String, i64)>,
    /// `pg_database_size` of this database.
    pub database_size_bytes: i64,
    /// `(completed, open)` rows of `todos`; none when the table does not
    /// exist (yet: the app creates it when it migrates).
    pub todos: Option<(i64, i64)>,
    /// Seconds since the oldest transaction open in this database (other
    /// than the sidecar's own) began; 0 when none is open.
    pub oldest_transaction_age_seconds: f64,
}

/// Why the gauges could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the previous read of the database gauges is still running")]
    Busy,
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

/// Reads the gauges over a session it keeps open between reads.
pub struct PgProbe {
    url: SecretString,
    statement_timeout: Duration,
    session: Arc<Mutex<Option<PgConnection>>>,
}

#[derive(QueryableByName)]
struct StateCount {
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
    #[diesel(sql_type = BigInt)]
    connections: i64,
}

#[derive(QueryableByName)]
struct Scalars {
    #[diesel(sql_type = BigInt)]
    size: i64,
    #[diesel(sql_type = Double)]
    oldest: f64,
}

#[derive(QueryableByName)]
struct TodoCounts {
    #[diesel(sql_type = BigInt)]
    completed: i64,
    #[diesel(sql_type = BigInt)]
    open: i64,
}

impl PgProbe {
    /// A probe of the database at `url` (a secret: never logged).
    pub fn new(
        url: &SecretString,
        connect_timeout: Duration,
        statement_timeout: Duration,
    ) -> PgProbe {
        PgProbe {
            // Its own application_name, so an operator looking for the
            // backup's session in pg_stat_activity does not find this one.
            url: todo_common::pg_url::with_connection_options(
                url,
                connect_timeout,
                "todo-sidecar-aggregate",
            ),
            statement_timeout,
            session: Arc::new(Mutex::new(None)),
        }
    }

    /// Reads every gauge, within `deadline`.
    pub async fn read(&self, deadline: Duration) -> Result<PgStats, PgError> {
        let url = self.url.clone();
        let statement_timeout = self.statement_timeout;
        let session = self.session.clone();
        let work = tokio::task::spawn_blocking(move || {
            // A read stuck on a dead host keeps the session locked; the next
            // ones fail at once instead of piling up blocking threads.
            let mut slot = match session.try_lock() {
                Ok(slot) => slot,
                // A read that panicked left no usable session: start afresh
                // instead of reporting "busy" for ever.
                Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                    let mut slot = poisoned.into_inner();
                    *slot = None;
                    slot
                }
                Err(std::sync::TryLockError::WouldBlock) => return Err(PgError::Busy),
            };
            if slot.is_none() {
                *slot = Some(connect(&url, statement_timeout).map_err(PgError::Failed)?);
            }
            let connection = slot.as_mut().expect("connected just above");
            let outcome = read_stats(connection);
            if outcome.is_err() {
                // A broken session is not reused; the next read reconnects.
                *slot = None;
            }
            outcome.map_err(PgError::Failed)
        });
        match tokio::time::timeout(deadline, work).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(join_error)) => Err(PgError::Failed(anyhow::anyhow!(
                "the database read panicked: {join_error}"
            ))),
            Err(_) => Err(PgError::Timeout(deadline)),
        }
    }
}

fn connect(url: &SecretString, statement_timeout: Duration) -> anyhow::Result<PgConnection> {
    // The error from libpq names host and port, never the password.
    let mut connection = PgConnection::establish(url.expose_secret())
        .context("Failed to connect to the database")?;
    connection
        .batch_execute(&format!(
            "SET statement_timeout = {}; SET lock_timeout = {0}",
            statement_timeout.as_millis().max(1)
        ))
        .context("Failed to set the statement timeout")?;
    Ok(connection)
}

fn read_stats(connection: &mut PgConnection) -> anyhow::Result<PgStats> {
    let states: Vec<StateCount> = diesel::sql_query(
        "SELECT state, count(*) AS connections FROM pg_stat_activity \
         WHERE datname = current_database() AND backend_type = 'client backend' \
         GROUP BY state",
    )
    .load(connection)
    .context("Failed to read pg_stat_activity")?;
    let mut connections: Vec<(String, i64)> = CONNECTION_STATES
        .iter()
        .map(|state| (state.to_string(), 0))
        .collect();
    for row in states {
        // "idle in transaction (aborted)" → "idle_in_transaction_aborted";
        // no state: activity tracking is off for that backend.
        let state = row.state.map_or_else(
            || "unknown".to_string(),
            |state| {
                state
                    .replace(" (aborted)", "_aborted")
                    .replace([' ', '(', ')'], "_")
            },
        );
        match connections.iter_mut().find(|(known, _)| *known == state) {
            Some((_, count)) => *count += row.connections,
            None => connections.push((state, row.connections)),
        }
    }
    let scalars: Scalars = diesel::sql_query(
        "SELECT pg_database_size(current_database()) AS size, \
         coalesce((SELECT extract(epoch FROM now() - min(xact_start)) FROM pg_stat_activity \
                   WHERE datname = current_database() AND xact_start IS NOT NULL \
                   AND pid <> pg_backend_pid()), 0)::float8 AS oldest",
    )
    .get_result(connection)
    .context("Failed to read the database size")?;
    let table: Option<String> =
        diesel::sql_query("SELECT to_regclass('todos')::text AS state, 0::bigint AS connections")
            .get_result::<StateCount>(connection)
            .context("Failed to look for the todos table")?
            .state;
    let todos = match table {
        None => None,
        Some(_) => {
            let counts: TodoCounts = diesel::sql_query(
                "SELECT count(*) FILTER (WHERE completed) AS completed, \
                 count(*) FILTER (WHERE NOT completed) AS open FROM todos",
            )
            .get_result(connection)
            .context("Failed to count the todos")?;
            Some((counts.completed, counts.open))
        }
    };
    Ok(PgStats {
        connections,
        database_size_bytes: scalars.size,
        todos,
        oldest_transaction_age_seconds: scalars.oldest.max(0.0),
    })
}
