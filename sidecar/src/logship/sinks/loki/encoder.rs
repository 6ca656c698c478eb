//! Loki's JSON push body: one stream per label set (the static labels, plus
//! the level), entries in file order, each with its record's own time.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use super::LokiSink;
use crate::logship::event::Event;
use crate::logship::sinks::http::Body;

#[derive(Serialize)]
struct Push<'a> {
    streams: Vec<Stream<'a>>,
}

#[derive(Serialize)]
struct Stream<'a> {
    stream: BTreeMap<&'a str, &'a str>,
    values: Vec<(String, &'a str)>,
}

/// The push of `events`.
pub(super) fn push(sink: &LokiSink, events: &[&Event]) -> anyhow::Result<Body> {
    let now = chrono::Utc::now()
        .timestamp_nanos_opt()
        .context("the clock is beyond 2262")?;
    // Streams in order of first appearance.
    let mut streams: Vec<Stream<'_>> = Vec::new();
    let mut index_of: BTreeMap<&'static str, usize> = BTreeMap::new();
    for event in events {
        let level = if sink.level_label {
            event.level_name()
        } else {
            ""
        };
        let at = *index_of.entry(level).or_insert_with(|| {
            let mut stream: BTreeMap<&str, &str> = sink
                .labels
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            if sink.level_label {
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
