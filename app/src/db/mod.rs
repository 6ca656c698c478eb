//! Everything that talks to PostgreSQL: the connection pool, the error type of
//! the database layer, migrations, and (in the submodules) one plain function
//! per query over `&mut PgConnection`, testable without HTTP or actors.

pub mod api_keys;
pub mod migrations;
pub mod todos;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection, Pool};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, PgConnection};
use secrecy::{ExposeSecret, SecretString};

use crate::configuration::DatabaseSettings;

/// The pool the executors take connections from.
pub type PgPool = Pool<PgConnectionManager>;

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

impl From<r2d2::PoolError> for DbError {
    fn from(error: r2d2::PoolError) -> Self {
        DbError::Unavailable(format!("no connection from the pool: {error}"))
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
        }
    }

    /// Opens a connection outside the pool (CLI commands, migrations).
    pub fn establish(&self) -> Result<PgConnection, ConnectError> {
        let mut connection = PgConnection::establish(self.url.expose_secret())?;
        connection.batch_execute(&format!(
            "SET statement_timeout = {}; SET application_name = 'todo-app'",
            self.statement_timeout_ms
        ))?;
        Ok(connection)
    }
}

impl ManageConnection for PgConnectionManager {
    type Connection = ManagedPgConnection;
    type Error = ConnectError;

    fn connect(&self) -> Result<ManagedPgConnection, ConnectError> {
        Ok(ManagedPgConnection {
            connection: self.establish()?,
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

/// Builds the request pool without connecting: the server starts (and
/// reports not-ready) while the database is down, and recovers when it returns.
pub fn build_pool(settings: &DatabaseSettings) -> PgPool {
    build_pool_of_size(settings, settings.pool_size)
}

/// A pool of the given size with the settings' timeouts (health checks use one of 1).
pub fn build_pool_of_size(settings: &DatabaseSettings, size: u32) -> PgPool {
    let manager =
        PgConnectionManager::new(settings.connection_url(), settings.statement_timeout_ms);
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(settings.pool_wait_timeout())
        // Checking every checkout would cost a round trip per request; lost
        // connections are found by the query that fails and marked instead.
        .test_on_check_out(false)
        .idle_timeout(Some(Duration::from_secs(300)))
        .error_handler(Box::new(LogPoolErrors))
        .build_unchecked(manager)
}

/// Opens one connection outside the pool, for the CLI and migrations.
pub fn connect(settings: &DatabaseSettings) -> Result<PgConnection, ConnectError> {
    PgConnectionManager::new(settings.connection_url(), settings.statement_timeout_ms).establish()
}
