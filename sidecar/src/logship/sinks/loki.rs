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

use std::collections::BTreeMap;

use anyhow::Context;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Serialize;

use super::{Body, HttpSink};
use crate::logship::config::LokiSettings;
use crate::logship::event::Event;

/// Pushes to Loki.
pub struct LokiSink {
    url: String,
    labels: BTreeMap<String, String>,
    level_label: bool,
    tenant_id: Option<String>,
}

#[derive(Serialize)]
struct Push<'a> {
    streams: Vec<Stream<'a>>,
}

#[derive(Serialize)]
struct Stream<'a> {
    stream: BTreeMap<&'a str, &'a str>,
    values: Vec<(String, &'a str)>,
}

impl LokiSink {
    /// The sink of the settings (`url` must be set).
    pub fn new(settings: &LokiSettings) -> anyhow::Result<LokiSink> {
        let base = settings
            .url
            .as_deref()
            .context("logship.sinks.loki.url is not set")?;
        Ok(LokiSink {
            url: format!("{}/loki/api/v1/push", base.trim_end_matches('/')),
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
        let now = chrono::Utc::now()
            .timestamp_nanos_opt()
            .context("the clock is beyond 2262")?;
        // Streams in order of first appearance.
        let mut streams: Vec<Stream<'_>> = Vec::new();
        let mut index_of: BTreeMap<&'static str, usize> = BTreeMap::new();
        for event in events {
            let level = if self.level_label {
                event.level_name()
            } else {
                ""
            };
            let at = *index_of.entry(level).or_insert_with(|| {
                let mut stream: BTreeMap<&str, &str> = self
                    .labels
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                if self.level_label {
                    stream.insert("level", level);
                }
                streams.push(Stream {
                    stream,
                    values: Vec::new(),
                });
                streams.len() - 1
            });
            let timestamp = event.time_unix_nano.unwrap_or(now);
            streams[at]
                .values
                .push((timestamp.to_string(), event.text.as_str()));
        }
        let push = Push { streams };
        Ok(Body {
            content_type: "application/json",
            bytes: serde_json::to_vec(&push).context("Failed to encode the Loki push")?,
        })
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
    fn streams_are_split_by_level_and_keep_file_order_and_each_record_s_own_time() {
        let sink = LokiSink {
            url: String::new(),
            labels: BTreeMap::from([("app".to_string(), "todo-app".to_string())]),
            level_label: true,
            tenant_id: None,
        };
        let a = event(r#"{"level":30,"time":"2026-01-01T00:00:02Z","msg":"a"}"#);
        let b = event(r#"{"level":50,"time":"2026-01-01T00:00:01Z","msg":"b"}"#);
        let c = event(r#"{"level":30,"time":"2026-01-01T00:00:01Z","msg":"c"}"#);

        let body = sink.encode(&[&a, &b, &c]).unwrap();

        let push: serde_json::Value = serde_json::from_slice(&body.bytes).unwrap();
        let streams = push["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(
            streams[0]["stream"],
            serde_json::json!({"app": "todo-app", "level": "info"})
        );
        let values = streams[0]["values"].as_array().unwrap();
        assert_eq!(values[0][1], a.text.as_str());
        assert_eq!(values[1][1], c.text.as_str());
        // c is older than a in the same stream: it keeps its own time.
        assert_eq!(values[0][0], "1767225602000000000");
        assert_eq!(values[1][0], "1767225601000000000");
        assert_eq!(streams[1]["stream"]["level"], "error");
    }
}
