//! The `_bulk` body: for each event a `create` action (dated index, stable
//! `_id`) and the record with `@timestamp` added (raw lines become
//! `{"@timestamp","message","truncated"}`), then a final newline.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use super::ElasticsearchSink;
use crate::logship::event::Event;
use crate::logship::sinks::http::Body;

/// A stable id for a line: the same line sent again gets the same `_id`,
/// and identical lines at the same offset of two files (two replicas, or
/// two paths) get two.
pub(super) fn document_id(pod: &str, event: &Event) -> String {
    let mut hasher = Sha256::new();
    // Lengths first, so that no two (pod, text) pairs hash the same bytes.
    hasher.update((pod.len() as u64).to_be_bytes());
    hasher.update(pod.as_bytes());
    hasher.update(event.file_id);
    hasher.update(event.end_offset.to_be_bytes());
    hasher.update(event.text.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// The `_bulk` request for `events`.
pub(super) fn bulk(sink: &ElasticsearchSink, events: &[&Event]) -> anyhow::Result<Body> {
    let now = Utc::now();
    let mut body = Vec::with_capacity(events.iter().map(|e| e.text.len() + 160).sum());
    for event in events {
        let time = event
            .time_unix_nano
            .map(DateTime::from_timestamp_nanos)
            .unwrap_or(now);
        let action = serde_json::json!({"create": {
            "_index": time.format(&sink.index).to_string(),
            "_id": document_id(&sink.pod, event),
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
