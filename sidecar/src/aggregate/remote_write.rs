//! Prometheus remote_write 1.0: every `interval_seconds` a snapshot of every
//! exposed series is queued (bounded: the oldest samples are dropped first),
//! and a sender pushes the queue in order, as snappy-compressed protobuf
//! `WriteRequest`s, retrying network errors, 5xx and 429 with an exponential
//! backoff with jitter that honours `Retry-After`. Credentials come from the
//! URL or from mounted secret files (`auth`). Samples sent, failed and
//! dropped are counted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::Notify;

use anyhow::Context;
use reqwest::header::HeaderValue;

use super::config::RemoteWriteSettings;
use super::events::{
    DropReason, PushFailureReason, RemoteWriteDropped, RemoteWriteFailed, RemoteWriteSent,
};
use super::exposition::Family;
use crate::component::Shutdown;
use crate::http::{Backoff, Credentials};
use crate::metrics::AggregateMetrics;

/// The remote_write 1.0 messages (prometheus/prompb `types.proto` and
/// `remote.proto`), only the fields version 1.0 needs.
pub mod proto {
    /// `prometheus.WriteRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// `prometheus.TimeSeries`: labels sorted by name, `__name__` included.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// `prometheus.Label`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `prometheus.Sample`: a value at a time in milliseconds.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

use proto::{Label, TimeSeries, WriteRequest};

/// One series per sample line, stamped `timestamp_ms` (unless the
/// exposition gave the sample its own time), with `external` labels added
/// where the series does not already have them.
pub fn to_series(
    families: &[Family],
    external: &BTreeMap<String, String>,
    timestamp_ms: i64,
) -> Vec<TimeSeries> {
    let mut series = Vec::with_capacity(families.iter().map(|f| f.samples.len()).sum());
    for family in families {
        for sample in &family.samples {
            let mut labels: Vec<Label> =
                Vec::with_capacity(sample.labels.len() + external.len() + 1);
            labels.push(Label {
                name: "__name__".to_string(),
                value: format!("{}{}", family.name, sample.suffix.as_str()),
            });
            for (name, value) in &sample.labels {
                labels.push(Label {
                    name: name.clone(),
                    value: value.clone(),
                });
            }
            for (name, value) in external {
                if sample.label(name).is_none() {
                    labels.push(Label {
                        name: name.clone(),
                        value: value.clone(),
                    });
                }
            }
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            series.push(TimeSeries {
                labels,
                samples: vec![proto::Sample {
                    value: sample.value,
                    timestamp: sample.timestamp_ms.unwrap_or(timestamp_ms),
                }],
            });
        }
    }
    series
}

/// Prometheus's staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

fn series_key(labels: &[Label]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for label in labels {
        label.name.hash(&mut hasher);
        label.value.hash(&mut hasher);
    }
    hasher.finish()
}

/// Appends a staleness marker for every series in `previous` (what the last
/// push carried) missing from `series`, then remembers `series` as pushed.
/// Without the markers a series that vanished (the app is down, a rule now
/// sums it away) would keep its last value in queries for five minutes,
/// as if it were still current; a scraping Prometheus marks them too.
pub fn mark_stale(
    previous: &mut HashMap<u64, Vec<Label>>,
    series: &mut Vec<TimeSeries>,
    timestamp_ms: i64,
) {
    let current: HashMap<u64, Vec<Label>> = series
        .iter()
        .map(|one| (series_key(&one.labels), one.labels.clone()))
        .collect();
    for (key, labels) in previous.drain() {
        if !current.contains_key(&key) {
            series.push(TimeSeries {
                labels,
                samples: vec![proto::Sample {
                    value: f64::from_bits(STALE_NAN_BITS),
                    timestamp: timestamp_ms,
                }],
            });
        }
    }
    *previous = current;
}

/// The request body: protobuf, then snappy's raw block format (not framed).
pub fn encode(series: Vec<TimeSeries>) -> Vec<u8> {
    let body = WriteRequest { timeseries: series }.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&body)
        .expect("snappy compresses any input")
}

