//! Everything that talks to PostgreSQL: the error type of the database
//! layer, the synchronous connections (migrations, the `keys` commands, the
//! readiness probe's pool of one), how request connections are opened
//! ([`connect`]), migrations, and (in the submodules) one plain function per
//! query, testable without HTTP or actors; [`sql_text`] keeps the SQL text
//! of the request path's queries from being rebuilt on every run. The request path's connections
//! belong to the workers in `crate::actors::db`.

pub mod api_keys;
pub mod connect;
pub mod migrations;
pub mod sql_text;
pub mod todos;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection, Pool};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, PgConnection};
use secrecy::{ExposeSecret, SecretString};

use crate::configuration::DatabaseSettings;

/// How long a failed connection attempt makes the readiness probe fail at
/// once. r2d2 retries a pending connection every half of
/// [`READINESS_POOL_WAIT`] at most while the database is away, so the
/// memory stays fresh through an outage, and the first attempt that
/// succeeds clears it.
const REFUSAL_MEMORY: Duration = Duration::from_secs(5);
/// The readiness pool's longest wait for its connection.
const READINESS_POOL_WAIT: Duration = Duration::from_secs(1);
/// How often a request waiting for a connection checks whether the database
/// has started refusing connections meanwhile.
const WAIT_SLICE: Duration = Duration::from_millis(20);

/// The readiness probe's pool (of one connection, so probes never queue
/// behind requests): r2d2, plus failing fast while the database refuses
/// connections.
///
/// r2d2 alone makes every request wait the full `pool_wait_timeout_ms` when
/// no connection can be opened, although a refusal is immediate: with the
/// database stopped, every request took a second to get its 503. This pool
/// remembers the outcome of the latest connection attempt: while the latest
/// one failed and no connection is left to wait for, a request is refused
/// at once.
#[derive(Clone)]
pub struct PgPool {
    pool: Pool<PgConnectionManager>,
    attempts: Arc<ConnectAttempts>,
}

impl PgPool {
    /// A connection: an idle one at once, else one that comes free or is
    /// opened within `wait`; [`DbError::Unavailable`] at once while the
    /// database refuses connections.
    pub fn get_within(&self, wait: Duration) -> Result<PooledPg, DbError> {
        // The hot path: an idle connection, no clock read, no lock but r2d2's.
        if let Some(connection) = self.pool.try_get() {
            return Ok(connection);
        }
        let deadline = Instant::now() + wait;
        loop {
            if self.attempts.latest_failed_within(REFUSAL_MEMORY)
                && self.pool.state().connections == 0
            {
                return Err(DbError::Unavailable(
                    "the database refused the latest connection attempt".to_string(),
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DbError::Unavailable(format!(
                    "no connection from the pool within {} ms",
                    wait.as_millis()
                )));
            }
            if let Ok(connection) = self.pool.get_timeout(left.min(WAIT_SLICE)) {
                return Ok(connection);
            }
        }
    }
}

/// The outcome of the latest attempt to open a connection (of a pool, or of
/// all request workers together).
#[derive(Debug, Default)]
pub struct ConnectAttempts {
    /// When the latest attempt failed (microseconds after `epoch`, plus one);
    /// 0 when it succeeded or none was made.
    failed_at: AtomicU64,
    epoch: Epoch,
}

/// When a [`ConnectAttempts`] was made.
#[derive(Debug)]
struct Epoch(Instant);

impl Default for Epoch {
    fn default() -> Epoch {
        Epoch(Instant::now())
    }
}

impl ConnectAttempts {
    /// No attempt made yet.
    pub fn new() -> ConnectAttempts {
        ConnectAttempts::default()
    }

    /// Remembers an attempt's outcome.
    pub fn record(&self, succeeded: bool) {
        let value = if succeeded {
            0
        } else {
            self.epoch.0.elapsed().as_micros() as u64 + 1
        };
        self.failed_at.store(value, Ordering::Relaxed);
    }

