//! The sinks. Each one is a folder, `<name>/`: `config.rs` (its settings
//! section `logship.sinks.<name>`, their validation and how the sink is
//! built from them), `mod.rs` (the sink), `encoder.rs` (its wire format) and
//! `tests.rs`; it is registered once, in `registry!` below, which makes
//! its settings section and puts it in validation and construction.
//!
//! What sinks share: `http` (the client, the send/retry loop and the
//! classification of answers) and `dead_letter` (where refused lines go).
//! The reasons they report are `crate::logship::events`.

pub mod dead_letter;
pub mod http;

use std::time::Instant;

use serde::Deserialize;

pub use dead_letter::DeadLetter;
pub use http::{HttpDelivery, HttpSettings};

use super::config::RetrySettings;
use super::event::Event;
use super::events::BatchDelivered;
use crate::component::{HealthHandle, Shutdown};
use crate::configuration::SettingsError;
use crate::metrics::LogshipMetrics;

/// One sink's settings section (`logship.sinks.<name>.*`): what the
/// registry needs of a sink.
pub trait SinkConfig {
    /// The key under `logship.sinks.<name>` that turns the sink on (`url`,
    /// `enabled`), named when no sink is configured.
    fn switch(&self) -> &'static str;
    /// Whether the sink is on.
    fn enabled(&self) -> bool;
    /// Rejects values that parse but cannot work, naming the key (checked
    /// at start-up whether the sink is on or not).
    fn validate(&self) -> Result<(), SettingsError>;
    /// The sink; reads its secret and CA files now, so a Secret mounted
    /// late fails the component (retried), not the sidecar.
    fn build(&self, retry: &RetrySettings) -> anyhow::Result<Sink>;
}

/// The sink registry: one line per sink, `name: module::Settings`, the name
/// being its folder, its settings key and its `sink` label. It declares the
/// modules and the `logship.sinks` section; [`SinksSettings::each`] gives
/// every sink in this order (stdout first).
macro_rules! registry {
    ($($(#[$doc:meta])* $name:ident: $settings:ty,)*) => {
        $(pub mod $name;)*

        /// The sinks (`logship.sinks.*`); each one that is on gets every line.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct SinksSettings {
            $($(#[$doc])* pub $name: $settings,)*
        }

        impl SinksSettings {
            /// Every sink's name and settings, in registry order.
            pub fn each(&self) -> Vec<(&'static str, &dyn SinkConfig)> {
                vec![$((stringify!($name), &self.$name as &dyn SinkConfig),)*]
            }
        }
    };
}

registry! {
    /// Lines to the sidecar's stdout.
    stdout: stdout::StdoutSettings,
    /// Grafana Loki's push API.
    loki: loki::LokiSettings,
    /// Elasticsearch or OpenSearch `_bulk`.
    elasticsearch: elasticsearch::ElasticsearchSettings,
    /// An OpenTelemetry collector (OTLP/HTTP, protobuf).
    otlp: otlp::OtlpSettings,
}

impl SinksSettings {
    /// At least one sink must be on, and each sink's values must work.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let sinks = self.each();
        if !sinks.iter().any(|(_, sink)| sink.enabled()) {
            let switches: Vec<String> = sinks
                .iter()
                .map(|(name, sink)| format!("{name}.{}", sink.switch()))
                .collect();
            let (last, rest) = switches.split_last().expect("the registry is not empty");
            return Err(SettingsError::invalid(
                "logship.sinks",
                format!(
                    "needs at least one sink ({} or {last}) when logship.paths is set",
                    rest.join(", ")
                ),
            ));
        }
        sinks.iter().try_for_each(|(_, sink)| sink.validate())
    }

    /// The sinks that are on, in registry order.
    pub fn build(&self, retry: &RetrySettings) -> anyhow::Result<Vec<Sink>> {
        self.each()
            .into_iter()
            .filter(|(_, sink)| sink.enabled())
            .map(|(_, sink)| sink.build(retry))
            .collect()
    }
}

/// A configured sink.
pub enum Sink {
    /// Lines to stdout.
    Stdout(stdout::StdoutSink),
    /// An HTTP sink.
    Http(Box<HttpDelivery>),
}

impl Sink {
    /// The `sink` label.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Stdout(_) => "stdout",
            Sink::Http(http) => http.name(),
        }
    }

    /// Delivers `events`: returns once every event was accepted or
    /// dead-lettered, retrying meanwhile; `Err(Stopped)` at the end of the
    /// drain.
    pub async fn deliver(
        &self,
        events: &[Event],
        context: &DeliveryContext<'_>,
    ) -> Result<(), Stopped> {
        let started = Instant::now();
        let outcome = match self {
            Sink::Stdout(sink) => {
                sink.write(events, context);
                Ok(())
            }
            Sink::Http(http) => http.deliver(events, context).await,
        };
        if outcome.is_ok() {
            BatchDelivered {
                sink: self.name(),
                duration: started.elapsed(),
            }
            .emit(context.metrics);
        }
        outcome
    }
}