/// The bounded queue of requests waiting to be sent.
#[derive(Debug, Default)]
pub struct Queue {
    requests: VecDeque<Vec<TimeSeries>>,
    samples: usize,
    max_samples: usize,
}

impl Queue {
    /// An empty queue holding at most `max_samples` samples.
    pub fn new(max_samples: usize) -> Queue {
        Queue {
            requests: VecDeque::new(),
            samples: 0,
            max_samples,
        }
    }

    /// Queues `series` as requests of at most `per_request` samples,
    /// dropping the oldest requests to make room; returns the samples dropped.
    pub fn push(&mut self, mut series: Vec<TimeSeries>, per_request: usize) -> usize {
        let mut dropped = 0;
        while !series.is_empty() {
            let rest = series.split_off(series.len().min(per_request));
            let request = std::mem::replace(&mut series, rest);
            while self.samples + request.len() > self.max_samples {
                match self.requests.pop_front() {
                    Some(oldest) => {
                        self.samples -= oldest.len();
                        dropped += oldest.len();
                    }
                    None => break,
                }
            }
            if self.samples + request.len() > self.max_samples {
                dropped += request.len();
                continue;
            }
            self.samples += request.len();
            self.requests.push_back(request);
        }
        dropped
    }

    /// The oldest request.
    pub fn pop(&mut self) -> Option<Vec<TimeSeries>> {
        let request = self.requests.pop_front()?;
        self.samples -= request.len();
        Some(request)
    }

    /// Samples waiting.
    pub fn samples(&self) -> usize {
        self.samples
    }
}

/// Why one push failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Worth retrying: a network error, a 5xx, a 429.
    #[error("{message}")]
    Retryable {
        /// What failed, with every cause.
        message: String,
        /// The receiver's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Retrying would fail the same way (a 4xx: the receiver refuses the data).
    #[error("{0}")]
    Rejected(String),
}

impl PushError {
    /// Why the samples were given up, when this is the last attempt's error.
    pub fn reason(&self) -> PushFailureReason {
        match self {
            PushError::Retryable { .. } => PushFailureReason::RetriesExhausted,
            PushError::Rejected(_) => PushFailureReason::Rejected,
        }
    }

    /// A retryable failure without `Retry-After`.
    pub fn retryable(message: impl Into<String>) -> PushError {
        PushError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Runs `attempt` until it succeeds, fails with [`PushError::Rejected`], or
/// has been retried `max_retries` times, waiting as `backoff` says between
/// attempts (jittered, or longer when the receiver asked with
/// `Retry-After`). Returns the attempts made with the outcome.
pub async fn with_retries<F, Fut>(
    mut attempt: F,
    max_retries: u32,
    mut backoff: Backoff,
) -> (u32, Result<(), PushError>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), PushError>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt().await {
            Ok(()) => return (attempts, Ok(())),
            Err(PushError::Retryable {
                message,
                retry_after,
            }) if attempts <= max_retries => {
                tracing::debug!(error = %message, attempts, "remote_write push failed; retrying");
                tokio::time::sleep(backoff.next(retry_after)).await;
            }
            Err(error) => return (attempts, Err(error)),
        }
    }
}

/// What an answer other than 2xx means: what `todo_common::http` classifies
/// as retryable (5xx, 408, 429) is retried (after `Retry-After` if given),
/// any other status refuses the data.
pub fn classify(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    message: String,
) -> PushError {
    if crate::http::classify_status(status).is_retryable() {
        PushError::Retryable {
            message,
            retry_after,
        }
    } else {
        PushError::Rejected(message)
    }
}

