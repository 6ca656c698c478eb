//! The stdout sink's settings section (`logship.sinks.stdout.*`).

use serde::Deserialize;

use super::StdoutSink;
use crate::configuration::SettingsError;
use crate::logship::config::RetrySettings;
use crate::logship::sinks::{Sink, SinkConfig};

/// The stdout sink (`logship.sinks.stdout.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSettings {
    /// Write every line, as read, to stdout (which the sidecar shares with
    /// its own logs; for debugging and for clusters that collect stdout).
    pub enabled: bool,
}

impl SinkConfig for StdoutSettings {
    fn switch(&self) -> &'static str {
        "enabled"
    }

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<(), SettingsError> {
        Ok(())
    }

    fn build(&self, _retry: &RetrySettings) -> anyhow::Result<Sink> {
        Ok(Sink::Stdout(StdoutSink))
    }
}
