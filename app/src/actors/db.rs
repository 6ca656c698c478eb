//! The `DbWorker` actors and their messages: the only way request handlers
//! reach PostgreSQL.
//!
//! One `DbWorker` runs on each HTTP worker's arbiter, started there the
//! first time that worker sends a database message, so a request never
//! leaves its thread: the handler sends the message to its own worker's
//! actor, which runs it on the one connection it owns. Queries sent
//! concurrently on that connection are pipelined (diesel-async on
//! `&AsyncPgConnection`): a worker keeps up to `database.pipeline_depth`
//! statements in flight instead of one per blocked thread. Concurrent
//! creates of one worker are written by one `INSERT … SELECT * FROM
//! unnest(…)` statement (see [`InsertTodos`]), so one commit serves them all.
//! This replaced executors on threads of their own, each blocked in a
//! synchronous libpq round trip, which cost a thread hop each way, a
//! wake-up per request and one commit per create (issue 14 in the README).
//!
//! Each database operation is one message struct with one [`DbOperation`]
//! impl (a [`Statement`] of its own, or the create, which joins a batch),
//! delivered by one generic `Handler`. Every wait is bounded on the
//! worker's thread, which nothing blocks any more: a request is refused
//! with 503 at once when `database.max_queue` requests are already waiting
//! to start; refused unstarted when it could not start within
//! `database.queue_timeout_ms` (no pipeline slot, or no connection); and
//! answered 503 when its statement got no answer within
//! `database.statement_timeout_ms` plus [`ANSWER_MARGIN`] (a frozen
//! database enforces no timeout), after which the connection is replaced.
//! While the database refuses connections, requests are refused at once
//! instead of each trying again. Work is either done whole or not started;
//! a read whose connection was lost is run once more on a fresh one, a
//! write never.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use diesel_async::AsyncPgConnection;
use futures_util::FutureExt;
use futures_util::future::{LocalBoxFuture, Shared as SharedFuture};
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;

use crate::configuration::DatabaseSettings;
use crate::db::api_keys::{self, ApiKeyRecord};
use crate::db::connect::AsyncConnector;
use crate::db::todos::{
    self, InsertTodos, NewTodo, Todo, TodoChanges, TodoFilter, TodoPage, TodoRow,
};
use crate::db::{ConnectAttempts, DbError};
use crate::domain::Owner;
use crate::metrics::Metrics;
use crate::trace::{self, DbSpan};

/// How long past `statement_timeout` a started statement's requester waits
/// for the answer: PostgreSQL cancels the statement at its timeout and the
/// error needs a moment to arrive. A database that stopped answering (a
/// frozen host keeps the socket open, and enforces no `statement_timeout`)
/// gets its request answered 503 at this deadline.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// After a failed connection attempt, how long requests are refused at once
/// before one of them tries again. A refusal is immediate, so trying on
/// every request would cost little, but a database that is down for good
/// would be sent a connection attempt per request from every worker.
const RETRY_CONNECT_AFTER: Duration = Duration::from_millis(100);

/// Most create batches one worker has in flight at once: one running, one
/// being sent behind it, while the next gathers the creates that arrive meanwhile.
const MAX_INSERT_BATCHES_IN_FLIGHT: usize = 2;

/// Most todos one `INSERT` statement creates.
const MAX_INSERT_BATCH_ROWS: usize = 256;

/// The handle request handlers use to reach the database: each call is
/// carried out by the calling thread's own [`DbWorker`].
#[derive(Clone)]
pub struct DbClient {
    shared: Arc<Shared>,
}

/// What every worker of one application shares.
struct Shared {
    /// Tells this client's workers apart from another application's in
    /// the same process (the tests run many).
    id: usize,
    connector: Arc<AsyncConnector>,
    /// Shared by every worker, so once one of them found the database
    /// refusing connections, all refuse requests at once.
    attempts: Arc<ConnectAttempts>,
    /// Requests sent and not started yet (waiting for a pipeline slot or a
    /// connection), bounded by `max_queue`.
    waiting: AtomicUsize,
    max_queue: usize,
    queue_timeout: Duration,
    /// `statement_timeout` plus [`ANSWER_MARGIN`]: the longest wait for a
    /// started statement's answer.
    statement_budget: Duration,
    pipeline_depth: usize,
    /// Each live worker's connection state, read at each scrape. Weak: a
    /// worker that ended (its thread stopped, or actix replaced a worker
    /// that panicked) drops out instead of counting its connection forever.
    lanes: Mutex<Vec<Weak<LaneGauge>>>,
    /// Counts live workers for [`WorkersAlive`].
    alive: Arc<()>,
    metrics: Metrics,
}

