//! The sinks, and what they share: one HTTP client per sink (timeouts, gzip,
//! bearer or basic auth from a mounted secret file, extra CA certificates),
//! delivery of a batch with retries (exponential backoff with jitter on
//! connection errors, 408, 429 and 5xx, honouring `Retry-After`), and the
//! dead-letter file for what a sink refuses (other 4xx), so that one poison
//! batch cannot stop the pipeline.
//!
//! A sink module only knows its wire format: it encodes events into a body
//! ([`HttpSink::encode`]) and reads the answer ([`HttpSink::classify`]).

pub mod elasticsearch;
pub mod loki;
pub mod otlp;
pub mod stdout;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::header::{HeaderMap, HeaderValue};

use super::config::{DeadLetterSettings, HttpSettings, RetrySettings};
use super::event::Event;
use crate::component::{ComponentHealth, HealthHandle, Shutdown};
use crate::http::{Backoff, Credentials};
use crate::metrics::LogshipMetrics;

/// A configured sink.
pub enum Sink {
    /// Lines to stdout.
    Stdout(stdout::StdoutSink),
    /// An HTTP sink.
    Http(Box<HttpDelivery>),
}

impl Sink {
    /// The `sink` label.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Stdout(_) => "stdout",
            Sink::Http(http) => http.sink.name(),
        }
    }

    /// Delivers `events`: returns once every event was accepted or
    /// dead-lettered, retrying meanwhile; `Err(Stopped)` at the end of the
    /// drain.
    pub async fn deliver(
        &self,
        events: &[Event],
        context: &DeliveryContext<'_>,
    ) -> Result<(), Stopped> {
        let started = Instant::now();
        let outcome = match self {
            Sink::Stdout(sink) => {
                sink.write(events, context);
                Ok(())
            }
            Sink::Http(http) => http.deliver(events, context).await,
        };
        if outcome.is_ok() {
            context
                .metrics
                .batch_duration_seconds
                .with_label_values(&[self.name()])
                .observe(started.elapsed().as_secs_f64());
        }
        outcome
    }
}

/// The drain ended while a batch was still being retried: it is left
/// unacknowledged and is sent again after a restart (if the files remain).
#[derive(Debug, thiserror::Error)]
#[error("stopped before the batch was delivered")]
pub struct Stopped;

/// What delivery needs besides the events.
pub struct DeliveryContext<'a> {
    /// Counters.
    pub metrics: &'a LogshipMetrics,
    /// Backoff bounds.
    pub retry: &'a RetrySettings,
    /// Where refused events go.
    pub dead_letter: &'a DeadLetter,
    /// SIGTERM: the wait before the next retry is cut short once (the sink
    /// is often back by then: it restarted in the same rollout), and
    /// delivery goes on, draining, until `give_up`.
    pub shutdown: Shutdown,
    /// The end of the drain (`logship.drain_timeout_seconds` after
    /// SIGTERM): delivery stops, even in the middle of a request.
    pub give_up: Shutdown,
    /// The component's health: `degraded` (with the sink and reason) while
    /// a batch is being retried, so `/health/ready` says why shipping stalls.
    pub health: &'a HealthHandle,
}

/// A request body and its content type.
pub struct Body {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The uncompressed body.
    pub bytes: Vec<u8>,
}

/// What a sink's answer means.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every event was accepted.
    Delivered,
    /// Nothing was accepted; try again later.
    Retry {
        /// The `reason` label.
        reason: &'static str,
    },
    /// Nothing was accepted and trying again cannot help.
    Reject {
        /// Why, for the dead-letter file.
        reason: String,
    },
    /// Some events were refused, but the answer does not say which (OTLP
    /// `partial_success`): the whole batch is dead-lettered.
    PartiallyRejected {
        /// How many were refused.
        rejected: usize,
        /// Why, for the log and the dead-letter file.
        reason: String,
    },
    /// Per-event outcome (Elasticsearch `_bulk`): events not listed were accepted.
    Partial {
        /// Indices (into the events sent) to send again.
        retry: Vec<usize>,
        /// Indices refused, with the reason.
        reject: Vec<(usize, String)>,
    },
}

/// The wire format of an HTTP sink.
pub trait HttpSink: Send + Sync {
    /// The `sink` label.
    fn name(&self) -> &'static str;
    /// The URL batches are posted to.
    fn url(&self) -> &str;
    /// Headers besides content type, encoding and auth.
    fn headers(&self) -> HeaderMap {
        HeaderMap::new()
    }
    /// The request body for `events`.
    fn encode(&self, events: &[&Event]) -> anyhow::Result<Body>;
    /// What a 2xx answer says (only `_bulk` has per-event outcomes).
    fn classify_success(&self, _body: &[u8], _sent: usize) -> Verdict {
        Verdict::Delivered
    }
}

