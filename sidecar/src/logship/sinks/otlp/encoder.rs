//! A bunyan record as an OTLP LogRecord: its `time`, a severity mapped
//! from the bunyan level, its `msg` as the body, `trace_id`/`span_id` in the
//! record's trace fields, its other fields as attributes. A raw or cut line
//! is a record whose body is the line (and `log.truncated`).

use prost::Message;
use serde_json::Value;

use super::OtlpSink;
use super::proto::{
    AnyValue, ExportLogsServiceRequest, InstrumentationScope, KeyValue, LogRecord, Resource,
    ResourceLogs, ScopeLogs, any_value,
};
use crate::logship::event::Event;
use crate::logship::sinks::http::Body;

pub(super) fn string(value: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    })
}

/// Bunyan level → OTLP `SeverityNumber` and text.
pub fn severity(level: Option<u8>) -> (i32, &'static str) {
    match level {
        Some(0..=10) => (1, "TRACE"),
        Some(11..=20) => (5, "DEBUG"),
        Some(21..=30) => (9, "INFO"),
        Some(31..=40) => (13, "WARN"),
        Some(41..=50) => (17, "ERROR"),
        Some(_) => (21, "FATAL"),
        None => (0, ""),
    }
}

/// Fields that have their own place in a LogRecord, or describe the process
/// (the resource), rather than the event.
const NOT_ATTRIBUTES: &[&str] = &["msg", "time", "level", "trace_id", "span_id", "v"];

fn attribute(key: &str, value: &Value) -> KeyValue {
    use any_value::Value as Kind;
    let kind = match value {
        Value::String(text) => Kind::StringValue(text.clone()),
        Value::Bool(flag) => Kind::BoolValue(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => Kind::IntValue(integer),
            None => Kind::DoubleValue(number.as_f64().unwrap_or_default()),
        },
        Value::Null => Kind::StringValue(String::new()),
        other => Kind::StringValue(other.to_string()),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(kind) }),
    }
}

fn record(event: &Event, observed: u64) -> LogRecord {
    let (severity_number, severity_text) = severity(event.level);
    let mut record = LogRecord {
        time_unix_nano: event.time_unix_nano.map_or(0, |ns| ns.max(0) as u64),
        observed_time_unix_nano: observed,
        severity_number,
        severity_text: severity_text.to_string(),
        ..LogRecord::default()
    };
    // Ids that are not valid hex of the right length are left out rather
    // than sent as something a backend would misread.
    if let Some(trace_id) = event
        .trace_id
        .as_deref()
        .and_then(|id| hex::decode(id).ok())
        && trace_id.len() == 16
    {
        record.trace_id = trace_id;
    }
    if let Some(span_id) = event.span_id.as_deref().and_then(|id| hex::decode(id).ok())
        && span_id.len() == 8
    {
        record.span_id = span_id;
    }
    let fields = event
        .json
        .then(|| serde_json::from_str::<serde_json::Map<String, Value>>(&event.text).ok())
        .flatten();
    match fields {
        Some(fields) => {
            // The record's `msg`, or the whole line when it has none.
            record.body = string(
                fields
                    .get("msg")
                    .and_then(Value::as_str)
                    .map_or_else(|| event.text.clone(), str::to_string),
            );
            record.attributes = fields
                .iter()
                .filter(|(key, _)| !NOT_ATTRIBUTES.contains(&key.as_str()))
                .map(|(key, value)| attribute(key, value))
                .collect();
        }
        None => {
            record.body = string(event.text.clone());
            if event.truncated {
                record
                    .attributes
                    .push(attribute("log.truncated", &Value::Bool(true)));
            }
        }
    }
    record
}

/// The export request for `events`.
pub(super) fn export(sink: &OtlpSink, events: &[&Event]) -> anyhow::Result<Body> {
    let observed = chrono::Utc::now()
        .timestamp_nanos_opt()
        .map_or(0, |ns| ns.max(0) as u64);
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".to_string(),
                    value: string(sink.service_name.clone()),
                }],
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "todo-sidecar/logship".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                }),
                log_records: events.iter().map(|event| record(event, observed)).collect(),
            }],
        }],
    };
    Ok(Body {
        content_type: "application/x-protobuf",
        bytes: request.encode_to_vec(),
    })
}
