//! What the HTTP sinks share: their `http` settings section, one client per
//! sink (timeouts, gzip, bearer or basic auth from a mounted secret file,
//! extra CA certificates), and the delivery of a batch: send, classify the
//! answer, retry (exponential backoff with jitter on connection errors, 401,
//! 403, 404, 407, 408, 429 and 5xx, honouring `Retry-After`) or
//! dead-letter (other 4xx). A sink only knows its wire format: it encodes
//! events into a body ([`HttpSink::encode`]) and reads a 2xx answer
//! ([`HttpSink::classify_success`]).

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;

// Every HTTP helper of the crate that the sinks use, imported here only.
pub use crate::http::AuthKind;
use crate::http::{
    Backoff, Credentials, StatusClass, classify_status, client_builder,
    retry_after as requested_delay,
};

use super::{DeliveryContext, Sink, Stopped};
use crate::component::ComponentHealth;
use crate::configuration::SettingsError;
use crate::logship::config::RetrySettings;
use crate::logship::event::Event;
use crate::logship::events::{
    DeliveryFailed, FailureReason, LinesRejected, LinesShipped, PartiallyRejected,
};

/// Options shared by the HTTP sinks (`logship.sinks.<sink>.http.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Compress request bodies with gzip.
    pub gzip: bool,
    /// `bearer` (token from `token_file`), `basic` (`username` and
    /// `password_file`), or empty: no authentication.
    pub auth: Option<AuthKind>,
    /// File holding the bearer token (a mounted Secret).
    pub token_file: Option<PathBuf>,
    /// User name for basic authentication.
    pub username: Option<String>,
    /// File holding the basic-auth password (a mounted Secret).
    pub password_file: Option<PathBuf>,
    /// PEM file of extra CA certificates trusted for this sink's TLS.
    pub ca_file: Option<PathBuf>,
}