/// An HTTP sink with its client.
pub struct HttpDelivery {
    sink: Box<dyn HttpSink>,
    client: reqwest::Client,
    gzip: bool,
    authorization: Option<HeaderValue>,
}

impl HttpDelivery {
    /// The client for `sink` with its `http` options (reads the secret files now).
    pub fn new(
        sink: Box<dyn HttpSink>,
        http: &HttpSettings,
        retry: &RetrySettings,
    ) -> anyhow::Result<HttpDelivery> {
        crate::http::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(retry.request_timeout_ms.max(1)))
            .connect_timeout(Duration::from_millis(retry.request_timeout_ms.max(1)))
            .user_agent(concat!("todo-sidecar/", env!("CARGO_PKG_VERSION")));
        if let Some(ca_file) = &http.ca_file {
            let pem = fs::read(ca_file)
                .with_context(|| format!("Failed to read the CA file {}", ca_file.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("Failed to parse the CA file {}", ca_file.display()))?;
            builder = builder.tls_certs_merge(certificates);
        }
        let client = builder.build().context("Failed to build the HTTP client")?;
        let authorization = Credentials {
            auth: http.auth,
            token_file: http.token_file.as_deref(),
            username: http.username.as_deref(),
            password_file: http.password_file.as_deref(),
        }
        .header()?;
        Ok(HttpDelivery {
            sink,
            client,
            gzip: http.gzip,
            authorization,
        })
    }

    async fn deliver(
        &self,
        events: &[Event],
        context: &DeliveryContext<'_>,
    ) -> Result<(), Stopped> {
        let name = self.sink.name();
        let mut pending: Vec<&Event> = events.iter().collect();
        let mut backoff = Backoff::new(
            Duration::from_millis(context.retry.initial_backoff_ms),
            Duration::from_millis(context.retry.max_backoff_ms),
        );
        loop {
            let attempt = {
                let mut give_up = context.give_up.clone();
                tokio::select! {
                    biased;
                    _ = give_up.requested() => return Err(Stopped),
                    verdict = self.attempt(&pending) => verdict,
                }
            };
            let (reason, retry_after) = match attempt {
                Ok(Verdict::Delivered) => {
                    count_shipped(context, name, pending.len());
                    return Ok(());
                }
                Ok(Verdict::Reject { reason }) => {
                    tracing::warn!(sink = name, lines = pending.len(), reason = %reason, "the sink refused a batch; dead-lettering it");
                    context.failures(name, "rejected");
                    context
                        .dead_letter
                        .write(name, &reason, &pending, context.metrics);
                    return Ok(());
                }
                Ok(Verdict::PartiallyRejected { rejected, reason }) => {
                    tracing::warn!(sink = name, lines = pending.len(), rejected, reason = %reason, "the sink refused part of a batch without saying which lines; dead-lettering the batch");
                    count_shipped(context, name, pending.len() - rejected);
                    context.failures(name, "partial_success");
                    context
                        .dead_letter
                        .write(name, &reason, &pending, context.metrics);
                    return Ok(());
                }
                Ok(Verdict::Partial { retry, reject }) => {
                    let delivered = pending.len() - retry.len() - reject.len();
                    count_shipped(context, name, delivered);
                    if !reject.is_empty() {
                        context.failures(name, "rejected");
                        for (index, reason) in &reject {
                            context.dead_letter.write(
                                name,
                                reason,
                                &[pending[*index]],
                                context.metrics,
                            );
                        }
                    }
                    if retry.is_empty() {
                        return Ok(());
                    }
                    pending = retry.iter().map(|&index| pending[index]).collect();
                    ("item_retryable", None)
                }
                Ok(Verdict::Retry { reason }) => (reason, None),
                Err(Failure {
                    reason,
                    retry_after,
                    message,
                }) => {
                    tracing::warn!(sink = name, reason, error = %message, "sending a batch failed; retrying");
                    (reason, retry_after)
                }
            };
            context.failures(name, reason);
            context.health.set(ComponentHealth::Degraded {
                message: format!("{name}: {reason}; retrying"),
            });
            let wait = backoff.next(retry_after);
            let mut give_up = context.give_up.clone();
            let mut shutdown = context.shutdown.clone();
            let draining = shutdown.is_requested();
            tokio::select! {
                biased;
                _ = give_up.requested() => return Err(Stopped),
                // SIGTERM ends this wait: the drain is short, and the sink
                // may be back already (restarted in the same rollout).
                _ = shutdown.requested(), if !draining => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn attempt(&self, events: &[&Event]) -> Result<Verdict, Failure> {
        let body = self.sink.encode(events).map_err(|error| Failure {
            reason: "encode",
            retry_after: None,
            message: format!("{error:#}"),
        })?;
        let mut request = self
            .client
            .post(self.sink.url())
            .headers(self.sink.headers())
            .header(reqwest::header::CONTENT_TYPE, body.content_type);
        if let Some(authorization) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization.clone());
        }
        request = if self.gzip {
            request
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .body(gzip(&body.bytes))
        } else {
            request.body(body.bytes)
        };
        let response = request.send().await.map_err(|error| Failure {
            reason: if error.is_timeout() {
                "timeout"
            } else {
                "connection"
            },
            retry_after: None,
            message: error.to_string(),
        })?;
        let status = response.status();
        let retry_after = crate::http::retry_after(&response);
        let answer = response.bytes().await.map_err(|error| Failure {
            reason: "connection",
            retry_after: None,
            message: format!("reading the answer: {error}"),
        })?;
        let excerpt = || String::from_utf8_lossy(&answer[..answer.len().min(512)]).into_owned();
        if status.is_success() {
            return Ok(self.sink.classify_success(&answer, events.len()));
        }
        if status.as_u16() == 429 {
            return Err(Failure {
                reason: "rate_limited",
                retry_after,
                message: format!("{status}: {}", excerpt()),
            });
        }
        if status.is_server_error() || status.as_u16() == 408 {
            return Err(Failure {
                reason: "server_error",
                retry_after,
                message: format!("{status}: {}", excerpt()),
            });
        }
        // Refused credentials or a wrong address say nothing about the
        // lines: a rotated Secret or a misrouted proxy would otherwise send
        // all traffic to the dead-letter file. Retried, like a sink outage,
        // until an operator fixes it (health says why).
        if matches!(status.as_u16(), 401 | 403 | 407) {
            return Err(Failure {
                reason: "unauthorized",
                retry_after,
                message: format!("{status}: {}", excerpt()),
            });
        }
        if status.as_u16() == 404 {
            return Err(Failure {
                reason: "not_found",
                retry_after,
                message: format!("{status}: {}", excerpt()),
            });
        }
        Ok(Verdict::Reject {
            reason: format!("{status}: {}", excerpt()),
        })
    }
}

fn count_shipped(context: &DeliveryContext<'_>, sink: &str, lines: usize) {
    context
        .metrics
        .lines_shipped_total
        .with_label_values(&[sink])
        .inc_by(lines as u64);
}

impl DeliveryContext<'_> {
    fn failures(&self, sink: &str, reason: &str) {
        self.metrics
            .failures_total
            .with_label_values(&[sink, reason])
            .inc();
    }
}

