//! Log shipping: tails todo-app's log files (following rotation and
//! truncation), batches the lines and delivers them at least once to the
//! configured sinks (stdout, Loki, Elasticsearch/OpenSearch, OTLP), with a
//! checkpoint that only moves once every sink acknowledged. See
//! docs/logship.md for the configuration, the guarantee and the runbook.
//!
//! - `config`: the `logship` settings section;
//! - `source`: the tailer (rotation, copytruncate, fingerprints, partial and oversized lines);
//! - `checkpoint`: the atomically written positions;
//! - `event`: a line decoded into what the sinks need;
//! - `events`: what log shipping reports (each event's log line and metric);
//! - `pipeline`: batch → send → acknowledge → checkpoint;
//! - `sinks`: one folder per sink (settings, wire format), registered in
//!   `sinks/mod.rs`; the shared HTTP delivery and the dead-letter file.

pub mod checkpoint;
pub mod config;
pub mod event;
pub mod events;
pub mod pipeline;
pub mod sinks;
pub mod source;

use std::sync::Arc;

use anyhow::Context;
use futures_util::future::BoxFuture;

use crate::component::{Component, HealthHandle, Shutdown};
use crate::metrics::LogshipMetrics;
use config::LogshipSettings;
use sinks::Sink;

/// The log shipper as a component of `todo-sidecar run`.
pub struct LogshipComponent {
    settings: LogshipSettings,
    metrics: LogshipMetrics,
}

impl LogshipComponent {
    /// The component of validated settings. The sinks are built when it
    /// runs: a secret or CA file that cannot be read fails the component
    /// (reported by the supervisor and `/health/ready`, and retried, so a
    /// Secret mounted late is picked up), not the whole sidecar — the same
    /// policy as the backup and aggregation components.
    pub fn new(settings: LogshipSettings, metrics: LogshipMetrics) -> LogshipComponent {
        LogshipComponent { settings, metrics }
    }
}

/// The configured sinks, in the registry's order (stdout first).
pub fn build_sinks(settings: &LogshipSettings) -> anyhow::Result<Vec<Sink>> {
    settings.sinks.build(&settings.retry)
}

impl Component for LogshipComponent {
    fn name(&self) -> &'static str {
        "logship"
    }

    fn run(
        self: Arc<Self>,
        health: HealthHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let sinks = build_sinks(&self.settings).context("Failed to set up the log sinks")?;
            // Each configured sink's counters exist at 0 from here on, so
            // rate() sees its first shipped or dead-lettered lines.
            for sink in &sinks {
                self.metrics.expose_sink(sink.name());
            }
            pipeline::run(
                self.settings.clone(),
                &sinks,
                self.metrics.clone(),
                health,
                shutdown,
            )
            .await
        })
    }
}
