//! Elasticsearch's settings section (`logship.sinks.elasticsearch.*`) and
//! its validation.

use chrono::format::{Item, StrftimeItems};
use serde::Deserialize;

use super::ElasticsearchSink;
use crate::configuration::SettingsError;
use crate::logship::config::RetrySettings;
use crate::logship::sinks::http::{HttpSettings, validate_url};
use crate::logship::sinks::{Sink, SinkConfig};

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

impl SinkConfig for ElasticsearchSettings {
    fn switch(&self) -> &'static str {
        "url"
    }

    fn enabled(&self) -> bool {
        self.url.is_some()
    }

    fn validate(&self) -> Result<(), SettingsError> {
        validate_url("logship.sinks.elasticsearch.url", &self.url)?;
        validate_index(&self.index)?;
        self.http.validate("logship.sinks.elasticsearch.http")
    }

    fn build(&self, retry: &RetrySettings) -> anyhow::Result<Sink> {
        Sink::http(ElasticsearchSink::new(self)?, &self.http, retry)
    }
}

/// Rejects an index pattern chrono cannot format (it would panic later),
/// naming the key: checked at start-up with the other settings, whether the
/// sink is on or not.
pub fn validate_index(pattern: &str) -> Result<(), SettingsError> {
    const KEY: &str = "logship.sinks.elasticsearch.index";
    if pattern.is_empty() {
        return Err(SettingsError::invalid(KEY, "must not be empty"));
    }
    if StrftimeItems::new(pattern).any(|item| matches!(item, Item::Error)) {
        return Err(SettingsError::invalid(
            KEY,
            format!("`{pattern}` is not a valid strftime pattern"),
        ));
    }
    Ok(())
}
