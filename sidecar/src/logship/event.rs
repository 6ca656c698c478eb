//! A line turned into an event: its text as shipped, and the few bunyan
//! fields the sinks need (`level`, `time`, `trace_id`, `span_id`). Only
//! these fields are decoded; the rest of the line is shipped as written.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::source::{FileId, Line};

/// One line ready for the sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The line as shipped: the file's bytes (invalid UTF-8 replaced), and
    /// for a line cut to `max_line_bytes`, the kept part followed by
    /// [`TRUNCATION_MARK`] and the original length.
    pub text: String,
    /// Whether `text` is a JSON object (a bunyan record) rather than a raw message.
    pub json: bool,
    /// Whether the line was cut.
    pub truncated: bool,
    /// The bunyan level (10 trace … 60 fatal), when the line has one.
    pub level: Option<u8>,
    /// The record's `time`, in nanoseconds since the epoch, when it has one.
    pub time_unix_nano: Option<i64>,
    /// W3C trace id (32 hex digits), when the record carries one.
    pub trace_id: Option<String>,
    /// W3C span id (16 hex digits), when the record carries one.
    pub span_id: Option<String>,
    /// The record's `msg`, when it has one.
    pub msg: Option<String>,
    /// Offset after the line in its file (part of the Elasticsearch `_id`).
    pub end_offset: u64,
    /// The file it came from (part of the Elasticsearch `_id`).
    pub file_id: FileId,
}

/// Appended to a line cut to `max_line_bytes`.
pub const TRUNCATION_MARK: &str = "…[truncated, original bytes: ";

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default)]
    level: Option<u8>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    trace_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    span_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    msg: Option<Cow<'a, str>>,
}

impl Event {
    /// Decodes `line`.
    pub fn from_line(line: &Line) -> Event {
        let truncated = line.truncated();
        // A cut line is not valid JSON any more: it goes as a raw message.
        let object = !truncated && line.bytes.first() == Some(&b'{');
        let head = if object {
            serde_json::from_slice::<Head>(&line.bytes).ok()
        } else {
            None
        };
        // A JSON object whose known fields have unexpected types (a string
        // `level`, a numeric `time`) is still a record, just without them.
        let json = head.is_some()
            || (object && serde_json::from_slice::<serde::de::IgnoredAny>(&line.bytes).is_ok());
        let mut text = String::from_utf8_lossy(&line.bytes).into_owned();
        if truncated {
            text.push_str(TRUNCATION_MARK);
            text.push_str(&line.original_len.to_string());
            text.push(']');
        }
        let Some(head) = head else {
            return Event {
                text,
                json,
                truncated,
                level: None,
                time_unix_nano: None,
                trace_id: None,
                span_id: None,
                msg: None,
                end_offset: line.end_offset,
                file_id: line.file_id,
            };
        };
        Event {
            text,
            json: true,
            truncated,
            level: head.level,
            time_unix_nano: head
                .time
                .and_then(|time| DateTime::parse_from_rfc3339(&time).ok())
                .and_then(|time| time.with_timezone(&Utc).timestamp_nanos_opt()),
            trace_id: head.trace_id.map(Cow::into_owned),
            span_id: head.span_id.map(Cow::into_owned),
            msg: head.msg.map(Cow::into_owned),
            end_offset: line.end_offset,
            file_id: line.file_id,
        }
    }

    /// The bunyan level's name (`info`), or `unknown`.
    pub fn level_name(&self) -> &'static str {
        match self.level {
            Some(0..=10) => "trace",
            Some(11..=20) => "debug",
            Some(21..=30) => "info",
            Some(31..=40) => "warn",
            Some(41..=50) => "error",
            Some(_) => "fatal",
            None => "unknown",
        }
    }
}

/// An event of `text` read at offset 0 of file `[0; 16]`, for unit tests.
#[cfg(test)]
pub fn test_event(text: &str) -> Event {
    Event::from_line(&Line {
        path_index: 0,
        bytes: text.as_bytes().to_vec(),
        original_len: text.len(),
        end_offset: 0,
        file_id: [0; 16],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, original_len: usize) -> Line {
        Line {
            path_index: 0,
            bytes: text.as_bytes().to_vec(),
            original_len,
            end_offset: 0,
            file_id: [0; 16],
        }
    }

    #[test]
    fn a_bunyan_record_is_decoded() {
        let text = r#"{"v":0,"name":"todo-app","msg":"hi","level":50,"time":"2026-01-02T03:04:05.000000006Z","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}"#;
        let event = Event::from_line(&line(text, text.len()));
        assert!(event.json && !event.truncated);
        assert_eq!(event.text, text);
        assert_eq!(event.level_name(), "error");
        assert_eq!(event.time_unix_nano, Some(1_767_323_045_000_000_006));
        assert_eq!(event.msg.as_deref(), Some("hi"));
        assert_eq!(
            event.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn a_record_with_odd_field_types_is_still_a_record() {
        let text = r#"{"level":"info","time":12,"msg":"x"}"#;
        let event = Event::from_line(&line(text, text.len()));
        assert!(event.json);
        assert_eq!(event.level, None);
        assert_eq!(event.time_unix_nano, None);
    }

    #[test]
    fn a_non_json_line_is_a_raw_message() {
        let event = Event::from_line(&line("plain {text", 11));
        assert!(!event.json);
        assert_eq!(event.text, "plain {text");
        assert_eq!(event.level_name(), "unknown");
    }

    #[test]
    fn a_cut_line_is_marked_and_raw() {
        let event = Event::from_line(&line("{\"msg\":\"abc", 5000));
        assert!(!event.json && event.truncated);
        assert_eq!(event.text, format!("{{\"msg\":\"abc{TRUNCATION_MARK}5000]"));
    }
}