/// Source of [`Shared::id`].
static NEXT_CLIENT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's workers, one per client that sent from it.
    static WORKERS: RefCell<Vec<(usize, Addr<DbWorker>)>> = const { RefCell::new(Vec::new()) };
}

impl DbClient {
    /// The client for `settings`; workers start on first use, one per
    /// thread that sends (the HTTP workers), and connect then.
    pub fn new(
        settings: &DatabaseSettings,
        connector: AsyncConnector,
        metrics: Metrics,
    ) -> DbClient {
        DbClient {
            shared: Arc::new(Shared {
                id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
                connector: Arc::new(connector),
                attempts: Arc::new(ConnectAttempts::new()),
                waiting: AtomicUsize::new(0),
                max_queue: settings.max_queue,
                queue_timeout: settings.queue_timeout(),
                statement_budget: settings.statement_timeout() + ANSWER_MARGIN,
                pipeline_depth: settings.pipeline_depth,
                lanes: Mutex::new(Vec::new()),
                alive: Arc::new(()),
                metrics,
            }),
        }
    }

    /// A handle that outlives this client, to wait for the workers to end.
    pub fn workers_alive(&self) -> WorkersAlive {
        WorkersAlive(Arc::downgrade(&self.shared.alive))
    }

    /// Sets `todo_db_pool_connections` from the workers' connections: open
    /// ones with a statement in flight are `active`, the other open ones `idle`.
    pub fn observe_connections(&self) {
        let mut lanes = self.shared.lanes.lock().expect("not poisoned");
        lanes.retain(|lane| lane.strong_count() > 0);
        let (mut idle, mut active) = (0, 0);
        for lane in lanes
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|lane| lane.open.load(Ordering::Relaxed))
        {
            if lane.in_flight.load(Ordering::Relaxed) > 0 {
                active += 1;
            } else {
                idle += 1;
            }
        }
        self.shared.metrics.observe_connections(idle, active);
    }

    /// This thread's worker, started on this thread's arbiter if it has none yet.
    fn worker(&self) -> Addr<DbWorker> {
        WORKERS.with(|workers| {
            let mut workers = workers.borrow_mut();
            if let Some((_, addr)) = workers.iter().find(|(id, _)| *id == self.shared.id) {
                return addr.clone();
            }
            let gauge = Arc::new(LaneGauge::default());
            self.shared
                .lanes
                .lock()
                .expect("not poisoned")
                .push(Arc::downgrade(&gauge));
            let lane = Rc::new(Lane {
                shared: Arc::clone(&self.shared),
                slots: Semaphore::new(self.shared.pipeline_depth),
                connection: RefCell::new(LaneConnection::Closed),
                gauge,
                creates: RefCell::new(Vec::new()),
                create_flush_scheduled: Cell::new(false),
                create_batches_in_flight: Cell::new(0),
            });
            let max_queue = self.shared.max_queue;
            let alive = Arc::clone(&self.shared.alive);
            let addr = DbWorker::create(move |ctx| {
                // max_queue bounds what waits in all workers together.
                ctx.set_mailbox_capacity(max_queue);
                DbWorker {
                    lane,
                    _alive: alive,
                }
            });
            workers.push((self.shared.id, addr.clone()));
            addr
        })
    }

    /// Counts a refusal decided before the statement started, and logs it
    /// unless it is the immediate one of a full queue (which would flood
    /// the log under load).
    fn refused(&self, error: DbError, log: bool) -> DbError {
        refused(&self.shared.metrics, error, log)
    }

    /// Sends `message` to this thread's worker and waits for its result.
    /// Refuses at once (503) when `max_queue` requests are already waiting
    /// to start; the worker bounds every other wait (see the module docs).
    pub async fn send<M: DbOperation>(&self, message: M) -> Result<M::Output, DbError> {
        let shared = &self.shared;
        if shared.waiting.fetch_add(1, Ordering::Relaxed) >= shared.max_queue {
            shared.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(self.refused(
                DbError::Overloaded("too many requests waiting for the database"),
                false,
            ));
        }
        shared.metrics.db_executor_queue_depth.inc();
        let waiting = Waiting {
            shared: Arc::clone(shared),
        };
        let queued = Queued {
            message,
            sent_at: Instant::now(),
            parent: tracing::Span::current(),
            trace_parent: trace::sampled_parent(),
            waiting,
        };
        match self.worker().send(queued).await {
            Ok(outcome) => outcome,
            Err(_) => Err(DbError::Unavailable(
                "the database worker stopped".to_string(),
            )),
        }
    }
}