impl HttpSettings {
    /// Rejects an `auth` without the files it needs; `key` names this
    /// section (`logship.sinks.loki.http`).
    pub fn validate(&self, key: &'static str) -> Result<(), SettingsError> {
        match self.auth {
            Some(AuthKind::Bearer) if self.token_file.is_none() => {
                Err(SettingsError::invalid(key, "auth bearer needs token_file"))
            }
            Some(AuthKind::Basic) if self.username.is_none() || self.password_file.is_none() => {
                Err(SettingsError::invalid(
                    key,
                    "auth basic needs username and password_file",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Rejects a sink URL that is set but not `http://` or `https://` with a
/// host; `key` names it (`logship.sinks.loki.url`).
pub fn validate_url(key: &'static str, url: &Option<String>) -> Result<(), SettingsError> {
    match url {
        Some(url) if !crate::configuration::is_http_url(url) => Err(SettingsError::invalid(
            key,
            "must be an http:// or https:// URL with a host",
        )),
        _ => Ok(()),
    }
}

/// `<base URL><path>`, for the URL a sink posts to.
pub fn endpoint(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
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
        /// Why.
        reason: FailureReason,
    },
    /// Nothing was accepted and trying again cannot help.
    Reject {
        /// The sink's answer, for the log and the dead-letter file.
        answer: String,
    },
    /// Some events were refused, but the answer does not say which (OTLP
    /// `partial_success`): the whole batch is dead-lettered.
    PartiallyRejected {
        /// How many were refused.
        rejected: usize,
        /// The sink's answer, for the log and the dead-letter file.
        answer: String,
    },
    /// Per-event outcome (Elasticsearch `_bulk`): events not listed were accepted.
    Partial {
        /// Indices (into the events sent) to send again.
        retry: Vec<usize>,
        /// Indices refused, with the sink's answer for each.
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

impl Sink {
    /// The HTTP sink `sink` with its `http` options (reads the secret files now).
    pub fn http(
        sink: impl HttpSink + 'static,
        http: &HttpSettings,
        retry: &RetrySettings,
    ) -> anyhow::Result<Sink> {
        Ok(Sink::Http(Box::new(HttpDelivery::new(
            Box::new(sink),
            http,
            retry,
        )?)))
    }
}

impl HttpDelivery {
    /// The client for `sink` with its `http` options (reads the secret files now).
    pub fn new(
        sink: Box<dyn HttpSink>,
        http: &HttpSettings,
        retry: &RetrySettings,
    ) -> anyhow::Result<HttpDelivery> {
        let mut builder = client_builder(
            crate::USER_AGENT,
            Duration::from_millis(retry.request_timeout_ms.max(1)),
        );
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

    /// The `sink` label.
    pub fn name(&self) -> &'static str {
        self.sink.name()
    }

    pub(super) async fn deliver(
        &self,
        events: &[Event],
        context: &DeliveryContext<'_>,
    ) -> Result<(), Stopped> {
        let name = self.sink.name();
        let metrics = context.metrics;
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
            let failure = match attempt {
                Ok(Verdict::Delivered) => {
                    LinesShipped {
                        sink: name,
                        lines: pending.len(),
                    }
                    .emit(metrics);
                    return Ok(());
                }
                Ok(Verdict::Reject { answer }) => {
                    LinesRejected {
                        sink: name,
                        lines: pending.len(),
                        answer: &answer,
                    }
                    .emit(metrics);
                    context.dead_letter.write(name, &answer, &pending, metrics);
                    return Ok(());
                }
                Ok(Verdict::PartiallyRejected { rejected, answer }) => {
                    let lines = pending.len();
                    PartiallyRejected {
                        sink: name,
                        lines,
                        rejected,
                        answer: &answer,
                    }
                    .emit(metrics);
                    LinesShipped {
                        sink: name,
                        lines: lines - rejected,
                    }
                    .emit(metrics);
                    context.dead_letter.write(name, &answer, &pending, metrics);
                    return Ok(());
                }
                Ok(Verdict::Partial { retry, reject }) => {
                    let delivered = pending.len() - retry.len() - reject.len();
                    LinesShipped {
                        sink: name,
                        lines: delivered,
                    }
                    .emit(metrics);
                    if let Some((_, first_answer)) = reject.first() {
                        LinesRejected {
                            sink: name,
                            lines: reject.len(),
                            answer: first_answer,
                        }
                        .emit(metrics);
                        for (index, answer) in &reject {
                            context
                                .dead_letter
                                .write(name, answer, &[pending[*index]], metrics);
                        }
                    }
                    if retry.is_empty() {
                        return Ok(());
                    }
                    pending = retry.iter().map(|&index| pending[index]).collect();
                    Failure {
                        reason: FailureReason::ItemRetryable,
                        retry_after: None,
                        message: format!("{} items answered 429 or 5xx", pending.len()),
                    }
                }
                Ok(Verdict::Retry { reason }) => Failure {
                    reason,
                    retry_after: None,
                    message: "the answer could not be read".to_string(),
                },
                Err(failure) => failure,
            };
            DeliveryFailed {
                sink: name,
                reason: failure.reason,
                error: &failure.message,
            }
            .emit(metrics);
            context.health.set(ComponentHealth::Degraded {
                message: format!("{name}: {}; retrying", failure.reason),
            });
            let wait = backoff.next(failure.retry_after);
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
            reason: FailureReason::Encode,
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
                FailureReason::Timeout
            } else {
                FailureReason::Connection
            },
            retry_after: None,
            // Without the URL, which may hold a credential (`?api_key=`).
            message: crate::http::describe_error(error),
        })?;
        let status = response.status();
        let retry_after = requested_delay(&response);
        let answer = response.bytes().await.map_err(|error| Failure {
            reason: FailureReason::Connection,
            retry_after: None,
            message: format!("reading the answer: {}", crate::http::describe_error(error)),
        })?;
        let excerpt = || String::from_utf8_lossy(&answer[..answer.len().min(512)]).into_owned();
        let reason = match classify_status(status) {
            StatusClass::Success => return Ok(self.sink.classify_success(&answer, events.len())),
            StatusClass::RateLimited => FailureReason::RateLimited,
            StatusClass::ServerError => FailureReason::ServerError,
            // Refused credentials or a wrong address say nothing about the
            // lines: a rotated Secret or a misrouted proxy would otherwise send
            // all traffic to the dead-letter file. Retried, like a sink outage,
            // until an operator fixes it (health says why).
            StatusClass::Unauthorized => FailureReason::Unauthorized,
            StatusClass::NotFound => FailureReason::NotFound,
            StatusClass::Rejected => {
                return Ok(Verdict::Reject {
                    answer: format!("{status}: {}", excerpt()),
                });
            }
        };
        Err(Failure {
            reason,
            retry_after,
            message: format!("{status}: {}", excerpt()),
        })
    }
}

/// A failed attempt, to be retried.
struct Failure {
    reason: FailureReason,
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
