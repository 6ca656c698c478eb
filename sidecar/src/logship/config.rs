//! The `logship` section of the settings: which files to tail, where the
//! checkpoint lives, how lines are batched and retried, the dead-letter file,
//! and one sub-section per sink.
//!
//! Re-exported by `crate::configuration`. The component runs when `paths` is
//! not empty: the chart sets the paths exactly when it gives the app a log
//! file, so a separate `enabled` flag could only disagree with them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::configuration::SettingsError;

/// Log shipping (`logship.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogshipSettings {
    /// The live log files to tail (`/var/log/todo/app.log`); their rotated
    /// siblings (`app.log.1`, …) are found by name. Empty: no log shipping.
    /// As a variable, comma-separated.
    #[serde(deserialize_with = "paths_from_list_or_string")]
    pub paths: Vec<PathBuf>,
    /// The checkpoint file (fingerprint and acknowledged offset per path).
    pub checkpoint_path: PathBuf,
    /// Where to start a file that no checkpoint covers (first start, or a
    /// missing or corrupt checkpoint): `beginning` or `end`.
    pub start_at: StartAt,
    /// A longer line is cut to this many bytes and marked as truncated.
    pub max_line_bytes: usize,
    /// A file is identified by a hash of its first bytes, up to this many.
    pub fingerprint_bytes: usize,
    /// How often files are looked at again once everything was read.
    pub poll_interval_ms: u64,
    /// How many rotated siblings (`app.log.1` … `app.log.N`) are looked at
    /// after a rotation or a restart; at least the app's `log.max_files`.
    pub max_rotated_files: usize,
    /// Batching of lines into one request per sink.
    pub batch: BatchSettings,
    /// Retries of retryable failures (connection errors, 429, 5xx).
    pub retry: RetrySettings,
    /// Where batches refused by a sink (other 4xx) go.
    pub dead_letter: DeadLetterSettings,
    /// On SIGTERM, how long shipping goes on draining: every file is read
    /// to its end (the last unterminated line too), sinks are retried, the
    /// checkpoint is written. What is not shipped by then is counted and
    /// logged. 0: stop at once. The pod's grace period must cover it.
    pub drain_timeout_seconds: u64,
    /// The sinks; each one that is configured gets every line.
    pub sinks: SinksSettings,
}

/// Where a file without a checkpoint is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// From its first byte: nothing is missed, old lines may be shipped again.
    Beginning,
    /// From its current end: only lines written from now on.
    End,
}

/// Batching (`logship.batch.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    /// A batch is sent once it holds this many lines...
    pub max_lines: usize,
    /// ...or this many bytes of lines...
    pub max_bytes: usize,
    /// ...or its oldest line has waited this long.
    pub timeout_ms: u64,
}

/// Retries (`logship.retry.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// First wait after a retryable failure; doubled after each one.
    pub initial_backoff_ms: u64,
    /// The wait never grows beyond this (a `Retry-After` may ask for longer,
    /// up to ten times this).
    pub max_backoff_ms: u64,
    /// One request (connect, send, answer) must finish within this.
    pub request_timeout_ms: u64,
}

/// The dead-letter file (`logship.dead_letter.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSettings {
    /// One JSON object per refused line. When it would grow past
    /// `max_bytes` it is renamed to `<path>.1` (replacing the previous one),
    /// so at most twice `max_bytes` are kept.
    pub path: PathBuf,
    /// Size bound of the dead-letter file.
    pub max_bytes: u64,
}

/// The sinks (`logship.sinks.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksSettings {
    /// Lines to the sidecar's stdout.
    pub stdout: StdoutSettings,
    /// Grafana Loki's push API.
    pub loki: LokiSettings,
    /// Elasticsearch or OpenSearch `_bulk`.
    pub elasticsearch: ElasticsearchSettings,
    /// An OpenTelemetry collector (OTLP/HTTP, protobuf).
    pub otlp: OtlpSettings,
}

/// The stdout sink (`logship.sinks.stdout.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSettings {
    /// Write every line, as read, to stdout (which the sidecar shares with
    /// its own logs; for debugging and for clusters that collect stdout).
    pub enabled: bool,
}

/// Loki (`logship.sinks.loki.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiSettings {
    /// Base URL (`http://loki:3100`); `/loki/api/v1/push` is appended. Empty: off.
    #[serde(default, deserialize_with = "crate::configuration::empty_is_none")]
    pub url: Option<String>,
    /// Labels set on every stream (`app`, `namespace`, `pod`…). Keep them
    /// few and of low cardinality: never request or trace ids.
    pub labels: BTreeMap<String, String>,
    /// Add a `level` label from the bunyan level (`info`, `error`…).
    pub level_label: bool,
    /// `X-Scope-OrgID` (multi-tenant Loki); empty: not sent.
    #[serde(default, deserialize_with = "crate::configuration::empty_is_none")]
    pub tenant_id: Option<String>,
    /// HTTP options.
    pub http: HttpSettings,
}