/// Counts a refusal decided before a statement started (see [`DbClient::refused`]).
fn refused(metrics: &Metrics, error: DbError, log: bool) -> DbError {
    metrics.db_errors.with_label_values(&[error.kind()]).inc();
    if log {
        tracing::warn!(error = %error, "database operation failed");
    }
    error
}

/// Tells when every worker has ended (and closed its connection).
#[derive(Clone)]
pub struct WorkersAlive(Weak<()>);

impl WorkersAlive {
    /// Waits until no worker is left, or `deadline` passes; returns whether
    /// they all ended. Workers end with their HTTP worker's thread, so call
    /// it after the servers have stopped.
    pub async fn wait_for_exit(&self, deadline: Duration) -> bool {
        let started = Instant::now();
        // The client itself holds one reference until it is dropped.
        while self.0.strong_count() > 1 {
            if started.elapsed() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// A request counted in `waiting` (and `todo_db_executor_queue_depth`)
/// until its statement starts or it is refused or dropped.
struct Waiting {
    shared: Arc<Shared>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
        self.shared.metrics.db_executor_queue_depth.dec();
    }
}

/// The actor owning one HTTP worker's connection.
pub struct DbWorker {
    lane: Rc<Lane>,
    /// Counts live workers for [`WorkersAlive`].
    _alive: Arc<()>,
}

impl Actor for DbWorker {
    type Context = Context<Self>;
}

/// A database operation: one struct per operation, sent to the worker
/// wrapped in [`Queued`] by [`DbClient::send`]. Every operation but the
/// create is a [`Statement`] of its own; creates join a batch.
pub trait DbOperation: Send + Sized + 'static {
    /// What the operation returns on success.
    type Output: Send + 'static;
    /// The `operation` label of `todo_db_query_duration_seconds`.
    const NAME: &'static str;

    /// How the worker carries it out.
    fn carry_out(
        self,
        lane: Rc<Lane>,
        request: Request,
    ) -> ResponseFuture<Result<Self::Output, DbError>>;
}

/// An operation that is one statement of its own on the worker's connection.
pub trait Statement: Send + Sized + 'static {
    /// What the statement returns on success.
    type Output: Send + 'static;
    /// The `operation` label of `todo_db_query_duration_seconds`.
    const NAME: &'static str;
    /// Whether the statement may run again on a fresh connection when its
    /// connection was lost: reads only, since a write may have committed.
    const RETRY_ON_LOST_CONNECTION: bool;

    /// The statement on `conn`.
    fn run<'a>(
        &'a self,
        conn: &'a AsyncPgConnection,
    ) -> LocalBoxFuture<'a, Result<Self::Output, DbError>>;
}

impl<S: Statement> DbOperation for S {
    type Output = S::Output;
    const NAME: &'static str = S::NAME;

    fn carry_out(
        self,
        lane: Rc<Lane>,
        request: Request,
    ) -> ResponseFuture<Result<S::Output, DbError>> {
        Box::pin(lane.run_alone(self, request))
    }
}

/// A message on its way to a worker.
pub struct Queued<M> {
    message: M,
    sent_at: Instant,
    /// The request's `tracing` span, so the worker's log lines carry its fields.
    parent: tracing::Span,
    /// The request's sampled OpenTelemetry context: the database span's parent.
    trace_parent: Option<opentelemetry::Context>,
    waiting: Waiting,
}

impl<M: DbOperation> Message for Queued<M> {
    type Result = Result<M::Output, DbError>;
}

