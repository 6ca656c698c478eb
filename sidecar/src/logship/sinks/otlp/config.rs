//! The OTLP sink's settings section (`logship.sinks.otlp.*`).

use serde::Deserialize;

use super::OtlpSink;
use crate::configuration::SettingsError;
use crate::logship::config::RetrySettings;
use crate::logship::sinks::http::{HttpSettings, validate_url};
use crate::logship::sinks::{Sink, SinkConfig};

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

impl SinkConfig for OtlpSettings {
    fn switch(&self) -> &'static str {
        "url"
    }

    fn enabled(&self) -> bool {
        self.url.is_some()
    }

    fn validate(&self) -> Result<(), SettingsError> {
        validate_url("logship.sinks.otlp.url", &self.url)?;
        self.http.validate("logship.sinks.otlp.http")
    }

    fn build(&self, retry: &RetrySettings) -> anyhow::Result<Sink> {
        Sink::http(OtlpSink::new(self)?, &self.http, retry)
    }
}
