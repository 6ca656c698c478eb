//! The `DbExecutor` actors and their messages: the only way request handlers
//! reach PostgreSQL.
//!
//! Each `DbExecutor` runs on an `Arbiter` of its own (one OS thread, which
//! it blocks while a synchronous diesel query runs) and takes connections
//! from the pool. [`DbClient::send`] addresses the least loaded executor
//! directly, so a request crosses two threads (its HTTP worker, the
//! executor, back) instead of three: actix's `SyncArbiter` forwarded every
//! message through the System arbiter's thread first.
//!
//! Each database operation is one message struct with one [`DbOperation`]
//! impl, delivered by one generic `Handler`. The waiting side bounds every
//! wait itself, so a stuck executor (a frozen database) cannot hold a
//! request: a request is refused with 503 at once when too many are queued;
//! refused unstarted when no executor started it within
//! `database.queue_timeout_ms`; and answered 503 when its statement has run
//! `database.statement_timeout_ms` plus [`ANSWER_MARGIN`] without an answer.
//! Work is either done whole or not started.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// How long past `statement_timeout` a running statement's requester waits
/// for the answer: PostgreSQL cancels the statement at its timeout and the
/// error needs a moment to arrive. A database that stopped answering (a
/// frozen host keeps the socket open, and enforces `statement_timeout`
/// itself) gets its request answered 503 at this deadline.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// An actor owning database work; `database.executor_threads` of them run,
/// each on its own arbiter.
pub struct DbExecutor {
    pool: PgPool,
    metrics: Metrics,
    queue_timeout: Duration,
    /// The ticket of the message being handled, so [`Self::with_connection`]
    /// can mark it started.
    current: Option<Arc<Ticket>>,
    /// Counts live executors for [`ExecutorsAlive`].
    _alive: Arc<()>,
}

impl Actor for DbExecutor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        // The arbiter exists only for this executor: end its thread too.
        Arbiter::current().stop();
    }
}

impl DbExecutor {
    /// Starts `database.executor_threads` executors sharing `pool`, each on
    /// an arbiter of its own, and returns the client handlers use.
    pub fn start(settings: &DatabaseSettings, pool: PgPool, metrics: Metrics) -> DbClient {
        let queue_timeout = settings.queue_timeout();
        let max_queue = settings.max_queue;
        let alive = Arc::new(());
        let executors_alive = ExecutorsAlive(Arc::downgrade(&alive));
        let executors = (0..settings.executor_threads)
            .map(|_| {
                let arbiter = Arbiter::new();
                let pool = pool.clone();
                let metrics = metrics.clone();
                let alive = Arc::clone(&alive);
                let addr = DbExecutor::start_in_arbiter(&arbiter.handle(), move |ctx| {
                    // max_queue bounds what waits in all mailboxes together.
                    ctx.set_mailbox_capacity(max_queue);
                    DbExecutor {
                        pool,
                        metrics,
                        queue_timeout,
                        current: None,
                        _alive: alive,
                    }
                });
                Executor {
                    addr,
                    load: Arc::new(AtomicUsize::new(0)),
                }
            })
            .collect();
        DbClient {
            executors: Arc::new(executors),
            next: Arc::new(AtomicUsize::new(0)),
            executors_alive,
            queued: Arc::new(AtomicUsize::new(0)),
            max_queue,
            queue_timeout,
            statement_budget: settings.statement_timeout() + ANSWER_MARGIN,
            metrics,
        }
    }

    /// Runs `operation` on a pooled connection, retrying once on a fresh
    /// connection when the pooled one turns out to be lost (a database
    /// restart leaves dead connections in the pool). Only operations marked
    /// idempotent are retried: a write whose connection died may have committed.
    /// Each attempt is marked started once it has its connection, which is
    /// also where a request the waiting side gave up on is dropped unstarted.
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

    /// A connection from the pool, with the current message marked started
    /// (its statement is about to run).
    fn connection(&self) -> Result<PooledPg, DbError> {
        let conn = self.pool.get()?;
        if let Some(ticket) = &self.current
            && !ticket.start()
        {
            return Err(DbError::Overloaded(
                "waited too long for a database executor",
            ));
        }
        Ok(conn)
    }
}

/// One executor as the client sees it.
struct Executor {
    addr: Addr<DbExecutor>,
    /// Messages sent to it and not yet done: the client sends to the least loaded.
    load: Arc<AtomicUsize>,
}