/// A request as the worker carries it out: [`Queued`] without its message.
pub struct Request {
    sent_at: Instant,
    parent: tracing::Span,
    trace_parent: Option<opentelemetry::Context>,
    waiting: Waiting,
}

impl<M: DbOperation> Handler<Queued<M>> for DbWorker {
    type Result = ResponseFuture<Result<M::Output, DbError>>;

    fn handle(&mut self, queued: Queued<M>, _: &mut Context<Self>) -> Self::Result {
        let Queued {
            message,
            sent_at,
            parent,
            trace_parent,
            waiting,
        } = queued;
        message.carry_out(
            Rc::clone(&self.lane),
            Request {
                sent_at,
                parent,
                trace_parent,
                waiting,
            },
        )
    }
}

/// A worker's connection as the metrics see it (shared with the scraping thread).
#[derive(Debug, Default)]
struct LaneGauge {
    open: AtomicBool,
    in_flight: AtomicUsize,
}

/// The worker's connection.
enum LaneConnection {
    Closed,
    /// Being opened; requests that need it wait on this.
    Opening(SharedFuture<LocalBoxFuture<'static, Result<Rc<AsyncPgConnection>, String>>>),
    Open(Rc<AsyncPgConnection>),
}

/// One worker's connection, its pipeline slots and its pending creates;
/// lives on the worker's thread.
pub struct Lane {
    shared: Arc<Shared>,
    /// `pipeline_depth` permits: statements in flight on the connection.
    slots: Semaphore,
    connection: RefCell<LaneConnection>,
    gauge: Arc<LaneGauge>,
    /// Creates waiting for the next batch.
    creates: RefCell<Vec<PendingCreate>>,
    create_flush_scheduled: Cell<bool>,
    create_batches_in_flight: Cell<usize>,
}

/// How one statement went.
enum Attempt<T> {
    Answered(Result<T, DbError>),
    /// The driver reported the connection lost (discarded since).
    ConnectionLost(DbError),
    /// No answer within the statement budget (the connection was discarded).
    Unanswered(DbError),
}

impl<T> Attempt<T> {
    fn outcome(self) -> Result<T, DbError> {
        match self {
            Attempt::Answered(outcome) => outcome,
            Attempt::ConnectionLost(error) | Attempt::Unanswered(error) => Err(error),
        }
    }
}

/// Why a request could not start.
enum NotStarted {
    /// `queue_timeout_ms` passed first.
    TimedOut,
    /// No connection could be had.
    Failed(DbError),
}

impl Lane {
    /// The connection, opened first if needed: at once while the database
    /// refused the latest attempt (of any worker) less than
    /// [`RETRY_CONNECT_AFTER`] ago.
    async fn connection(self: &Rc<Self>) -> Result<Rc<AsyncPgConnection>, DbError> {
        let opening = {
            let mut connection = self.connection.borrow_mut();
            match &*connection {
                LaneConnection::Open(conn) => return Ok(Rc::clone(conn)),
                LaneConnection::Opening(opening) => opening.clone(),
                LaneConnection::Closed => {
                    if self
                        .shared
                        .attempts
                        .latest_failed_within(RETRY_CONNECT_AFTER)
                    {
                        return Err(DbError::Unavailable(
                            "the database refused the latest connection attempt".to_string(),
                        ));
                    }
                    // On a task of its own, so it completes (and records its
                    // outcome) even when every request waiting for it gave up.
                    let task = tokio::task::spawn_local(Rc::clone(self).open());
                    let opening = async move {
                        task.await
                            .unwrap_or_else(|_| Err("the connection task failed".to_string()))
                    }
                    .boxed_local()
                    .shared();
                    *connection = LaneConnection::Opening(opening.clone());
                    opening
                }
            }
        };
        opening.await.map_err(DbError::Unavailable)
    }

