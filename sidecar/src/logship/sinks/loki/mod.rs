//! The Loki sink: `POST /loki/api/v1/push` with the JSON body
//! `{"streams":[{"stream":{labels},"values":[["<unix ns>","<line>"],…]}]}`.
//!
//! Labels come only from the configured static set plus, optionally, the
//! bunyan level: never from request or trace ids, which would make one
//! stream per request. Entries keep file order within each stream and carry
//! their record's own time (the read time for lines without one), even when
//! it is older than the previous entry's: Loki accepts out-of-order writes
//! within its window (`unordered_writes`, the default since 2.4), and
//! rewriting the time would misplace the event.

mod config;
mod encoder;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use anyhow::Context;
use reqwest::header::{HeaderMap, HeaderValue};

pub use config::LokiSettings;

use super::http::{Body, HttpSink, endpoint};
use crate::logship::event::Event;

/// Pushes to Loki.
pub struct LokiSink {
    url: String,
    labels: BTreeMap<String, String>,
    level_label: bool,
    tenant_id: Option<String>,
}

impl LokiSink {
    /// The sink of the settings (`url` must be set).
    pub fn new(settings: &LokiSettings) -> anyhow::Result<LokiSink> {
        let base = settings
            .url
            .as_deref()
            .context("logship.sinks.loki.url is not set")?;
        Ok(LokiSink {
            url: endpoint(base, "/loki/api/v1/push"),
            labels: settings.labels.clone(),
            level_label: settings.level_label,
            tenant_id: settings.tenant_id.clone(),
        })
    }
}

impl HttpSink for LokiSink {
    fn name(&self) -> &'static str {
        "loki"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(tenant) = self
            .tenant_id
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            headers.insert("X-Scope-OrgID", tenant);
        }
        headers
    }

    fn encode(&self, events: &[&Event]) -> anyhow::Result<Body> {
        encoder::push(self, events)
    }
}
