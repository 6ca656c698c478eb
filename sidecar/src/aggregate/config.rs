//! The `aggregate` section of the settings: where the app's metrics are,
//! how long a scrape may take and be reused, the aggregation rules, the
//! cardinality guard, the database gauges and the optional remote_write.
//!
//! Re-exported by `crate::configuration`; [`AggregateSettings::validate`]
//! compiles the rules so an invalid one stops start-up with its reason.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::rules::RuleSet;
pub use super::rules::RuleSettings;
use crate::configuration::SettingsError;

/// Metric aggregation (`aggregate.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSettings {
    /// Whether `run` serves the app's metrics (aggregated) and the database
    /// gauges on its own `/metrics`. Off: only the sidecar's own metrics.
    pub enabled: bool,
    /// The app's metrics endpoint (its admin listener).
    pub app_metrics_url: String,
    /// One scrape of the app (connect, answer and body) must finish within
    /// this; the database gauges get the same deadline.
    pub scrape_timeout_ms: u64,
    /// A scrape result is reused for this long, so two Prometheus replicas
    /// (or Prometheus and remote_write) do not each scrape the app.
    pub cache_ttl_ms: u64,
    /// An app answer larger than this is refused (a runaway exposition must
    /// not exhaust the sidecar's memory).
    pub max_body_bytes: usize,
    /// At most this many app series (each bucket, quantile, `_sum` and
    /// `_count` line counts as one) are exposed after the rules; the excess
    /// is dropped and counted in `todo_aggregation_series_dropped_total`.
    pub max_series: usize,
    /// Whether to read the database gauges (`todo_pg_*`, `todo_todos`).
    pub database_gauges: bool,
    /// `statement_timeout` of the sidecar's database session for the gauges.
    pub database_statement_timeout_ms: u64,
    /// Aggregation rules, applied in order of the metric they name (one rule
    /// per metric); see docs/aggregation.md for the syntax.
    /// Parsed and compiled when the settings load: a rule that cannot give a
    /// correct result stops start-up, naming the rule and the field.
    pub rules: RuleSet,
    /// Optional push of the exposed series to a Prometheus remote_write endpoint.
    pub remote_write: RemoteWriteSettings,
}

/// Prometheus remote_write (`aggregate.remote_write.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteSettings {
    /// The receiver, e.g. `http://prometheus:9090/api/v1/write`; none or empty: off.
    #[serde(default, deserialize_with = "crate::configuration::empty_is_none")]
    pub url: Option<String>,
    /// A snapshot of every exposed series is queued this often.
    pub interval_seconds: u64,
    /// One push request must complete within this.
    pub timeout_ms: u64,
    /// Retries of a request that failed with a network error, a 5xx or a 429.
    pub max_retries: u32,
    /// First retry delay, doubled at each retry up to `max_backoff_ms`.
    pub min_backoff_ms: u64,
    /// Longest retry delay.
    pub max_backoff_ms: u64,
    /// At most this many samples per request.
    pub max_samples_per_request: usize,
    /// At most this many samples wait to be sent; when a new snapshot does
    /// not fit, the oldest are dropped (and counted) first.
    pub max_queued_samples: usize,
    /// Labels added to every pushed series (nothing scrapes the pod to add
    /// `job` and `instance`); `job` defaults to `todo-backend` and
    /// `instance` to the host name (the pod name in Kubernetes).
    pub labels: BTreeMap<String, String>,
    /// `bearer` (token from `token_file`), `basic` (`username` and
    /// `password_file`), or empty: none (or user and password in the URL).
    pub auth: Option<crate::http::AuthKind>,
    /// File holding the bearer token (a mounted Secret), read at start.
    pub token_file: Option<std::path::PathBuf>,
    /// User name for basic authentication.
    pub username: Option<String>,
    /// File holding the basic-auth password (a mounted Secret), read at start.
    pub password_file: Option<std::path::PathBuf>,
}