    /// Opens the connection and installs it. The connector bounds the
    /// attempt by `connect_timeout_seconds` (TLS and login included).
    async fn open(self: Rc<Self>) -> Result<Rc<AsyncPgConnection>, String> {
        let connected = self.shared.connector.connect().await;
        self.shared.attempts.record(connected.is_ok());
        let mut connection = self.connection.borrow_mut();
        match connected {
            Ok(conn) => {
                let conn = Rc::new(conn);
                *connection = LaneConnection::Open(Rc::clone(&conn));
                self.gauge.open.store(true, Ordering::Relaxed);
                Ok(conn)
            }
            Err(error) => {
                *connection = LaneConnection::Closed;
                tracing::warn!(error = %error, "database connection failed");
                Err(format!("cannot connect to the database: {error}"))
            }
        }
    }

    /// Closes `conn` if it is still the worker's connection: it was lost, or
    /// it left a statement unanswered (a pipelined connection answers in
    /// order, so nothing behind that statement would be answered either).
    fn discard(&self, conn: &Rc<AsyncPgConnection>) {
        let mut connection = self.connection.borrow_mut();
        if let LaneConnection::Open(current) = &*connection
            && Rc::ptr_eq(current, conn)
        {
            *connection = LaneConnection::Closed;
            self.gauge.open.store(false, Ordering::Relaxed);
        }
    }

    /// Waits for a pipeline slot and the connection, until `deadline`.
    async fn start(
        self: &Rc<Self>,
        deadline: Instant,
    ) -> Result<(tokio::sync::SemaphorePermit<'_>, Rc<AsyncPgConnection>), NotStarted> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let permit = tokio::time::timeout_at(deadline, self.slots.acquire())
            .await
            .map_err(|_| NotStarted::TimedOut)?
            .expect("the semaphore is never closed");
        match tokio::time::timeout_at(deadline, self.connection()).await {
            Ok(Ok(conn)) => Ok((permit, conn)),
            Ok(Err(error)) => Err(NotStarted::Failed(error)),
            Err(_) => Err(NotStarted::TimedOut),
        }
    }

    /// The refusal of a request that could not start, counted and logged.
    fn not_started(&self, why: NotStarted) -> DbError {
        let error = match why {
            NotStarted::TimedOut => DbError::Overloaded("waited too long for the database"),
            NotStarted::Failed(error) => error,
        };
        refused(&self.shared.metrics, error, true)
    }

    /// Runs one statement on `conn`, waiting for its answer until
    /// `deadline`; a lost or unanswering connection is discarded.
    async fn attempt<T>(
        &self,
        conn: &Rc<AsyncPgConnection>,
        statement: impl Future<Output = Result<T, DbError>>,
        deadline: Instant,
    ) -> Attempt<T> {
        self.gauge.in_flight.fetch_add(1, Ordering::Relaxed);
        let outcome =
            tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), statement).await;
        self.gauge.in_flight.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(Err(error)) if error.is_connection_lost() => {
                self.discard(conn);
                Attempt::ConnectionLost(error)
            }
            Ok(outcome) => Attempt::Answered(outcome),
            Err(_) => {
                self.discard(conn);
                Attempt::Unanswered(DbError::Unavailable(format!(
                    "no answer from the database within {} ms of sending the statement",
                    self.shared.statement_budget.as_millis()
                )))
            }
        }
    }

    /// Carries out an operation as a statement of its own.
    async fn run_alone<M: Statement>(
        self: Rc<Self>,
        operation: M,
        request: Request,
    ) -> Result<M::Output, DbError> {
        let Request {
            sent_at,
            parent,
            trace_parent,
            waiting,
        } = request;
        let (permit, conn) = match self.start(sent_at + self.shared.queue_timeout).await {
            Ok(started) => started,
            Err(why) => return Err(parent.in_scope(|| self.not_started(why))),
        };
        drop(waiting);
        let started = Instant::now();
        let span = DbSpan::start(trace_parent.as_ref(), M::NAME, 1);
        let first = self
            .attempt(
                &conn,
                operation.run(&conn),
                started + self.shared.statement_budget,
            )
            .await;
        drop(permit);
        let outcome = match first {
            // Once, on a fresh connection, within one more statement budget
            // for opening it and running the statement together. Not after
            // a statement went unanswered: the database is not answering,
            // and the request has waited its budget already.
            Attempt::ConnectionLost(_) if M::RETRY_ON_LOST_CONNECTION => {
                let deadline = Instant::now() + self.shared.statement_budget;
                match self.start(deadline).await {
                    Ok((_permit, fresh)) => self
                        .attempt(&fresh, operation.run(&fresh), deadline)
                        .await
                        .outcome(),
                    Err(NotStarted::Failed(error)) => Err(error),
                    Err(NotStarted::TimedOut) => Err(DbError::Unavailable(
                        "no fresh connection to retry on".to_string(),
                    )),
                }
            }
            first => first.outcome(),
        };
        span.end(&outcome);
        self.record(M::NAME, started, &outcome, &parent, 1);
        outcome
    }

    /// The metrics and log line of an operation that started.
    fn record<T>(
        &self,
        name: &'static str,
        started: Instant,
        outcome: &Result<T, DbError>,
        parent: &tracing::Span,
        batch_size: usize,
    ) {
        let metrics = &self.shared.metrics;
        metrics
            .db_query_duration
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = outcome
            && !matches!(error, DbError::NotFound)
        {
            metrics.db_errors.with_label_values(&[error.kind()]).inc();
            // Inside the request's span, so the line carries its request id.
            // A query error is a bug or a schema problem (the client gets a
            // 500): error level; the rest are outages or overload (503).
            parent.in_scope(|| {
                if matches!(error, DbError::Query(_)) {
                    tracing::error!(operation = name, batch_size, error = %error, "database operation failed");
                } else {
                    tracing::warn!(operation = name, batch_size, error = %error, "database operation failed");
                }
            });
        }
    }
}