/// One POST of an encoded `WriteRequest`.
async fn push(
    client: &reqwest::Client,
    url: &str,
    authorization: Option<&HeaderValue>,
    body: Vec<u8>,
) -> Result<(), PushError> {
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .header(reqwest::header::CONTENT_ENCODING, "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
    if let Some(authorization) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, authorization.clone());
    }
    let response = request.body(body).send().await.map_err(|error| {
        PushError::retryable(format!(
            "cannot reach {}: {}",
            super::redacted(url),
            crate::http::describe_error(error)
        ))
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = crate::http::retry_after(&response);
    let text: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    let message = format!(
        "{} answered {status}: {}",
        super::redacted(url),
        text.trim()
    );
    Err(classify(status, retry_after, message))
}

/// The job's default labels: `job` and `instance` unless configured.
pub fn external_labels(configured: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = configured.clone();
    labels
        .entry("job".to_string())
        .or_insert_with(|| "todo-backend".to_string());
    if !labels.contains_key("instance") {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|name| !name.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|name| name.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        labels.insert("instance".to_string(), host);
    }
    labels
}

/// What remote_write needs from the aggregation, and nothing more: the
/// series to push, and where to say how pushing goes.
pub trait SeriesSource: Send + Sync + 'static {
    /// Every family exposed now.
    fn families(&self) -> futures_util::future::BoxFuture<'_, Vec<Family>>;
    /// The outcome of the last push: `None` when it was accepted, else why
    /// samples were given up (shown in the component's health).
    fn pushed(&self, problem: Option<String>);
}

/// Queues a snapshot every interval and sends the queue until shutdown;
/// what is left unsent then is counted as dropped.
pub async fn run(
    source: Arc<dyn SeriesSource>,
    metrics: AggregateMetrics,
    url: String,
    settings: RemoteWriteSettings,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    // Read now: a missing or unreadable file fails the component, which the
    // supervisor reports and retries.
    let pusher = Pusher::new(url, &settings)?;
    let producer = Producer {
        external: external_labels(&settings.labels),
        interval: Duration::from_secs(settings.interval_seconds),
        per_request: settings.max_samples_per_request,
    };
    let shared = Shared {
        queue: Mutex::new(Queue::new(settings.max_queued_samples)),
        ready: Notify::new(),
        in_flight: AtomicU64::new(0),
    };
    tracing::info!(url = %super::redacted(&pusher.url), interval_seconds = settings.interval_seconds, "remote_write started");
    tokio::select! {
        _ = shutdown.requested() => {}
        _ = producer.queue_snapshots(source.as_ref(), &shared, &metrics) => {}
        _ = pusher.send_queued(source.as_ref(), &shared, &metrics) => {}
    }
    count_unsent(&shared, &metrics);
    Ok(())
}

/// What the producer and the sender share: the bounded queue, the sender's
/// wake-up, and the samples of the request being pushed (counted as dropped
/// if shutdown interrupts the push).
struct Shared {
    queue: Mutex<Queue>,
    ready: Notify,
    in_flight: AtomicU64,
}

impl Shared {
    fn queued_samples(&self) -> usize {
        self.queue.lock().expect("never poisoned").samples()
    }
}

/// Turns the exposed series into requests, every interval.
struct Producer {
    external: BTreeMap<String, String>,
    interval: Duration,
    per_request: usize,
}