    /// Whether the latest attempt failed less than `memory` ago.
    pub fn latest_failed_within(&self, memory: Duration) -> bool {
        match self.failed_at.load(Ordering::Relaxed) {
            0 => false,
            failed_at => {
                let age = (self.epoch.0.elapsed().as_micros() as u64).saturating_sub(failed_at - 1);
                age < memory.as_micros() as u64
            }
        }
    }
}

/// A connection checked out of [`PgPool`].
pub type PooledPg = r2d2::PooledConnection<PgConnectionManager>;

/// Errors of the database layer, as the API and the CLI need to tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The row does not exist (or belongs to someone else: callers cannot tell).
    #[error("not found")]
    NotFound,
    /// No connection could be had, or it was lost: retrying later may work.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The executors are saturated: the request was refused before it reached the database.
    #[error("the database executors are overloaded: {0}")]
    Overloaded(&'static str),
    /// PostgreSQL cancelled the statement after `statement_timeout`.
    #[error("the database statement timed out")]
    Timeout,
    /// Any other failure: a bug or a schema problem, not the client's fault.
    #[error("database query failed: {0}")]
    Query(DieselError),
}

impl DbError {
    /// The same error for another request of the batch it failed (a
    /// diesel error cannot be cloned; a query error keeps its message).
    pub fn copy_for_batch(&self) -> DbError {
        match self {
            DbError::NotFound => DbError::NotFound,
            DbError::Unavailable(message) => DbError::Unavailable(message.clone()),
            DbError::Overloaded(message) => DbError::Overloaded(message),
            DbError::Timeout => DbError::Timeout,
            DbError::Query(error) => {
                DbError::Query(DieselError::QueryBuilderError(error.to_string().into()))
            }
        }
    }

    /// A short label for logs and the `todo_db_errors_total{kind}` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            DbError::NotFound => "not_found",
            DbError::Unavailable(_) => "unavailable",
            DbError::Overloaded(_) => "overloaded",
            DbError::Timeout => "timeout",
            DbError::Query(_) => "query",
        }
    }

    /// Whether the connection that produced this error should be thrown away.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }
}

/// Fragments of server and libpq messages that mean the session is gone.
const CONNECTION_LOST_MESSAGES: &[&str] = &[
    "terminating connection",
    "server closed the connection",
    "the database system is shutting down",
    "the database system is starting up",
    "no connection to the server",
    "could not receive data from server",
    "SSL connection has been closed",
];

impl From<DieselError> for DbError {
    fn from(error: DieselError) -> Self {
        match error {
            DieselError::NotFound => DbError::NotFound,
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => DbError::Unavailable(info.message().to_string()),
            DieselError::DatabaseError(_, ref info)
                if info.message().contains("statement timeout") =>
            {
                DbError::Timeout
            }
            // libpq reports a server that went away mid-session with these
            // messages and no SQLSTATE that diesel exposes.
            DieselError::DatabaseError(_, ref info)
                if CONNECTION_LOST_MESSAGES
                    .iter()
                    .any(|needle| info.message().contains(needle)) =>
            {
                DbError::Unavailable(info.message().to_string())
            }
            DieselError::BrokenTransactionManager => {
                DbError::Unavailable("broken transaction manager".to_string())
            }
            other => DbError::Query(other),
        }
    }
}

/// A pooled PostgreSQL connection that remembers whether it was lost.
///
/// diesel's own r2d2 manager only discards connections whose transaction
/// manager broke, so a connection killed by a database restart would stay in
/// the pool and fail every request it served. The executor marks a
/// connection lost when a query reports so, and the pool drops it.
pub struct ManagedPgConnection {
    pub connection: PgConnection,
    lost: bool,
}

impl ManagedPgConnection {
    /// Tells the pool to drop this connection instead of reusing it.
    pub fn mark_lost(&mut self) {
        self.lost = true;
    }
}

/// Opens connections with the session settings every query relies on.
#[derive(Debug)]
pub struct PgConnectionManager {
    url: SecretString,
    statement_timeout_ms: u64,
    /// Set by the pool this manager serves; `None` outside a pool.
    attempts: Option<Arc<ConnectAttempts>>,
}