impl AggregateSettings {
    /// Rejects values that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(self.app_metrics_url.starts_with("http://")
            || self.app_metrics_url.starts_with("https://"))
        {
            return Err(SettingsError::invalid(
                "aggregate.app_metrics_url",
                "must be an http:// or https:// URL",
            ));
        }
        if self.scrape_timeout_ms == 0 {
            return Err(SettingsError::invalid(
                "aggregate.scrape_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(SettingsError::invalid(
                "aggregate.max_body_bytes",
                "must be at least 1",
            ));
        }
        if self.max_series == 0 {
            return Err(SettingsError::invalid(
                "aggregate.max_series",
                "must be at least 1",
            ));
        }
        if self.database_statement_timeout_ms == 0 {
            return Err(SettingsError::invalid(
                "aggregate.database_statement_timeout_ms",
                "must be at least 1 (0 would mean no timeout)",
            ));
        }
        let remote = &self.remote_write;
        if let Some(url) = &remote.url
            && !crate::configuration::is_http_url(url)
        {
            return Err(SettingsError::invalid(
                "aggregate.remote_write.url",
                "must be an http:// or https:// URL",
            ));
        }
        if remote.interval_seconds == 0 {
            return Err(SettingsError::invalid(
                "aggregate.remote_write.interval_seconds",
                "must be at least 1",
            ));
        }
        if remote.max_samples_per_request == 0 {
            return Err(SettingsError::invalid(
                "aggregate.remote_write.max_samples_per_request",
                "must be at least 1",
            ));
        }
        if remote.max_queued_samples < remote.max_samples_per_request {
            return Err(SettingsError::invalid(
                "aggregate.remote_write.max_queued_samples",
                "must be at least max_samples_per_request",
            ));
        }
        if remote.min_backoff_ms == 0 {
            return Err(SettingsError::invalid(
                "aggregate.remote_write.min_backoff_ms",
                "must be at least 1",
            ));
        }
        if remote.max_backoff_ms < remote.min_backoff_ms {
            return Err(SettingsError::invalid(
                "aggregate.remote_write.max_backoff_ms",
                "must be at least min_backoff_ms",
            ));
        }
        if remote.timeout_ms == 0 {
            return Err(SettingsError::invalid(
                "aggregate.remote_write.timeout_ms",
                "must be at least 1",
            ));
        }
        match remote.auth {
            Some(crate::http::AuthKind::Bearer) if remote.token_file.is_none() => {
                return Err(SettingsError::invalid(
                    "aggregate.remote_write.token_file",
                    "must be set with auth bearer",
                ));
            }
            Some(crate::http::AuthKind::Basic)
                if remote.username.is_none() || remote.password_file.is_none() =>
            {
                return Err(SettingsError::invalid(
                    "aggregate.remote_write.password_file",
                    "auth basic needs username and password_file",
                ));
            }
            _ => {}
        }
        for name in remote.labels.keys() {
            if !super::exposition::is_label_name(name) || name.starts_with("__") {
                return Err(SettingsError::invalid(
                    "aggregate.remote_write.labels",
                    format!("`{name}` is not a valid label name"),
                ));
            }
        }
        Ok(())
    }

    /// Deadline of one app scrape (and of one read of the database gauges).
    pub fn scrape_timeout(&self) -> Duration {
        Duration::from_millis(self.scrape_timeout_ms)
    }

    /// How long a scrape result is reused.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_millis(self.cache_ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use crate::configuration::load_for_test as load;

    #[test]
    fn aggregate_an_empty_remote_write_url_is_off_and_zero_values_name_their_key() {
        let settings =
            load(&[("SIDECAR__AGGREGATE__REMOTE_WRITE__URL", "")]).expect("empty is off");
        assert_eq!(settings.aggregate.remote_write.url, None);
        for (variable, key) in [
            (
                "SIDECAR__AGGREGATE__REMOTE_WRITE__MIN_BACKOFF_MS",
                "aggregate.remote_write.min_backoff_ms",
            ),
            (
                "SIDECAR__AGGREGATE__REMOTE_WRITE__TIMEOUT_MS",
                "aggregate.remote_write.timeout_ms",
            ),
            (
                "SIDECAR__AGGREGATE__MAX_BODY_BYTES",
                "aggregate.max_body_bytes",
            ),
        ] {
            let error = load(&[(variable, "0")]).expect_err(variable).to_string();
            assert!(error.contains(key), "{variable}: {error}");
        }
    }

    #[test]
    fn aggregate_defaults_scrape_the_local_app_with_remote_write_off() {
        let settings = load(&[]).expect("base.yaml is valid");
        let aggregate = settings.aggregate;
        assert!(aggregate.enabled);
        assert_eq!(aggregate.app_metrics_url, "http://127.0.0.1:9000/metrics");
        assert_eq!(aggregate.max_series, 10_000);
        assert!(aggregate.rules.is_empty());
        assert_eq!(aggregate.remote_write.url, None);
    }

    #[test]
    fn aggregate_variables_set_the_urls_and_remote_write_labels() {
        let settings = load(&[
            (
                "SIDECAR__AGGREGATE__APP_METRICS_URL",
                "http://app:9000/metrics",
            ),
            (
                "SIDECAR__AGGREGATE__REMOTE_WRITE__URL",
                "http://prometheus:9090/api/v1/write",
            ),
            (
                "SIDECAR__AGGREGATE__REMOTE_WRITE__LABELS__NAMESPACE",
                "prod",
            ),
        ])
        .expect("valid settings");
        assert_eq!(
            settings.aggregate.app_metrics_url,
            "http://app:9000/metrics"
        );
        assert_eq!(
            settings.aggregate.remote_write.url.as_deref(),
            Some("http://prometheus:9090/api/v1/write")
        );
        assert_eq!(
            settings
                .aggregate
                .remote_write
                .labels
                .get("namespace")
                .map(String::as_str),
            Some("prod")
        );
    }

    #[test]
    fn aggregate_invalid_values_are_rejected_naming_the_key() {
        for (name, value, key) in [
            (
                "SIDECAR__AGGREGATE__APP_METRICS_URL",
                "app:9000",
                "aggregate.app_metrics_url",
            ),
            (
                "SIDECAR__AGGREGATE__MAX_SERIES",
                "0",
                "aggregate.max_series",
            ),
            (
                "SIDECAR__AGGREGATE__REMOTE_WRITE__URL",
                "prometheus:9090",
                "aggregate.remote_write.url",
            ),
            (
                "SIDECAR__AGGREGATE__REMOTE_WRITE__MAX_QUEUED_SAMPLES",
                "10",
                "aggregate.remote_write.max_queued_samples",
            ),
            (
                "SIDECAR__AGGREGATE__SCRAPE_TIMEOUT_MSS",
                "10",
                "scrape_timeout_mss",
            ),
        ] {
            let error = load(&[(name, value)]).expect_err(name);
            assert!(error.contains(key), "{name}: {error}");
        }
    }
}