/// Elasticsearch / OpenSearch (`logship.sinks.elasticsearch.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSettings {
    /// Base URL (`https://es:9200`); `/_bulk` is appended. Empty: off.
    #[serde(default, deserialize_with = "crate::configuration::empty_is_none")]
    pub url: Option<String>,
    /// Index name, with strftime fields (`%Y`, `%m`, `%d`) taken from each
    /// line's `time` (UTC): `todo-logs-%Y.%m.%d`.
    pub index: String,
    /// HTTP options.
    pub http: HttpSettings,
}

/// OTLP/HTTP logs (`logship.sinks.otlp.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSettings {
    /// Base URL (`http://otel-collector:4318`); `/v1/logs` is appended. Empty: off.
    #[serde(default, deserialize_with = "crate::configuration::empty_is_none")]
    pub url: Option<String>,
    /// The `service.name` resource attribute of the records.
    pub service_name: String,
    /// HTTP options.
    pub http: HttpSettings,
}

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

pub use crate::http::AuthKind;

/// Label names that would make one stream per request: refused for Loki.
const HIGH_CARDINALITY_LABELS: &[&str] = &[
    "request_id",
    "trace_id",
    "span_id",
    "msg",
    "message",
    "time",
    "owner",
    "latency",
    "uri",
    "path",
];

impl LogshipSettings {
    /// Whether `run` starts the log shipper.
    pub fn enabled(&self) -> bool {
        !self.paths.is_empty()
    }