/// Where a message stands, shared by its requester and the executor: queued,
/// given up by the requester (it answered 503; the executor must not run
/// it), or started (when its current attempt started).
struct Ticket {
    /// 0: queued; `u64::MAX`: given up; otherwise microseconds between
    /// `sent_at` and the start of the current attempt, plus one.
    state: AtomicU64,
    sent_at: Instant,
}

impl Ticket {
    const QUEUED: u64 = 0;
    const GIVEN_UP: u64 = u64::MAX;

    fn new() -> Ticket {
        Ticket {
            state: AtomicU64::new(Self::QUEUED),
            sent_at: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        (self.sent_at.elapsed().as_micros() as u64 + 1).min(Self::GIVEN_UP - 1)
    }

    /// The executor marks an attempt started; false when the requester gave up.
    fn start(&self) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state == Self::GIVEN_UP {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                self.now(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// The requester gives up on a message not started yet; false when it
    /// has started meanwhile (then its answer is awaited).
    fn give_up_unstarted(&self) -> bool {
        self.state
            .compare_exchange(
                Self::QUEUED,
                Self::GIVEN_UP,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    fn given_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == Self::GIVEN_UP
    }

    /// When the current attempt started, if one has.
    fn started_at(&self) -> Option<Instant> {
        match self.state.load(Ordering::Acquire) {
            Self::QUEUED | Self::GIVEN_UP => None,
            micros => Some(self.sent_at + Duration::from_micros(micros - 1)),
        }
    }
}

/// A database operation: one struct per operation, sent to an executor
/// wrapped in [`Queued`] by [`DbClient::send`] and carried out by
/// [`DbOperation::execute`] on the executor's thread.
pub trait DbOperation: Send + 'static {
    /// What the operation returns on success.
    type Output: Send + 'static;
    /// The `operation` label of `todo_db_query_duration_seconds`.
    const NAME: &'static str;
    /// Does the work on the executor's thread.
    fn execute(self, executor: &mut DbExecutor) -> Result<Self::Output, DbError>;
}

/// A message on its way to an executor.
struct Queued<M> {
    message: M,
    ticket: Arc<Ticket>,
    /// The request's span, so the database span on the executor thread is its child.
    parent: tracing::Span,
    _slot: QueueSlot,
    _load: LoadSlot,
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

/// Counts a message in its executor's load until it is done or dropped.
struct LoadSlot(Arc<AtomicUsize>);

impl Drop for LoadSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<M: DbOperation> Handler<Queued<M>> for DbExecutor {
    type Result = Result<M::Output, DbError>;

    fn handle(&mut self, queued: Queued<M>, _: &mut Context<Self>) -> Self::Result {
        let Queued {
            message,
            ticket,
            parent,
            _slot,
            _load,
        } = queued;
        drop(_slot);
        // Past its queue timeout, a message is given up here even if its
        // requester's timer has not fired yet; the requester answers 503
        // and counts it either way, so nothing is counted here.
        if ticket.given_up()
            || (ticket.sent_at.elapsed() > self.queue_timeout && ticket.give_up_unstarted())
        {
            return Err(DbError::Overloaded(
                "waited too long for a database executor",
            ));
        }
        let started = Instant::now();
        self.current = Some(Arc::clone(&ticket));
        let outcome = if telemetry::traces_exported() {
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
        self.current = None;
        if ticket.given_up() {
            // Given up while the executor waited for a connection: it never ran.
            return outcome;
        }
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
    executors: Arc<Vec<Executor>>,
    /// Where the search for the least loaded executor starts, turning, so
    /// equally loaded executors share the work.
    next: Arc<AtomicUsize>,
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    queue_timeout: Duration,
    /// `statement_timeout` plus [`ANSWER_MARGIN`]: the longest wait for a
    /// started attempt's answer.
    statement_budget: Duration,
    executors_alive: ExecutorsAlive,
    metrics: Metrics,
}

/// Tells when every executor has ended (and dropped its pool and
/// connections): a process that exits while one of them is still closing a
/// TLS connection can crash in OpenSSL's exit-time clean-up.
#[derive(Clone)]
pub struct ExecutorsAlive(Weak<()>);

impl ExecutorsAlive {
    /// Waits until no executor is left, or `deadline` passes; returns
    /// whether they all ended. The executors end once every `DbClient` (the
    /// `Addr`s) is dropped, so call it after the servers have stopped.
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

    /// The executor with the fewest messages sent and not done.
    fn least_loaded(&self) -> &Executor {
        let executors = &self.executors;
        let first = self.next.fetch_add(1, Ordering::Relaxed) % executors.len();
        let mut best = &executors[first];
        let mut best_load = best.load.load(Ordering::Relaxed);
        for offset in 1..executors.len() {
            if best_load == 0 {
                break;
            }
            let candidate = &executors[(first + offset) % executors.len()];
            let load = candidate.load.load(Ordering::Relaxed);
            if load < best_load {
                best = candidate;
                best_load = load;
            }
        }
        best
    }

    /// Counts a refusal decided here, and logs it unless it is the
    /// immediate one of a full queue (which would flood the log under load).
    fn refused(&self, error: DbError, log: bool) -> DbError {
        self.metrics
            .db_errors
            .with_label_values(&[error.kind()])
            .inc();
        if log {
            tracing::warn!(error = %error, "database operation failed");
        }
        error
    }

    /// Sends `message` to an executor and waits for its result. Refuses at
    /// once (503) when `max_queue` messages are already waiting; refuses
    /// (503) a message no executor started within `queue_timeout_ms`, which
    /// then never runs; and answers 503 when a started attempt got no answer
    /// within `statement_timeout_ms` plus [`ANSWER_MARGIN`] (an executor
    /// stuck on a database that stopped answering). Every one of these
    /// waits is timed here, not by the executor, which may be stuck.
    pub async fn send<M: DbOperation>(&self, message: M) -> Result<M::Output, DbError> {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queue {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(self.refused(
                DbError::Overloaded("too many requests waiting for the database"),
                false,
            ));
        }
        self.metrics.db_executor_queue_depth.inc();
        let slot = QueueSlot {
            queued: Arc::clone(&self.queued),
            metrics: self.metrics.clone(),
        };
        let executor = self.least_loaded();
        executor.load.fetch_add(1, Ordering::Relaxed);
        let ticket = Arc::new(Ticket::new());
        let queued = Queued {
            message,
            ticket: Arc::clone(&ticket),
            parent: tracing::Span::current(),
            _slot: slot,
            _load: LoadSlot(Arc::clone(&executor.load)),
        };
        let answer = executor.addr.send(queued);
        tokio::pin!(answer);

        let queue_deadline = ticket.sent_at + self.queue_timeout;
        tokio::select! {
            outcome = &mut answer => return mailbox_outcome(outcome),
            () = tokio::time::sleep_until(queue_deadline.into()) => {}
        }
        // Not started (here or by the executor, which may have seen the
        // deadline first): the executor will drop it unrun.
        let started_at = if ticket.give_up_unstarted() {
            None
        } else {
            ticket.started_at()
        };
        let Some(mut started_at) = started_at else {
            return Err(self.refused(
                DbError::Overloaded("waited too long for a database executor"),
                true,
            ));
        };
        // Started: each attempt (a read is retried once on a fresh
        // connection) gets the statement budget from its own start.
        loop {
            tokio::select! {
                outcome = &mut answer => return mailbox_outcome(outcome),
                () = tokio::time::sleep_until((started_at + self.statement_budget).into()) => {}
            }
            match ticket.started_at() {
                Some(restarted) if restarted != started_at => started_at = restarted,
                _ => {
                    return Err(self.refused(
                        DbError::Unavailable(format!(
                            "no answer from the database within {} ms of sending the statement",
                            self.statement_budget.as_millis()
                        )),
                        true,
                    ));
                }
            }
        }
    }
}

fn mailbox_outcome<T>(outcome: Result<Result<T, DbError>, MailboxError>) -> Result<T, DbError> {
    match outcome {
        Ok(outcome) => outcome,
        Err(_) => Err(DbError::Unavailable(
            "the database executors stopped".to_string(),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::DB_OPERATIONS;

    #[test]
    fn every_operation_is_exposed_from_start_up() {
        let names = [
            CreateTodo::NAME,
            GetTodo::NAME,
            ListTodos::NAME,
            UpdateTodo::NAME,
            DeleteTodo::NAME,
            FindApiKey::NAME,
            TouchApiKey::NAME,
        ];

        for name in names {
            assert!(DB_OPERATIONS.contains(&name), "{name}");
        }
        assert_eq!(names.len(), DB_OPERATIONS.len());
    }
}