struct Failure {
    reason: &'static str,
    retry_after: Option<Duration>,
    message: String,
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::fast());
    encoder
        .write_all(bytes)
        .expect("writing into a Vec cannot fail");
    encoder.finish().expect("writing into a Vec cannot fail")
}

/// The dead-letter file: one JSON object per refused line
/// (`{"time","sink","reason","line"}`), bounded in size.
pub struct DeadLetter {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<Option<(File, u64)>>,
}

impl DeadLetter {
    /// The dead-letter file of the settings (opened on first use).
    pub fn new(settings: &DeadLetterSettings) -> DeadLetter {
        DeadLetter {
            path: settings.path.clone(),
            max_bytes: settings.max_bytes.max(1),
            file: Mutex::new(None),
        }
    }

    /// Appends `events` refused by `sink` for `reason`, and counts them.
    /// Never fails: a dead-letter file that cannot be written is logged and
    /// counted, and the pipeline goes on.
    pub fn write(&self, sink: &str, reason: &str, events: &[&Event], metrics: &LogshipMetrics) {
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut records = Vec::new();
        for event in events {
            let record = serde_json::json!({
                "time": time,
                "sink": sink,
                "reason": reason,
                "line": event.text,
            });
            serde_json::to_writer(&mut records, &record).expect("JSON into a Vec");
            records.push(b'\n');
        }
        match self.append(&records) {
            Ok(written) => {
                metrics
                    .dead_lettered_total
                    .with_label_values(&[sink])
                    .inc_by(written as u64);
                if written < events.len() {
                    tracing::error!(path = %self.path.display(), written, dropped = events.len() - written, "the refused lines do not fit in the dead-letter file's bound; the rest are dropped");
                    metrics
                        .failures_total
                        .with_label_values(&[sink, "dead_letter_overflow"])
                        .inc();
                }
            }
            Err(error) => {
                tracing::error!(path = %self.path.display(), error = %format!("{error:#}"), lines = events.len(), "cannot write the dead-letter file; the refused lines are dropped");
                metrics
                    .failures_total
                    .with_label_values(&[sink, "dead_letter_write"])
                    .inc();
            }
        }
    }