/// Where a create stands, shared by its requester and the batch that takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CreateState {
    Waiting,
    /// The requester answered 503 at its queue deadline: no batch may take it.
    GivenUp,
    /// Its batch's statement was sent.
    Started,
}

/// A create waiting for its batch.
struct PendingCreate {
    row: TodoRow,
    state: Rc<Cell<CreateState>>,
    reply: oneshot::Sender<Result<Todo, DbError>>,
    sent_at: Instant,
    parent: tracing::Span,
    trace_parent: Option<opentelemetry::Context>,
    /// Counted as waiting until its batch starts (or it is refused).
    waiting: Option<Waiting>,
}

impl Lane {
    /// Queues a create for the next batch and waits for its todo. At its
    /// queue deadline a create no batch has sent yet is refused, and no
    /// batch takes it any more; once sent, its batch's statement budget bounds the wait.
    async fn create(self: Rc<Self>, row: TodoRow, request: Request) -> Result<Todo, DbError> {
        let Request {
            sent_at,
            parent,
            trace_parent,
            waiting,
        } = request;
        let state = Rc::new(Cell::new(CreateState::Waiting));
        let (reply, mut answer) = oneshot::channel();
        self.creates.borrow_mut().push(PendingCreate {
            row,
            state: Rc::clone(&state),
            reply,
            sent_at,
            parent: parent.clone(),
            trace_parent,
            waiting: Some(waiting),
        });
        self.schedule_create_batch();
        let deadline = tokio::time::Instant::from_std(sent_at + self.shared.queue_timeout);
        tokio::select! {
            answer = &mut answer => return flatten_answer(answer),
            () = tokio::time::sleep_until(deadline) => {}
        }
        if state.get() == CreateState::Waiting {
            state.set(CreateState::GivenUp);
            return Err(parent.in_scope(|| self.not_started(NotStarted::TimedOut)));
        }
        flatten_answer(answer.await)
    }

    /// Starts a batch on a task of its own unless one is about to start or
    /// [`MAX_INSERT_BATCHES_IN_FLIGHT`] are running.
    fn schedule_create_batch(self: &Rc<Self>) {
        if self.create_flush_scheduled.get()
            || self.create_batches_in_flight.get() >= MAX_INSERT_BATCHES_IN_FLIGHT
            || self.creates.borrow().is_empty()
        {
            return;
        }
        self.create_flush_scheduled.set(true);
        tokio::task::spawn_local(Rc::clone(self).run_create_batch());
    }

    /// Takes the pending creates and writes them with one statement.
    async fn run_create_batch(self: Rc<Self>) {
        // Lets the requests already woken on this thread add their creates.
        tokio::task::yield_now().await;
        self.create_flush_scheduled.set(false);
        self.create_batches_in_flight
            .set(self.create_batches_in_flight.get() + 1);
        self.write_create_batch().await;
        self.create_batches_in_flight
            .set(self.create_batches_in_flight.get() - 1);
        self.schedule_create_batch();
    }

