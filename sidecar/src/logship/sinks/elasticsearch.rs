//! The Elasticsearch / OpenSearch sink: `POST /_bulk` with an NDJSON body
//! (an action line, then the document, for each event; a final newline).
//!
//! `_bulk` answers 200 even when items fail, so each item's status is read:
//! 409 on `create` means the document is already there (a batch sent again
//! after a restart: its `_id` is derived from the pod, the file's identity,
//! the line and its offset), 429
//! and 5xx items are sent again, anything else is dead-lettered.

use anyhow::Context;
use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Body, HttpSink, Verdict};
use crate::logship::config::ElasticsearchSettings;
use crate::logship::event::Event;

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
            url: format!("{}/_bulk", base.trim_end_matches('/')),
            index: settings.index.clone(),
            // Kubernetes sets HOSTNAME to the pod's name in every container.
            pod: std::env::var("HOSTNAME").unwrap_or_default(),
        })
    }
}

/// Rejects an index pattern chrono cannot format (it would panic later).
pub fn validate_index(pattern: &str) -> anyhow::Result<()> {
    if pattern.is_empty() {
        anyhow::bail!("logship.sinks.elasticsearch.index is empty");
    }
    if StrftimeItems::new(pattern).any(|item| matches!(item, Item::Error)) {
        anyhow::bail!(
            "logship.sinks.elasticsearch.index `{pattern}` is not a valid strftime pattern"
        );
    }
    Ok(())
}

/// A stable id for a line: the same line sent again gets the same `_id`,
/// and identical lines at the same offset of two files (two replicas, or
/// two paths) get two.
fn document_id(pod: &str, event: &Event) -> String {
    let mut hasher = Sha256::new();
    // Lengths first, so that no two (pod, text) pairs hash the same bytes.
    hasher.update((pod.len() as u64).to_be_bytes());
    hasher.update(pod.as_bytes());
    hasher.update(event.file_id);
    hasher.update(event.end_offset.to_be_bytes());
    hasher.update(event.text.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

impl HttpSink for ElasticsearchSink {
    fn name(&self) -> &'static str {
        "elasticsearch"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn encode(&self, events: &[&Event]) -> anyhow::Result<Body> {
        let now = Utc::now();
        let mut body = Vec::with_capacity(events.iter().map(|e| e.text.len() + 160).sum());
        for event in events {
            let time = event
                .time_unix_nano
                .map(DateTime::from_timestamp_nanos)
                .unwrap_or(now);
            let action = serde_json::json!({"create": {
                "_index": time.format(&self.index).to_string(),
                "_id": document_id(&self.pod, event),
            }});
            serde_json::to_writer(&mut body, &action)?;
            body.push(b'\n');
            let timestamp = time.to_rfc3339_opts(SecondsFormat::Micros, true);
            if event.json && !event.text.contains("\"@timestamp\"") {
                // The record as written, with `@timestamp` added up front.
                let rest = event.text.trim_start()[1..].trim_start();
                body.extend_from_slice(b"{\"@timestamp\":\"");
                body.extend_from_slice(timestamp.as_bytes());
                body.extend_from_slice(if rest.starts_with('}') { b"\"" } else { b"\"," });
                body.extend_from_slice(rest.as_bytes());
            } else if event.json {
                body.extend_from_slice(event.text.as_bytes());
            } else {
                let document = serde_json::json!({
                    "@timestamp": timestamp,
                    "message": event.text,
                    "truncated": event.truncated,
                });
                serde_json::to_writer(&mut body, &document)?;
            }
            body.push(b'\n');
        }
        Ok(Body {
            content_type: "application/x-ndjson",
            bytes: body,
        })
    }

    fn classify_success(&self, body: &[u8], sent: usize) -> Verdict {
        let Ok(answer) = serde_json::from_slice::<BulkAnswer>(body) else {
            return Verdict::Retry {
                reason: "bad_answer",
            };
        };
        if !answer.errors {
            return Verdict::Delivered;
        }
        if answer.items.len() != sent {
            return Verdict::Retry {
                reason: "bad_answer",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logship::source::Line;

    fn event(text: &str) -> Event {
        Event::from_line(&Line {
            path_index: 0,
            bytes: text.as_bytes().to_vec(),
            original_len: text.len(),
            end_offset: 7,
            file_id: [1; 16],
        })
    }

    fn sink() -> ElasticsearchSink {
        ElasticsearchSink {
            url: String::new(),
            index: "todo-logs-%Y.%m.%d".to_string(),
            pod: "todo-app-7f9c6d5b8-x2k4q".to_string(),
        }
    }

    #[test]
    fn the_same_line_at_the_same_offset_gets_one_id_per_file_and_pod() {
        let line = r#"{"level":30,"msg":"started"}"#;
        let in_one_file = event(line);
        let again = event(line);
        let in_another_file = Event {
            file_id: [2; 16],
            ..event(line)
        };

        let id = document_id("pod-a", &in_one_file);

        assert_eq!(id, document_id("pod-a", &again), "sent again: the same id");
        assert_ne!(id, document_id("pod-a", &in_another_file));
        assert_ne!(id, document_id("pod-b", &in_one_file));
    }

    #[test]
    fn records_get_a_dated_index_and_a_timestamp() {
        let record = event(r#"{"level":30,"time":"2026-03-04T05:06:07Z","msg":"a"}"#);
        let raw = event("not json");

        let body = sink().encode(&[&record, &raw]).unwrap();

        let text = String::from_utf8(body.bytes).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["create"]["_index"], "todo-logs-2026.03.04");
        assert_eq!(lines[1]["@timestamp"], "2026-03-04T05:06:07.000000Z");
        assert_eq!(lines[1]["msg"], "a");
        assert_eq!(lines[3]["message"], "not json");
        assert_ne!(lines[0]["create"]["_id"], lines[2]["create"]["_id"]);
    }

    #[test]
    fn per_item_errors_are_retried_or_rejected() {
        let answer = br#"{"took":1,"errors":true,"items":[
            {"create":{"status":201}},
            {"create":{"status":409,"error":{"type":"version_conflict_engine_exception"}}},
            {"create":{"status":429,"error":{"type":"es_rejected_execution_exception"}}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}}]}"#;

        let verdict = sink().classify_success(answer, 4);

        assert_eq!(
            verdict,
            Verdict::Partial {
                retry: vec![2],
                reject: vec![(3, "400 mapper_parsing_exception: bad".to_string())],
            }
        );
    }

    #[test]
    fn an_invalid_index_pattern_is_refused() {
        assert!(validate_index("logs-%Q").is_err());
        assert!(validate_index("logs-%Y").is_ok());
    }
}
