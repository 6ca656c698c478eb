//! The `DbExecutor` actor and its messages: the only way request handlers
//! reach PostgreSQL.
//!
//! `DbExecutor`s run on a `SyncArbiter` (one OS thread each) and take
//! connections from the r2d2 pool. Each database operation is one message
//! struct with one [`DbOperation`] impl, delivered by one generic `Handler`. Handlers go through [`DbClient::send`],
//! which bounds the wait: a request is refused with 503 at once when too many
//! are queued, and is refused unstarted when it waited in the mailbox longer
//! than `database.queue_timeout_ms`. Work is either done whole or not started.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use uuid::Uuid;

use crate::configuration::DatabaseSettings;
use crate::db::api_keys::{self, ApiKeyRecord};
use crate::db::todos::{self, NewTodo, Todo, TodoChanges, TodoFilter, TodoPage};
use crate::db::{DbError, PgPool, PooledPg};
use crate::domain::Owner;
use crate::metrics::Metrics;
use crate::telemetry;

/// A synchronous actor owning database work; several run on a `SyncArbiter`.
pub struct DbExecutor {
    pool: PgPool,
    metrics: Metrics,
    queue_timeout: Duration,
    /// Counts live executors for [`ExecutorsAlive`].
    _alive: Arc<()>,
}

impl Actor for DbExecutor {
    type Context = SyncContext<Self>;
}

impl DbExecutor {
    /// Starts `database.executor_threads` executors sharing `pool`, and
    /// returns the client handlers use.
    pub fn start(settings: &DatabaseSettings, pool: PgPool, metrics: Metrics) -> DbClient {
        let executor_metrics = metrics.clone();
        let queue_timeout = settings.queue_timeout();
        let alive = Arc::new(());
        let executors_alive = ExecutorsAlive(Arc::downgrade(&alive));
        let addr = SyncArbiter::start(settings.executor_threads, move || DbExecutor {
            pool: pool.clone(),
            metrics: executor_metrics.clone(),
            queue_timeout,
            _alive: alive.clone(),
        });
        DbClient {
            executors_alive,
            addr,
            queued: Arc::new(AtomicUsize::new(0)),
            max_queue: settings.max_queue,
            answer_deadline: settings.answer_deadline(),
            metrics,
        }
    }

    fn connection(&self) -> Result<PooledPg, DbError> {
        Ok(self.pool.get()?)
    }

    /// Runs `operation` on a pooled connection, retrying once on a fresh
    /// connection when the pooled one turns out to be lost (a database
    /// restart leaves dead connections in the pool). Only operations marked
    /// idempotent are retried: a write whose connection died may have committed.
    fn with_connection<T>(
        &self,
        idempotent: bool,
        mut operation: impl FnMut(&mut diesel::PgConnection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut conn = self.connection()?;
        match operation(&mut conn.connection) {
            Err(error) if error.is_connection_lost() => {
                conn.mark_lost();
                drop(conn);
                if !idempotent {
                    return Err(error);
                }
                let mut fresh = self.connection()?;
                let retried = operation(&mut fresh.connection);
                if matches!(&retried, Err(e) if e.is_connection_lost()) {
                    fresh.mark_lost();
                }
                retried
            }
            other => other,
        }
    }
}

/// A database operation: one struct per operation, sent to the executors
/// wrapped in [`Queued`] by [`DbClient::send`] and carried out by
/// [`DbOperation::execute`] on an executor thread.
pub trait DbOperation: Send + 'static {
    /// What the operation returns on success.
    type Output: Send + 'static;
    /// The `operation` label of `todo_db_query_duration_seconds`.
    const NAME: &'static str;
    /// Does the work on the executor's thread.
    fn execute(self, executor: &mut DbExecutor) -> Result<Self::Output, DbError>;
}

/// A message on its way to the executors, stamped with when it was sent.
struct Queued<M> {
    message: M,
    sent_at: Instant,
    /// The request's span, so the database span on the executor thread is its child.
    parent: tracing::Span,
    _slot: QueueSlot,
}