/// Why a connection could not be opened; the message never holds the URL.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Connection(#[from] diesel::ConnectionError),
    #[error("setting session parameters failed: {0}")]
    Session(#[from] DieselError),
}

impl PgConnectionManager {
    pub fn new(url: SecretString, statement_timeout_ms: u64) -> Self {
        PgConnectionManager {
            url,
            statement_timeout_ms,
            attempts: None,
        }
    }

    /// Opens a connection outside the pool (CLI commands, migrations), with
    /// the session settings of [`request_session_options`].
    pub fn establish(&self) -> Result<PgConnection, ConnectError> {
        let mut connection = PgConnection::establish(self.url.expose_secret())?;
        connection.batch_execute(&format!(
            "SET statement_timeout = {}; SET application_name = 'todo-app'; SET enable_seqscan = off",
            self.statement_timeout_ms
        ))?;
        Ok(connection)
    }
}

impl ManageConnection for PgConnectionManager {
    type Connection = ManagedPgConnection;
    type Error = ConnectError;

    fn connect(&self) -> Result<ManagedPgConnection, ConnectError> {
        let connection = self.establish();
        if let Some(attempts) = &self.attempts {
            attempts.record(connection.is_ok());
        }
        Ok(ManagedPgConnection {
            connection: connection?,
            lost: false,
        })
    }

    fn is_valid(&self, conn: &mut ManagedPgConnection) -> Result<(), ConnectError> {
        conn.connection.batch_execute("SELECT 1")?;
        Ok(())
    }

    fn has_broken(&self, conn: &mut ManagedPgConnection) -> bool {
        use diesel::r2d2::R2D2Connection;
        conn.lost || std::thread::panicking() || conn.connection.is_broken()
    }
}

/// Sends r2d2's background connection errors to the log (they never hold the URL).
#[derive(Debug)]
struct LogPoolErrors;

impl r2d2::HandleError<ConnectError> for LogPoolErrors {
    fn handle_error(&self, error: ConnectError) {
        tracing::warn!(error = %error, "database connection failed");
    }
}

/// Builds the readiness probe's pool of one connection, without
/// connecting: the server starts (and reports not-ready) while the
/// database is down, and recovers when it returns.
pub fn readiness_pool(settings: &DatabaseSettings) -> PgPool {
    let attempts = Arc::new(ConnectAttempts::new());
    let mut manager =
        PgConnectionManager::new(settings.connection_url(), settings.statement_timeout_ms);
    manager.attempts = Some(Arc::clone(&attempts));
    let pool = Pool::builder()
        .max_size(1)
        .min_idle(Some(0))
        .connection_timeout(READINESS_POOL_WAIT)
        // A lost connection is found by the probe's query and marked instead.
        .test_on_check_out(false)
        .idle_timeout(Some(Duration::from_secs(300)))
        .error_handler(Box::new(LogPoolErrors))
        .build_unchecked(manager);
    PgPool { pool, attempts }
}

/// The session settings of every request connection, as a libpq `options`
/// string: sent with the start-up message, so they cost no round trip.
///
/// `enable_seqscan = off`: every query todo-app sends has an index that
/// serves it, and a sequential scan is only ever cheaper on a tiny table.
/// A plan made then (a new deployment's first todos) stays cached in the
/// long-lived connection while the table grows, until autoanalyze
/// invalidates it, and a lookup by id would scan the whole table.
pub fn request_session_options(settings: &DatabaseSettings) -> String {
    format!(
        "-c statement_timeout={} -c enable_seqscan=off",
        settings.statement_timeout_ms
    )
}

/// Opens one connection outside the pool, for the CLI and migrations.
pub fn connect(settings: &DatabaseSettings) -> Result<PgConnection, ConnectError> {
    PgConnectionManager::new(settings.connection_url(), settings.statement_timeout_ms).establish()
}