    /// Appends whole records, as many as fit; returns how many were written.
    fn append(&self, records: &[u8]) -> anyhow::Result<usize> {
        let mut guard = self.file.lock().expect("never poisoned");
        if guard.is_none() {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("Failed to open {}", self.path.display()))?;
            let size = file.metadata()?.len();
            *guard = Some((file, size));
        }
        let (_, size) = guard.as_ref().expect("opened above");
        if *size > 0 && size + records.len() as u64 > self.max_bytes {
            // Keep one previous file: bounded at twice max_bytes.
            let mut previous = self.path.as_os_str().to_owned();
            previous.push(".1");
            fs::rename(&self.path, PathBuf::from(previous))
                .context("Failed to rotate the dead-letter file")?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("Failed to open {}", self.path.display()))?;
            *guard = Some((file, 0));
        }
        let (file, size) = guard.as_mut().expect("opened above");
        // Records beyond the bound (a huge batch refused at once) are left
        // out whole, so that every line in the file stays valid JSON.
        let room = self.max_bytes.saturating_sub(*size) as usize;
        let records = if records.len() <= room {
            records
        } else {
            let fits = records[..room].iter().rposition(|&byte| byte == b'\n');
            &records[..fits.map_or(0, |newline| newline + 1)]
        };
        file.write_all(records)?;
        *size += records.len() as u64;
        Ok(records.iter().filter(|&&byte| byte == b'\n').count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logship::source::Line;

    fn event(text: &str) -> Event {
        Event::from_line(&Line {
            path_index: 0,
            bytes: text.as_bytes().to_vec(),
            original_len: text.len(),
            end_offset: 0,
            file_id: [0; 16],
        })
    }

    #[test]
    fn the_dead_letter_file_is_bounded_and_every_record_stays_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.ndjson");
        let dead_letter = DeadLetter::new(&DeadLetterSettings {
            path: path.clone(),
            max_bytes: 1000,
        });
        let metrics = LogshipMetrics::new();
        let events: Vec<Event> = (0..40)
            .map(|n| event(&format!("poison line {n:03}")))
            .collect();

        for chunk in events.chunks(4) {
            let refs: Vec<&Event> = chunk.iter().collect();
            dead_letter.write("loki", "400 Bad Request", &refs, &metrics);
        }

        let current = fs::read_to_string(&path).unwrap();
        let previous = fs::read_to_string(dir.path().join("dead.ndjson.1")).unwrap();
        assert!(current.len() <= 1000 && previous.len() <= 1000);
        let mut lines: Vec<String> = previous
            .lines()
            .chain(current.lines())
            .map(|record| {
                let record: serde_json::Value = serde_json::from_str(record).unwrap();
                assert_eq!(record["sink"], "loki");
                assert_eq!(record["reason"], "400 Bad Request");
                record["line"].as_str().unwrap().to_string()
            })
            .collect();
        // The newest records are kept, in order, and all are counted.
        lines.dedup();
        assert_eq!(lines.last().unwrap(), "poison line 039");
        assert!(lines.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(
            metrics
                .dead_lettered_total
                .with_label_values(&["loki"])
                .get(),
            40
        );
    }

    #[test]
    fn dead_letters_that_do_not_fit_are_counted_as_dropped_not_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.ndjson");
        let dead_letter = DeadLetter::new(&DeadLetterSettings {
            path: path.clone(),
            max_bytes: 300,
        });
        let metrics = LogshipMetrics::new();
        let events: Vec<Event> = (0..10)
            .map(|n| event(&format!("poison line {n:03}")))
            .collect();
        let refs: Vec<&Event> = events.iter().collect();

        dead_letter.write("loki", "413 Payload Too Large", &refs, &metrics);

        let written = fs::read_to_string(&path).unwrap().lines().count();
        assert!(written > 0 && written < 10, "{written} records fit");
        assert_eq!(
            metrics
                .dead_lettered_total
                .with_label_values(&["loki"])
                .get(),
            written as u64
        );
        assert_eq!(
            metrics
                .failures_total
                .with_label_values(&["loki", "dead_letter_overflow"])
                .get(),
            1
        );
    }
}