impl<M: DbOperation> Message for Queued<M> {
    type Result = Result<M::Output, DbError>;
}

/// Counts a message as queued from `send` until an executor picks it up or
/// it is dropped unhandled (the caller went away while waiting).
struct QueueSlot {
    queued: Arc<AtomicUsize>,
    metrics: Metrics,
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.metrics.db_executor_queue_depth.dec();
    }
}

impl<M: DbOperation> Handler<Queued<M>> for DbExecutor {
    type Result = Result<M::Output, DbError>;

    fn handle(&mut self, queued: Queued<M>, _: &mut SyncContext<Self>) -> Self::Result {
        let Queued {
            message,
            sent_at,
            parent,
            _slot,
        } = queued;
        drop(_slot);
        let started = Instant::now();
        let outcome = if started.duration_since(sent_at) > self.queue_timeout {
            Err(DbError::Overloaded(
                "waited too long for a database executor",
            ))
        } else if telemetry::traces_exported() {
            // A client span under the request's span, so traces show the
            // database time; only built when traces are exported, since
            // the logs do not need it.
            let _span = tracing::info_span!(
                parent: &parent,
                "db",
                otel.name = M::NAME,
                otel.kind = "client",
                db.system.name = "postgresql",
                db.operation.name = M::NAME,
            )
            .entered();
            message.execute(self)
        } else {
            message.execute(self)
        };
        self.metrics
            .db_query_duration
            .with_label_values(&[M::NAME])
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &outcome
            && !matches!(error, DbError::NotFound)
        {
            self.metrics
                .db_errors
                .with_label_values(&[error.kind()])
                .inc();
            // Inside the request's span, so the line carries its request id.
            // A query error is a bug or a schema problem (the client gets a
            // 500): error level; the rest are outages or overload (503).
            parent.in_scope(|| {
                if matches!(error, DbError::Query(_)) {
                    tracing::error!(operation = M::NAME, error = %error, "database operation failed");
                } else {
                    tracing::warn!(operation = M::NAME, error = %error, "database operation failed");
                }
            });
        }
        outcome
    }
}

/// The handle request handlers use to reach the executors.
#[derive(Clone)]
pub struct DbClient {
    addr: Addr<DbExecutor>,
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    executors_alive: ExecutorsAlive,
    /// [`DatabaseSettings::answer_deadline`].
    answer_deadline: Duration,
    metrics: Metrics,
}

/// Tells when every executor thread has ended (and dropped its pool and
/// connections): `SyncArbiter` threads cannot be joined, and a process that
/// exits while one of them is still closing a TLS connection can crash in
/// OpenSSL's exit-time clean-up.
#[derive(Clone)]
pub struct ExecutorsAlive(Weak<()>);