/// The drain ended while a batch was still being retried: it is left
/// unacknowledged and is sent again after a restart (if the files remain).
#[derive(Debug, thiserror::Error)]
#[error("stopped before the batch was delivered")]
pub struct Stopped;

/// What delivery needs besides the events.
pub struct DeliveryContext<'a> {
    /// Counters.
    pub metrics: &'a LogshipMetrics,
    /// Backoff bounds.
    pub retry: &'a RetrySettings,
    /// Where refused events go.
    pub dead_letter: &'a DeadLetter,
    /// SIGTERM: the wait before the next retry is cut short once (the sink
    /// is often back by then: it restarted in the same rollout), and
    /// delivery goes on, draining, until `give_up`.
    pub shutdown: Shutdown,
    /// The end of the drain (`logship.drain_timeout_seconds` after
    /// SIGTERM): delivery stops, even in the middle of a request.
    pub give_up: Shutdown,
    /// The component's health: `degraded` (with the sink and reason) while
    /// a batch is being retried, so `/health/ready` says why shipping stalls.
    pub health: &'a HealthHandle,
}

#[cfg(test)]
mod tests {
    use crate::configuration::load_for_test as load;

    #[test]
    fn without_a_sink_the_error_names_each_sink_s_switch() {
        let error = load(&[("SIDECAR__LOGSHIP__PATHS", "/logs/app.log")]).unwrap_err();
        assert!(
            error.contains(
                "needs at least one sink (stdout.enabled, loki.url, elasticsearch.url or otlp.url)"
            ),
            "{error}"
        );
    }

    #[test]
    fn an_empty_sink_url_is_off_and_a_url_without_scheme_is_refused() {
        let error = load(&[
            ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
            ("SIDECAR__LOGSHIP__SINKS__LOKI__URL", ""),
        ])
        .unwrap_err();
        assert!(
            error.contains("needs at least one sink"),
            "empty is off: {error}"
        );
        let settings = load(&[
            ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
            ("SIDECAR__LOGSHIP__SINKS__STDOUT__ENABLED", "true"),
            ("SIDECAR__LOGSHIP__SINKS__OTLP__URL", " "),
            ("SIDECAR__LOGSHIP__SINKS__LOKI__TENANT_ID", ""),
        ])
        .unwrap();
        assert_eq!(settings.logship.sinks.otlp.url, None);
        assert_eq!(settings.logship.sinks.loki.tenant_id, None);
        for sink in ["LOKI", "ELASTICSEARCH", "OTLP"] {
            let variable = format!("SIDECAR__LOGSHIP__SINKS__{sink}__URL");
            let error = load(&[
                ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
                (variable.as_str(), "loki:3100"),
            ])
            .unwrap_err();
            let key = format!("logship.sinks.{}.url", sink.to_lowercase());
            assert!(error.contains(&key), "{error}");
        }
    }

    #[test]
    fn bearer_auth_without_a_token_file_is_refused() {
        for sink in ["LOKI", "ELASTICSEARCH", "OTLP"] {
            let url = format!("SIDECAR__LOGSHIP__SINKS__{sink}__URL");
            let auth = format!("SIDECAR__LOGSHIP__SINKS__{sink}__HTTP__AUTH");
            let error = load(&[
                ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
                (url.as_str(), "http://sink:3100"),
                (auth.as_str(), "bearer"),
            ])
            .unwrap_err();
            let key = format!("logship.sinks.{}.http", sink.to_lowercase());
            assert!(
                error.contains(&key) && error.contains("token_file"),
                "{error}"
            );
        }
    }
}
