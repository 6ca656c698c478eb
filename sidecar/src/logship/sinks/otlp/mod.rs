//! The OTLP/HTTP logs sink: `POST /v1/logs` with a protobuf
//! `ExportLogsServiceRequest` (`application/x-protobuf`).
//!
//! The few OTLP messages needed are declared in `proto.rs` with prost: that
//! keeps the OpenTelemetry SDK's log features out of the sidecar.
//!
//! A bunyan record becomes a LogRecord with its `time`, a severity mapped
//! from the bunyan level, its `msg` as the body, `trace_id`/`span_id` in the
//! record's trace fields, and its other fields as attributes. A raw or cut
//! line becomes a record whose body is the line (and `log.truncated`).

mod config;
mod encoder;
pub mod proto;
#[cfg(test)]
mod tests;

use anyhow::Context;
use prost::Message;

pub use config::OtlpSettings;
pub use encoder::severity;

use super::http::{Body, HttpSink, Verdict, endpoint};
use crate::logship::event::Event;
use proto::ExportLogsServiceResponse;

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
            url: endpoint(base, "/v1/logs"),
            service_name: settings.service_name.clone(),
        })
    }
}

impl HttpSink for OtlpSink {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn encode(&self, events: &[&Event]) -> anyhow::Result<Body> {
        encoder::export(self, events)
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
                answer: format!(
                    "partial success: {} of {sent} records rejected: {}",
                    partial.rejected_log_records, partial.error_message
                ),
            };
        }
        Verdict::Delivered
    }
}
