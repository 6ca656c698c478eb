//! The OTLP/HTTP logs sink: `POST /v1/logs` with a protobuf
//! `ExportLogsServiceRequest` (`application/x-protobuf`).
//!
//! The few OTLP messages needed are declared here with prost, field numbers
//! as in opentelemetry-proto's `logs/v1/logs.proto`, `common/v1/common.proto`
//! and `resource/v1/resource.proto`: that keeps the OpenTelemetry SDK's log
//! features out of the sidecar, and the tests decode the bodies with the
//! official definitions (the `opentelemetry-proto` crate), so a wrong field
//! number cannot go unnoticed.
//!
//! A bunyan record becomes a LogRecord with its `time`, a severity mapped
//! from the bunyan level, its `msg` as the body, `trace_id`/`span_id` in the
//! record's trace fields, and its other fields as attributes. A raw or cut
//! line becomes a record whose body is the line (and `log.truncated`).

use anyhow::Context;
use prost::Message;
use serde_json::Value;

use super::{Body, HttpSink, Verdict};
use crate::logship::config::OtlpSettings;
use crate::logship::event::Event;

/// Sends to an OTLP/HTTP collector.
pub struct OtlpSink {
    url: String,
    service_name: String,
}

impl OtlpSink {
    /// The sink of the settings (`url` must be set).
    pub fn new(settings: &OtlpSettings) -> anyhow::Result<OtlpSink> {
        let base = settings
            .url
            .as_deref()
            .context("logship.sinks.otlp.url is not set")?;
        Ok(OtlpSink {
            url: format!("{}/v1/logs", base.trim_end_matches('/')),
            service_name: settings.service_name.clone(),
        })
    }
}

/// `opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ExportLogsServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_logs: Vec<ResourceLogs>,
}

/// `opentelemetry.proto.collector.logs.v1.ExportLogsServiceResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct ExportLogsServiceResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportLogsPartialSuccess>,
}

/// `opentelemetry.proto.collector.logs.v1.ExportLogsPartialSuccess`.
#[derive(Clone, PartialEq, Message)]
pub struct ExportLogsPartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_log_records: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// `opentelemetry.proto.logs.v1.ResourceLogs`.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceLogs {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_logs: Vec<ScopeLogs>,
}

/// `opentelemetry.proto.resource.v1.Resource`.
#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `opentelemetry.proto.logs.v1.ScopeLogs`.
#[derive(Clone, PartialEq, Message)]
pub struct ScopeLogs {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub log_records: Vec<LogRecord>,
}

/// `opentelemetry.proto.common.v1.InstrumentationScope`.
#[derive(Clone, PartialEq, Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `opentelemetry.proto.logs.v1.LogRecord`.
#[derive(Clone, PartialEq, Message)]
pub struct LogRecord {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(int32, tag = "2")]
    pub severity_number: i32,
    #[prost(string, tag = "3")]
    pub severity_text: String,
    #[prost(message, optional, tag = "5")]
    pub body: Option<AnyValue>,
    #[prost(message, repeated, tag = "6")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed32, tag = "8")]
    pub flags: u32,
    #[prost(bytes = "vec", tag = "9")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "10")]
    pub span_id: Vec<u8>,
    #[prost(fixed64, tag = "11")]
    pub observed_time_unix_nano: u64,
}

/// `opentelemetry.proto.common.v1.KeyValue`.
#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `opentelemetry.proto.common.v1.AnyValue` (scalar kinds only).
#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4")]
    pub value: Option<any_value::Value>,
}

/// The kinds of [`AnyValue`] the sink sends.
pub mod any_value {
    /// `AnyValue.value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
    }
}

fn string(value: impl Into<String>) -> Option<AnyValue> {
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

impl HttpSink for OtlpSink {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn encode(&self, events: &[&Event]) -> anyhow::Result<Body> {
        let observed = chrono::Utc::now()
            .timestamp_nanos_opt()
            .map_or(0, |ns| ns.max(0) as u64);
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".to_string(),
                        value: string(self.service_name.clone()),
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

    fn classify_success(&self, body: &[u8], sent: usize) -> Verdict {
        // A partial success says how many records were refused, not which:
        // the whole batch goes to the dead-letter file, so that none of
        // the refused lines is lost (the accepted ones are there too).
        if let Ok(response) = ExportLogsServiceResponse::decode(body)
            && let Some(partial) = response.partial_success
            && partial.rejected_log_records > 0
        {
            return Verdict::PartiallyRejected {
                rejected: usize::try_from(partial.rejected_log_records)
                    .unwrap_or(sent)
                    .min(sent),
                reason: format!(
                    "partial success: {} of {sent} records rejected: {}",
                    partial.rejected_log_records, partial.error_message
                ),
            };
        }
        Verdict::Delivered
    }
}

#[cfg(test)]
mod partial_success_tests {
    use super::*;

    fn sink() -> OtlpSink {
        OtlpSink::new(&OtlpSettings {
            url: Some("http://collector:4318".to_string()),
            service_name: "todo-app".to_string(),
            http: crate::logship::config::HttpSettings {
                gzip: false,
                auth: None,
                token_file: None,
                username: None,
                password_file: None,
                ca_file: None,
            },
        })
        .expect("a valid sink")
    }

    #[test]
    fn a_partial_success_names_how_many_records_were_rejected() {
        let answer = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 2,
                error_message: "too old".to_string(),
            }),
        }
        .encode_to_vec();

        let verdict = sink().classify_success(&answer, 5);

        assert_eq!(
            verdict,
            Verdict::PartiallyRejected {
                rejected: 2,
                reason: "partial success: 2 of 5 records rejected: too old".to_string(),
            }
        );
    }

    #[test]
    fn an_empty_answer_or_zero_rejected_is_a_full_delivery() {
        let zero = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 0,
                error_message: String::new(),
            }),
        }
        .encode_to_vec();

        assert_eq!(sink().classify_success(&[], 5), Verdict::Delivered);
        assert_eq!(sink().classify_success(&zero, 5), Verdict::Delivered);
    }
}