    async fn write_create_batch(self: &Rc<Self>) {
        let taken: Vec<PendingCreate> = {
            let mut creates = self.creates.borrow_mut();
            let count = creates.len().min(MAX_INSERT_BATCH_ROWS);
            creates.drain(..count).collect()
        };
        let mut batch: Vec<PendingCreate> = taken
            .into_iter()
            .filter(|create| create.state.get() == CreateState::Waiting)
            .collect();
        // Creates are queued in arrival order: the first has the earliest
        // queue deadline, and the batch waits for a slot until then.
        let Some(first) = batch.first() else { return };
        let deadline = first.sent_at + self.shared.queue_timeout;
        let (permit, conn) = match self.start(deadline.max(Instant::now())).await {
            Ok(started) => started,
            Err(NotStarted::TimedOut) => {
                // Those whose own deadline has not come yet wait for the
                // next batch (their requesters refuse the others, or have).
                let now = Instant::now();
                batch.retain(|create| {
                    create.state.get() == CreateState::Waiting
                        && create.sent_at + self.shared.queue_timeout > now
                });
                self.creates.borrow_mut().splice(0..0, batch);
                return;
            }
            Err(NotStarted::Failed(error)) => {
                // The database refuses connections: all fail fast.
                for create in batch {
                    if create.state.get() == CreateState::Waiting {
                        let error = create.parent.in_scope(|| {
                            refused(&self.shared.metrics, error.copy_for_batch(), true)
                        });
                        let _ = create.reply.send(Err(error));
                    }
                }
                return;
            }
        };
        // Whoever gave up while the batch waited is left out: it never runs.
        batch.retain(|create| create.state.get() == CreateState::Waiting);
        if batch.is_empty() {
            return;
        }
        for create in &mut batch {
            create.state.set(CreateState::Started);
            create.waiting.take();
        }
        let started = Instant::now();
        // One span per request, open while its batch's statement runs.
        let spans: Vec<DbSpan> = batch
            .iter()
            .map(|create| {
                DbSpan::start(create.trace_parent.as_ref(), CreateTodo::NAME, batch.len())
            })
            .collect();
        let insert = InsertTodos::new(batch.iter().map(|create| &create.row));
        // Never retried: the batch may have committed before the connection died.
        let outcome = self
            .attempt(
                &conn,
                insert.execute(&conn),
                started + self.shared.statement_budget,
            )
            .await
            .outcome();
        drop(permit);
        for span in spans {
            span.end(&outcome);
        }
        let size = batch.len();
        match outcome {
            Ok(stored) => {
                let mut by_id: HashMap<Uuid, Todo> =
                    stored.into_iter().map(|todo| (todo.id, todo)).collect();
                for create in batch {
                    let answer = by_id.remove(&create.row.id).ok_or_else(|| {
                        DbError::Unavailable("the insert returned no row for this todo".to_string())
                    });
                    self.record(CreateTodo::NAME, started, &answer, &create.parent, size);
                    let _ = create.reply.send(answer);
                }
            }
            Err(error) => {
                for create in batch {
                    let answer = Err(error.copy_for_batch());
                    self.record(CreateTodo::NAME, started, &answer, &create.parent, size);
                    let _ = create.reply.send(answer);
                }
            }
        }
    }
}

fn flatten_answer(
    answer: Result<Result<Todo, DbError>, oneshot::error::RecvError>,
) -> Result<Todo, DbError> {
    answer.unwrap_or_else(|_| {
        Err(DbError::Unavailable(
            "the database worker dropped the request".to_string(),
        ))
    })
}

/// Creates a todo owned by `owner`.
pub struct CreateTodo {
    pub owner: Owner,
    pub todo: NewTodo,
}

impl DbOperation for CreateTodo {
    type Output = Todo;
    const NAME: &'static str = "create_todo";

    /// Joins the worker's next batch; never retried (see `write_create_batch`).
    fn carry_out(self, lane: Rc<Lane>, request: Request) -> ResponseFuture<Result<Todo, DbError>> {
        Box::pin(lane.create(TodoRow::new(self.owner, self.todo), request))
    }
}