    /// How long draining goes on after SIGTERM.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_seconds)
    }

    /// Poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(1))
    }

    /// Rejects values that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !self.enabled() {
            return Ok(());
        }
        let sinks = &self.sinks;
        if !sinks.stdout.enabled
            && sinks.loki.url.is_none()
            && sinks.elasticsearch.url.is_none()
            && sinks.otlp.url.is_none()
        {
            return Err(SettingsError::invalid(
                "logship.sinks",
                "needs at least one sink (stdout.enabled, loki.url, elasticsearch.url or otlp.url) when logship.paths is set",
            ));
        }
        for (key, url) in [
            ("logship.sinks.loki.url", &sinks.loki.url),
            ("logship.sinks.elasticsearch.url", &sinks.elasticsearch.url),
            ("logship.sinks.otlp.url", &sinks.otlp.url),
        ] {
            if let Some(url) = url
                && !crate::configuration::is_http_url(url)
            {
                return Err(SettingsError::invalid(
                    key,
                    "must be an http:// or https:// URL with a host",
                ));
            }
        }
        if self.max_line_bytes < 64 {
            return Err(SettingsError::invalid(
                "logship.max_line_bytes",
                "must be at least 64",
            ));
        }
        if self.fingerprint_bytes < 16 {
            return Err(SettingsError::invalid(
                "logship.fingerprint_bytes",
                "must be at least 16",
            ));
        }
        if self.batch.max_lines == 0 || self.batch.max_bytes == 0 {
            return Err(SettingsError::invalid(
                "logship.batch",
                "max_lines and max_bytes must be at least 1",
            ));
        }
        if self.retry.request_timeout_ms == 0 {
            return Err(SettingsError::invalid(
                "logship.retry.request_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.dead_letter.max_bytes < 4096 {
            return Err(SettingsError::invalid(
                "logship.dead_letter.max_bytes",
                "must be at least 4096 (smaller keeps no refused line)",
            ));
        }
        if self.retry.initial_backoff_ms == 0
            || self.retry.max_backoff_ms < self.retry.initial_backoff_ms
        {
            return Err(SettingsError::invalid(
                "logship.retry",
                "initial_backoff_ms must be at least 1 and at most max_backoff_ms",
            ));
        }
        for name in sinks.loki.labels.keys() {
            if HIGH_CARDINALITY_LABELS.contains(&name.as_str()) {
                return Err(SettingsError::invalid(
                    "logship.sinks.loki.labels",
                    format!("must not hold the high-cardinality label `{name}`"),
                ));
            }
        }
        if sinks.loki.labels.len() > 8 {
            return Err(SettingsError::invalid(
                "logship.sinks.loki.labels",
                "holds more than 8 labels",
            ));
        }
        for (key, http) in [
            ("logship.sinks.loki.http", &sinks.loki.http),
            (
                "logship.sinks.elasticsearch.http",
                &sinks.elasticsearch.http,
            ),
            ("logship.sinks.otlp.http", &sinks.otlp.http),
        ] {
            match http.auth {
                Some(AuthKind::Bearer) if http.token_file.is_none() => {
                    return Err(SettingsError::invalid(key, "auth bearer needs token_file"));
                }
                Some(AuthKind::Basic)
                    if http.username.is_none() || http.password_file.is_none() =>
                {
                    return Err(SettingsError::invalid(
                        key,
                        "auth basic needs username and password_file",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `paths` as a YAML list, or as one comma-separated string (a variable).
fn paths_from_list_or_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Paths {
        List(Vec<String>),
        One(String),
    }
    let list = match Paths::deserialize(deserializer)? {
        Paths::List(list) => list,
        Paths::One(text) => text.split(',').map(str::to_string).collect(),
    };
    Ok(list
        .iter()
        .map(|path| path.trim())
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::configuration::load_for_test as load;

    #[test]
    fn log_shipping_is_off_by_default() {
        let settings = load(&[]).unwrap();
        assert!(!settings.logship.enabled());
    }

    #[test]
    fn paths_come_comma_separated_from_a_variable() {
        let settings = load(&[
            ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log, /logs/other.log"),
            ("SIDECAR__LOGSHIP__SINKS__STDOUT__ENABLED", "true"),
        ])
        .unwrap();
        assert!(settings.logship.enabled());
        assert_eq!(
            settings.logship.paths,
            vec![
                std::path::PathBuf::from("/logs/app.log"),
                std::path::PathBuf::from("/logs/other.log")
            ]
        );
    }

    #[test]
    fn an_empty_sink_url_is_off_and_a_url_without_scheme_is_refused() {
        let error = load(&[
            ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
            ("SIDECAR__LOGSHIP__SINKS__LOKI__URL", ""),
        ])
        .unwrap_err();
        assert!(
            error.contains("needs at least one sink"),
            "empty is off: {error}"
        );
        let settings = load(&[
            ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
            ("SIDECAR__LOGSHIP__SINKS__STDOUT__ENABLED", "true"),
            ("SIDECAR__LOGSHIP__SINKS__OTLP__URL", " "),
            ("SIDECAR__LOGSHIP__SINKS__LOKI__TENANT_ID", ""),
        ])
        .unwrap();
        assert_eq!(settings.logship.sinks.otlp.url, None);
        assert_eq!(settings.logship.sinks.loki.tenant_id, None);
        for sink in ["LOKI", "ELASTICSEARCH", "OTLP"] {
            let variable = format!("SIDECAR__LOGSHIP__SINKS__{sink}__URL");
            let error = load(&[
                ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
                (variable.as_str(), "loki:3100"),
            ])
            .unwrap_err();
            let key = format!("logship.sinks.{}.url", sink.to_lowercase());
            assert!(error.contains(&key), "{error}");
        }
    }

    #[test]
    fn values_that_would_lose_every_line_name_their_key() {
        for (variable, value, key) in [
            (
                "SIDECAR__LOGSHIP__RETRY__REQUEST_TIMEOUT_MS",
                "0",
                "logship.retry.request_timeout_ms",
            ),
            (
                "SIDECAR__LOGSHIP__DEAD_LETTER__MAX_BYTES",
                "0",
                "logship.dead_letter.max_bytes",
            ),
        ] {
            let error = load(&[
                ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
                ("SIDECAR__LOGSHIP__SINKS__STDOUT__ENABLED", "true"),
                (variable, value),
            ])
            .unwrap_err();
            assert!(error.contains(key), "{error}");
        }
    }

    #[test]
    fn paths_without_a_sink_are_refused() {
        let error = load(&[("SIDECAR__LOGSHIP__PATHS", "/logs/app.log")]).unwrap_err();
        assert!(error.contains("logship.sinks"), "{error}");
    }

    #[test]
    fn a_high_cardinality_loki_label_is_refused() {
        let error = load(&[
            ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
            ("SIDECAR__LOGSHIP__SINKS__LOKI__URL", "http://loki:3100"),
            ("SIDECAR__LOGSHIP__SINKS__LOKI__LABELS__REQUEST_ID", "x"),
        ])
        .unwrap_err();
        assert!(error.contains("request_id"), "{error}");
    }

    #[test]
    fn bearer_auth_without_a_token_file_is_refused() {
        let error = load(&[
            ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
            ("SIDECAR__LOGSHIP__SINKS__LOKI__URL", "http://loki:3100"),
            ("SIDECAR__LOGSHIP__SINKS__LOKI__HTTP__AUTH", "bearer"),
        ])
        .unwrap_err();
        assert!(error.contains("token_file"), "{error}");
    }

    #[test]
    fn an_unknown_logship_key_is_refused_with_its_name() {
        let error = load(&[("SIDECAR__LOGSHIP__BATCH__MAX_LINEZ", "5")]).unwrap_err();
        assert!(error.contains("max_linez"), "{error}");
    }
}