impl Producer {
    /// Queues a snapshot of every exposed series each interval, with
    /// staleness markers for the series gone since the last one; never returns.
    async fn queue_snapshots(
        &self,
        source: &dyn SeriesSource,
        shared: &Shared,
        metrics: &AggregateMetrics,
    ) {
        let mut interval = tokio::time::interval(self.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_timestamp_ms = 0;
        let mut pushed = HashMap::new();
        loop {
            interval.tick().await;
            let families = source.families().await;
            // Stamped now, not with the collection's time: within the
            // cache TTL two pushes share a collection, and the sidecar's
            // own counters differ between them; one timestamp with two
            // values is refused (HTTP 400, duplicate sample).
            last_timestamp_ms = super::now_ms().max(last_timestamp_ms + 1);
            let mut series = to_series(&families, &self.external, last_timestamp_ms);
            mark_stale(&mut pushed, &mut series, last_timestamp_ms);
            let mut queue = shared.queue.lock().expect("never poisoned");
            let dropped = queue.push(series, self.per_request);
            if dropped > 0 {
                RemoteWriteDropped {
                    samples: dropped as u64,
                    reason: DropReason::QueueFull,
                }
                .emit(metrics);
            }
            metrics
                .remote_write_queue_samples
                .set(queue.samples() as i64);
            shared.ready.notify_one();
        }
    }
}

/// Pushes requests to the receiver: the client, the URL, the credentials
/// and the retry policy.
struct Pusher {
    client: reqwest::Client,
    url: String,
    authorization: Option<HeaderValue>,
    max_retries: u32,
    min_backoff: Duration,
    max_backoff: Duration,
}

impl Pusher {
    /// Reads the credentials (a missing file is an error) and builds the client.
    fn new(url: String, settings: &RemoteWriteSettings) -> anyhow::Result<Pusher> {
        let authorization = Credentials {
            auth: settings.auth,
            token_file: settings.token_file.as_deref(),
            username: settings.username.as_deref(),
            password_file: settings.password_file.as_deref(),
        }
        .header()
        .context("aggregate.remote_write credentials")?;
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let client = crate::http::client_builder(crate::USER_AGENT, timeout)
            .build()
            .map_err(|error| anyhow::anyhow!("Failed to build the remote_write client: {error}"))?;
        Ok(Pusher {
            client,
            url,
            authorization,
            max_retries: settings.max_retries,
            min_backoff: Duration::from_millis(settings.min_backoff_ms),
            max_backoff: Duration::from_millis(settings.max_backoff_ms),
        })
    }

    /// Sends the queue in order, waiting when it is empty; never returns.
    async fn send_queued(
        &self,
        source: &dyn SeriesSource,
        shared: &Shared,
        metrics: &AggregateMetrics,
    ) {
        loop {
            let next = shared.queue.lock().expect("never poisoned").pop();
            let Some(request) = next else {
                shared.ready.notified().await;
                continue;
            };
            metrics
                .remote_write_queue_samples
                .set(shared.queued_samples() as i64);
            let samples = request.len() as u64;
            shared.in_flight.store(samples, Ordering::SeqCst);
            let outcome = self.push_with_retries(encode(request)).await;
            shared.in_flight.store(0, Ordering::SeqCst);
            match outcome {
                Ok(()) => {
                    RemoteWriteSent { samples }.emit(metrics);
                    source.pushed(None);
                }
                Err(error) => {
                    RemoteWriteFailed {
                        samples,
                        error: &error,
                    }
                    .emit(metrics);
                    source.pushed(Some(format!(
                        "remote_write: {samples} samples given up: {error}"
                    )));
                }
            }
        }
    }