/// Reads one of `owner`'s todos.
pub struct GetTodo {
    pub owner: Owner,
    pub id: Uuid,
}

impl Statement for GetTodo {
    type Output = Todo;
    const NAME: &'static str = "get_todo";
    const RETRY_ON_LOST_CONNECTION: bool = true;

    fn run<'a>(&'a self, conn: &'a AsyncPgConnection) -> LocalBoxFuture<'a, Result<Todo, DbError>> {
        Box::pin(todos::find(conn, &self.owner, self.id))
    }
}

/// Lists one page of `owner`'s todos.
pub struct ListTodos {
    pub owner: Owner,
    pub filter: TodoFilter,
}

impl Statement for ListTodos {
    type Output = TodoPage;
    const NAME: &'static str = "list_todos";
    const RETRY_ON_LOST_CONNECTION: bool = true;

    fn run<'a>(
        &'a self,
        conn: &'a AsyncPgConnection,
    ) -> LocalBoxFuture<'a, Result<TodoPage, DbError>> {
        Box::pin(todos::list(conn, &self.owner, &self.filter))
    }
}

/// Changes one of `owner`'s todos.
pub struct UpdateTodo {
    pub owner: Owner,
    pub id: Uuid,
    pub changes: TodoChanges,
}

impl Statement for UpdateTodo {
    type Output = Todo;
    const NAME: &'static str = "update_todo";
    // Not retried: the update may have committed before the connection
    // died, and applying it again could undo another client's change made
    // in between.
    const RETRY_ON_LOST_CONNECTION: bool = false;

    fn run<'a>(&'a self, conn: &'a AsyncPgConnection) -> LocalBoxFuture<'a, Result<Todo, DbError>> {
        Box::pin(todos::update(
            conn,
            &self.owner,
            self.id,
            self.changes.clone(),
        ))
    }
}

/// Deletes one of `owner`'s todos.
pub struct DeleteTodo {
    pub owner: Owner,
    pub id: Uuid,
}

impl Statement for DeleteTodo {
    type Output = ();
    const NAME: &'static str = "delete_todo";
    // Not retried: a delete that committed before the connection died
    // would turn into a misleading 404 on the second try.
    const RETRY_ON_LOST_CONNECTION: bool = false;

    fn run<'a>(&'a self, conn: &'a AsyncPgConnection) -> LocalBoxFuture<'a, Result<(), DbError>> {
        Box::pin(todos::delete(conn, &self.owner, self.id))
    }
}

/// Looks up an active (not revoked) API key by id.
pub struct FindApiKey {
    pub id: Uuid,
}

impl Statement for FindApiKey {
    type Output = Option<ApiKeyRecord>;
    const NAME: &'static str = "find_api_key";
    const RETRY_ON_LOST_CONNECTION: bool = true;

    fn run<'a>(
        &'a self,
        conn: &'a AsyncPgConnection,
    ) -> LocalBoxFuture<'a, Result<Option<ApiKeyRecord>, DbError>> {
        Box::pin(api_keys::find_active(conn, self.id))
    }
}

/// Records that an API key was used.
pub struct TouchApiKey {
    pub id: Uuid,
}

impl Statement for TouchApiKey {
    type Output = ();
    const NAME: &'static str = "touch_api_key";
    // Setting `last_used_at` to now twice is harmless.
    const RETRY_ON_LOST_CONNECTION: bool = true;

    fn run<'a>(&'a self, conn: &'a AsyncPgConnection) -> LocalBoxFuture<'a, Result<(), DbError>> {
        Box::pin(api_keys::touch(conn, self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::DB_OPERATIONS;

    #[test]
    fn every_operation_is_exposed_from_start_up() {
        let names = [
            <CreateTodo as DbOperation>::NAME,
            <GetTodo as DbOperation>::NAME,
            <ListTodos as DbOperation>::NAME,
            <UpdateTodo as DbOperation>::NAME,
            <DeleteTodo as DbOperation>::NAME,
            <FindApiKey as DbOperation>::NAME,
            <TouchApiKey as DbOperation>::NAME,
        ];

        for name in names {
            assert!(DB_OPERATIONS.contains(&name), "{name}");
        }
        assert_eq!(names.len(), DB_OPERATIONS.len());
    }
}