impl ExecutorsAlive {
    /// Waits until no executor is left, or `deadline` passes; returns
    /// whether they all ended. The executors end once every `DbClient` (the
    /// `Addr`) is dropped, so call it after the servers have stopped.
    pub async fn wait_for_exit(&self, deadline: Duration) -> bool {
        let started = Instant::now();
        while self.0.strong_count() > 0 {
            if started.elapsed() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl DbClient {
    /// A handle that outlives this client, to wait for the executors to end.
    pub fn executors_alive(&self) -> ExecutorsAlive {
        self.executors_alive.clone()
    }

    /// Sends `message` to an executor and waits for its result. Refuses at
    /// once (503) when `max_queue` messages are already waiting, and answers
    /// 503 when no result came within `answer_deadline` (an executor stuck
    /// on a database that stopped answering).
    pub async fn send<M: DbOperation>(&self, message: M) -> Result<M::Output, DbError> {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queue {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            let refused = DbError::Overloaded("too many requests waiting for the database");
            self.metrics
                .db_errors
                .with_label_values(&[refused.kind()])
                .inc();
            return Err(refused);
        }
        self.metrics.db_executor_queue_depth.inc();
        let slot = QueueSlot {
            queued: Arc::clone(&self.queued),
            metrics: self.metrics.clone(),
        };
        let queued = Queued {
            message,
            sent_at: Instant::now(),
            parent: tracing::Span::current(),
            _slot: slot,
        };
        match self.addr.send(queued).timeout(self.answer_deadline).await {
            Ok(outcome) => outcome,
            Err(MailboxError::Timeout) => {
                let late = DbError::Unavailable(format!(
                    "no answer from the database within {} ms",
                    self.answer_deadline.as_millis()
                ));
                self.metrics
                    .db_errors
                    .with_label_values(&[late.kind()])
                    .inc();
                Err(late)
            }
            Err(MailboxError::Closed) => Err(DbError::Unavailable(
                "the database executors stopped".to_string(),
            )),
        }
    }
}

/// Creates a todo owned by `owner`.
pub struct CreateTodo {
    pub owner: Owner,
    pub todo: NewTodo,
}

impl DbOperation for CreateTodo {
    type Output = Todo;
    const NAME: &'static str = "create_todo";

    fn execute(self, executor: &mut DbExecutor) -> Result<Todo, DbError> {
        let CreateTodo { owner, todo } = self;
        // Not retried: the insert may have committed before the connection died.
        executor.with_connection(false, |conn| todos::insert(conn, &owner, todo.clone()))
    }
}

/// Reads one of `owner`'s todos.
pub struct GetTodo {
    pub owner: Owner,
    pub id: Uuid,
}

impl DbOperation for GetTodo {
    type Output = Todo;
    const NAME: &'static str = "get_todo";

    fn execute(self, executor: &mut DbExecutor) -> Result<Todo, DbError> {
        executor.with_connection(true, |conn| todos::find(conn, &self.owner, self.id))
    }
}

/// Lists one page of `owner`'s todos.
pub struct ListTodos {
    pub owner: Owner,
    pub filter: TodoFilter,
}

impl DbOperation for ListTodos {
    type Output = TodoPage;
    const NAME: &'static str = "list_todos";

    fn execute(self, executor: &mut DbExecutor) -> Result<TodoPage, DbError> {
        executor.with_connection(true, |conn| todos::list(conn, &self.owner, &self.filter))
    }
}

/// Changes one of `owner`'s todos.
pub struct UpdateTodo {
    pub owner: Owner,
    pub id: Uuid,
    pub changes: TodoChanges,
}

impl DbOperation for UpdateTodo {
    type Output = Todo;
    const NAME: &'static str = "update_todo";

    fn execute(self, executor: &mut DbExecutor) -> Result<Todo, DbError> {
        // Not retried: the update may have committed before the connection
        // died, and applying it again could undo another client's change
        // made in between.
        executor.with_connection(false, |conn| {
            todos::update(conn, &self.owner, self.id, self.changes.clone())
        })
    }
}

/// Deletes one of `owner`'s todos.
pub struct DeleteTodo {
    pub owner: Owner,
    pub id: Uuid,
}

impl DbOperation for DeleteTodo {
    type Output = ();
    const NAME: &'static str = "delete_todo";

    fn execute(self, executor: &mut DbExecutor) -> Result<(), DbError> {
        // Not retried: a delete that committed before the connection died
        // would turn into a misleading 404 on the second try.
        executor.with_connection(false, |conn| todos::delete(conn, &self.owner, self.id))
    }
}

/// Looks up an active (not revoked) API key by id.
pub struct FindApiKey {
    pub id: Uuid,
}

impl DbOperation for FindApiKey {
    type Output = Option<ApiKeyRecord>;
    const NAME: &'static str = "find_api_key";

    fn execute(self, executor: &mut DbExecutor) -> Result<Option<ApiKeyRecord>, DbError> {
        executor.with_connection(true, |conn| api_keys::find_active(conn, self.id))
    }
}

/// Records that an API key was used.
pub struct TouchApiKey {
    pub id: Uuid,
}

impl DbOperation for TouchApiKey {
    type Output = ();
    const NAME: &'static str = "touch_api_key";

    fn execute(self, executor: &mut DbExecutor) -> Result<(), DbError> {
        executor.with_connection(true, |conn| api_keys::touch(conn, self.id))
    }
}