    /// One request, retried as the settings say.
    async fn push_with_retries(&self, body: Vec<u8>) -> Result<(), PushError> {
        let (_, outcome) = with_retries(
            || {
                push(
                    &self.client,
                    &self.url,
                    self.authorization.as_ref(),
                    body.clone(),
                )
            },
            self.max_retries,
            Backoff::new(self.min_backoff, self.max_backoff),
        )
        .await;
        outcome
    }
}

/// At shutdown: the samples still queued or in flight are dropped unsent.
fn count_unsent(shared: &Shared, metrics: &AggregateMetrics) {
    let left = shared.queued_samples() as u64 + shared.in_flight.load(Ordering::SeqCst);
    if left > 0 {
        RemoteWriteDropped {
            samples: left,
            reason: DropReason::Shutdown,
        }
        .emit(metrics);
    }
    metrics.remote_write_queue_samples.set(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_client() -> reqwest::Client {
        crate::http::client_builder("todo-sidecar-test", Duration::from_secs(5))
            .build()
            .expect("a client")
    }

    fn series(count: usize) -> Vec<TimeSeries> {
        (0..count)
            .map(|index| TimeSeries {
                labels: vec![Label {
                    name: "__name__".to_string(),
                    value: format!("m{index}"),
                }],
                samples: vec![proto::Sample {
                    value: index as f64,
                    timestamp: 1,
                }],
            })
            .collect()
    }

    #[test]
    fn aggregate_remote_write_queue_drops_the_oldest_when_full() {
        let mut queue = Queue::new(10);
        assert_eq!(queue.push(series(7), 3), 0); // requests of 3, 3, 1
        assert_eq!(queue.samples(), 7);
        // 5 more as 3 + 2: the 3 fit (10), the 2 need the oldest request (3) gone.
        assert_eq!(queue.push(series(5), 3), 3);
        assert_eq!(queue.samples(), 9);
        let sizes: Vec<usize> = std::iter::from_fn(|| queue.pop())
            .map(|r| r.len())
            .collect();
        assert_eq!(sizes, vec![3, 1, 3, 2]);
        assert_eq!(queue.samples(), 0);
    }

    #[test]
    fn aggregate_remote_write_urls_are_shown_without_their_password() {
        assert_eq!(
            crate::aggregate::redacted("https://writer:hunter2@metrics.example/api/v1/write"),
            "https://REDACTED:REDACTED@metrics.example/api/v1/write"
        );
        assert_eq!(
            crate::aggregate::redacted("https://t0ken@metrics.example/write?api_key=k3y"),
            "https://REDACTED@metrics.example/write?REDACTED"
        );
        assert_eq!(
            crate::aggregate::redacted("http://127.0.0.1:9090/api/v1/write"),
            "http://127.0.0.1:9090/api/v1/write"
        );
    }

    #[test]
    fn aggregate_remote_write_marks_vanished_series_stale_once() {
        let mut pushed = HashMap::new();
        let mut first = series(3);
        mark_stale(&mut pushed, &mut first, 10);
        assert_eq!(first.len(), 3);
        // m1 and m2 vanish: one marker each, at the new push's time.
        let mut second = series(1);
        mark_stale(&mut pushed, &mut second, 20);
        let mut markers: Vec<(String, u64, i64)> = second[1..]
            .iter()
            .map(|one| {
                (
                    one.labels[0].value.clone(),
                    one.samples[0].value.to_bits(),
                    one.samples[0].timestamp,
                )
            })
            .collect();
        markers.sort();
        assert_eq!(
            markers,
            vec![
                ("m1".to_string(), STALE_NAN_BITS, 20),
                ("m2".to_string(), STALE_NAN_BITS, 20)
            ]
        );
        // Marked once: the next push has no markers.
        let mut third = series(1);
        mark_stale(&mut pushed, &mut third, 30);
        assert_eq!(third.len(), 1);
    }

    #[tokio::test]
    async fn aggregate_remote_write_retries_retryable_failures_with_backoff() {
        let mut failures_left = 2;
        let started = tokio::time::Instant::now();
        let (attempts, outcome) = with_retries(
            || {
                let result = if failures_left > 0 {
                    failures_left -= 1;
                    Err(PushError::retryable("503"))
                } else {
                    Ok(())
                };
                async move { result }
            },
            3,
            Backoff::new(Duration::from_millis(20), Duration::from_millis(30)),
        )
        .await;
        assert_eq!((attempts, outcome), (3, Ok(())));
        // 20 ms, then 40 ms capped at 30 ms, each jittered down to half at most.
        assert!(started.elapsed() >= Duration::from_millis(25));
    }

    #[tokio::test]
    async fn aggregate_remote_write_waits_as_long_as_retry_after_asks() {
        let mut failures_left = 1;
        let started = tokio::time::Instant::now();

        let (attempts, outcome) = with_retries(
            || {
                let result = if failures_left > 0 {
                    failures_left -= 1;
                    Err(PushError::Retryable {
                        message: "429".to_string(),
                        retry_after: Some(Duration::from_millis(300)),
                    })
                } else {
                    Ok(())
                };
                async move { result }
            },
            3,
            Backoff::new(Duration::from_millis(1), Duration::from_millis(100)),
        )
        .await;

        assert_eq!((attempts, outcome), (2, Ok(())));
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn aggregate_remote_write_retries_5xx_and_429_and_gives_up_on_other_4xx() {
        let wait = Some(Duration::from_secs(2));
        let message = || "answered".to_string();

        for status in [400, 401, 403, 404, 409, 413] {
            let status = reqwest::StatusCode::from_u16(status).unwrap();
            assert_eq!(
                classify(status, None, message()),
                PushError::Rejected(message()),
                "{status}"
            );
        }
        for status in [408, 500, 502, 503] {
            let status = reqwest::StatusCode::from_u16(status).unwrap();
            assert_eq!(
                classify(status, None, message()),
                PushError::retryable(message())
            );
        }
        assert_eq!(
            classify(reqwest::StatusCode::TOO_MANY_REQUESTS, wait, message()),
            PushError::Retryable {
                message: message(),
                retry_after: wait
            }
        );
    }

    #[tokio::test]
    async fn aggregate_remote_write_sends_the_token_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "s3cret-token\n").unwrap();
        let authorization = Credentials {
            auth: Some(crate::http::AuthKind::Bearer),
            token_file: Some(&token_file),
            username: None,
            password_file: None,
        }
        .header()
        .unwrap();
        // A receiver that records the request's head and answers 204.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
        let received = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                let read = stream.read(&mut buffer).await.unwrap();
                head.extend_from_slice(&buffer[..read]);
            }
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&head).to_lowercase()
        });

        push(&test_client(), &url, authorization.as_ref(), vec![])
            .await
            .unwrap();

        let head = received.await.unwrap();
        assert!(
            head.contains("authorization: bearer s3cret-token"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn aggregate_remote_write_connection_errors_keep_their_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = test_client();

        let error = push(
            &client,
            &format!("http://127.0.0.1:{port}/api/v1/write"),
            None,
            vec![],
        )
        .await
        .unwrap_err();

        let PushError::Retryable { message, .. } = error else {
            panic!("a refused connection is retried");
        };
        assert!(message.contains("error sending request"), "{message}");
        assert!(
            message.to_lowercase().contains("connection refused"),
            "the cause is kept: {message}"
        );
    }

    #[tokio::test]
    async fn aggregate_remote_write_gives_up_after_max_retries_and_at_once_on_rejection() {
        let quick = || Backoff::new(Duration::from_millis(1), Duration::from_millis(1));
        let (attempts, outcome) =
            with_retries(|| async { Err(PushError::retryable("down")) }, 2, quick()).await;
        assert_eq!(attempts, 3);
        assert_eq!(outcome, Err(PushError::retryable("down")));
        let (attempts, outcome) = with_retries(
            || async { Err(PushError::Rejected("400".to_string())) },
            5,
            quick(),
        )
        .await;
        assert_eq!(attempts, 1);
        assert_eq!(outcome, Err(PushError::Rejected("400".to_string())));
    }

    #[test]
    fn aggregate_remote_write_series_have_sorted_labels_with_name_and_external_labels() {
        let mut family = Family::new(
            "todo_x_seconds",
            super::super::exposition::MetricType::Histogram,
        );
        family.samples.push(super::super::exposition::Sample {
            suffix: super::super::exposition::Suffix::Bucket,
            labels: vec![
                ("route".to_string(), "/a".to_string()),
                ("le".to_string(), "+Inf".to_string()),
                ("job".to_string(), "mine".to_string()),
            ],
            value: 3.0,
            timestamp_ms: None,
        });
        let external = BTreeMap::from([
            ("job".to_string(), "todo-backend".to_string()),
            ("instance".to_string(), "pod-1".to_string()),
        ]);
        let series = to_series(&[family], &external, 1234);
        let labels: Vec<(&str, &str)> = series[0]
            .labels
            .iter()
            .map(|label| (label.name.as_str(), label.value.as_str()))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("__name__", "todo_x_seconds_bucket"),
                ("instance", "pod-1"),
                ("job", "mine"),
                ("le", "+Inf"),
                ("route", "/a"),
            ]
        );
        assert_eq!(
            series[0].samples,
            vec![proto::Sample {
                value: 3.0,
                timestamp: 1234
            }]
        );
        // The body round-trips through snappy and protobuf.
        let body = encode(series.clone());
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .expect("snappy");
        assert_eq!(
            WriteRequest::decode(raw.as_slice())
                .expect("protobuf")
                .timeseries,
            series
        );
    }
}
