//! Loki's settings section (`logship.sinks.loki.*`) and its validation.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::LokiSink;
use crate::configuration::SettingsError;
use crate::logship::config::RetrySettings;
use crate::logship::sinks::http::{HttpSettings, validate_url};
use crate::logship::sinks::{Sink, SinkConfig};

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

/// Label names that would make one stream per request: refused.
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

/// More static labels than this is a sign of labels that should be fields.
const MAX_LABELS: usize = 8;

impl SinkConfig for LokiSettings {
    fn switch(&self) -> &'static str {
        "url"
    }

    fn enabled(&self) -> bool {
        self.url.is_some()
    }

    fn validate(&self) -> Result<(), SettingsError> {
        validate_url("logship.sinks.loki.url", &self.url)?;
        for name in self.labels.keys() {
            if HIGH_CARDINALITY_LABELS.contains(&name.as_str()) {
                return Err(SettingsError::invalid(
                    "logship.sinks.loki.labels",
                    format!("must not hold the high-cardinality label `{name}`"),
                ));
            }
        }
        if self.labels.len() > MAX_LABELS {
            return Err(SettingsError::invalid(
                "logship.sinks.loki.labels",
                "holds more than 8 labels",
            ));
        }
        self.http.validate("logship.sinks.loki.http")
    }

    fn build(&self, retry: &RetrySettings) -> anyhow::Result<Sink> {
        Sink::http(LokiSink::new(self)?, &self.http, retry)
    }
}
