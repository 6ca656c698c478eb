//! The Elasticsearch / OpenSearch sink: `POST /_bulk` with an NDJSON body
//! (an action line, then the document, for each event; a final newline).
//!
//! `_bulk` answers 200 even when items fail, so each item's status is read:
//! 409 on `create` means the document is already there (a batch sent again
//! after a restart: its `_id` is derived from the pod, the file's identity,
//! the line and its offset), 429
//! and 5xx items are sent again, anything else is dead-lettered.

mod config;
mod encoder;
#[cfg(test)]
mod tests;

use anyhow::Context;
use serde::Deserialize;

pub use config::{ElasticsearchSettings, validate_index};

use super::http::{Body, HttpSink, Verdict, endpoint};
use crate::logship::event::Event;
use crate::logship::events::FailureReason;

/// Indexes into Elasticsearch or OpenSearch.
pub struct ElasticsearchSink {
    url: String,
    index: String,
    /// The pod (`HOSTNAME`), part of every `_id`.
    pod: String,
}

#[derive(Deserialize)]
struct BulkAnswer {
    errors: bool,
    #[serde(default)]
    items: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl ElasticsearchSink {
    /// The sink of the settings (`url` must be set, `index` a valid pattern).
    pub fn new(settings: &ElasticsearchSettings) -> anyhow::Result<ElasticsearchSink> {
        let base = settings
            .url
            .as_deref()
            .context("logship.sinks.elasticsearch.url is not set")?;
        validate_index(&settings.index)?;
        Ok(ElasticsearchSink {
            url: endpoint(base, "/_bulk"),
            index: settings.index.clone(),
            // Kubernetes sets HOSTNAME to the pod's name in every container.
            pod: std::env::var("HOSTNAME").unwrap_or_default(),
        })
    }
}

impl HttpSink for ElasticsearchSink {
    fn name(&self) -> &'static str {
        "elasticsearch"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn encode(&self, events: &[&Event]) -> anyhow::Result<Body> {
        encoder::bulk(self, events)
    }

    fn classify_success(&self, body: &[u8], sent: usize) -> Verdict {
        let Ok(answer) = serde_json::from_slice::<BulkAnswer>(body) else {
            return Verdict::Retry {
                reason: FailureReason::BadAnswer,
            };
        };
        if !answer.errors {
            return Verdict::Delivered;
        }
        if answer.items.len() != sent {
            return Verdict::Retry {
                reason: FailureReason::BadAnswer,
            };
        }
        let mut retry = Vec::new();
        let mut reject = Vec::new();
        for (index, item) in answer.items.iter().enumerate() {
            let Some(result) = item.values().next() else {
                retry.push(index);
                continue;
            };
            let status = result["status"].as_u64().unwrap_or(0);
            match status {
                200..=299 | 409 => {}
                429 | 500..=599 => retry.push(index),
                _ => {
                    let error = &result["error"];
                    reject.push((
                        index,
                        format!(
                            "{status} {}: {}",
                            error["type"].as_str().unwrap_or("error"),
                            error["reason"].as_str().unwrap_or("")
                        ),
                    ));
                }
            }
        }
        if retry.is_empty() && reject.is_empty() {
            Verdict::Delivered
        } else {
            Verdict::Partial { retry, reject }
        }
    }
}
