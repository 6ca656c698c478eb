//! Typed settings of `todo-app` and how they are loaded.
//!
//! Layers, lowest first: `configuration/base.yaml` (compiled in), then
//! `$APP_CONFIG_DIR/$APP_ENVIRONMENT.yaml` (`configuration/local.yaml` by
//! default), then `APP__SECTION__KEY` environment variables, then the
//! conventional `DATABASE_URL` and `PORT`. Every struct rejects unknown keys,
//! and [`Settings::validate`] rejects values that would fail later, so a typo
//! stops start-up with the key named instead of being silently ignored.
//! The layering, the PostgreSQL URL handling and the shared errors are
//! `todo_common`'s, the same as todo-sidecar's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use todo_common::configuration::{
    Layers, SettingsError as CommonSettingsError, load_layers, validate_trace_sampler,
};
use todo_common::pg_url::{is_postgres_url, with_connection_options};

/// The defaults, kept once in `configuration/base.yaml` and compiled in so the
/// binary runs even where that directory is not shipped.
const BASE_YAML: &str = include_str!("../../configuration/base.yaml");

/// Why the settings could not be loaded: the errors both programs share
/// (see [`todo_common::configuration::SettingsError`]), or the app's own.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A layer did not load, or a value cannot work (key named).
    #[error(transparent)]
    Common(#[from] CommonSettingsError),
    #[error(
        "APP_ENVIRONMENT must be `local` or `production`, got `{0}` (it picks configuration/<environment>.yaml)"
    )]
    UnknownEnvironment(String),
}

impl SettingsError {
    /// A value that parses but cannot work, naming its key (never its value,
    /// which may be a secret).
    pub fn invalid(key: &'static str, problem: impl Into<String>) -> SettingsError {
        SettingsError::Common(CommonSettingsError::invalid(key, problem))
    }
}

impl From<config::ConfigError> for SettingsError {
    fn from(error: config::ConfigError) -> SettingsError {
        SettingsError::Common(CommonSettingsError::Load(error))
    }
}

/// Everything `todo-app` can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The public API listener.
    pub server: ServerSettings,
    /// The health and metrics listener.
    pub admin: AdminSettings,
    /// PostgreSQL and the actors that use it.
    pub database: DatabaseSettings,
    /// HTTPS for the API listener; plain HTTP when both paths are unset.
    #[serde(default)]
    pub tls: TlsSettings,
    /// API keys and per-key rate limiting.
    pub auth: AuthSettings,
    /// Where log lines go: stdout and/or the file the sidecar tails.
    pub log: LogSettings,
}

/// The API listener (`server.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests). `PORT` overrides it.
    pub port: u16,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Largest JSON request body accepted; larger ones get 413.
    pub json_body_limit_bytes: usize,
    /// Time a client has to send the request head.
    pub client_request_timeout_ms: u64,
    /// Time a client has to send the whole request body, once the handler
    /// starts reading it; then 408 and the connection is closed.
    pub request_body_timeout_ms: u64,
    /// Idle time after which a keep-alive connection is closed.
    pub keep_alive_seconds: u64,
    /// Time between readiness turning 503 and the listener closing, on SIGTERM.
    pub shutdown_readiness_delay_seconds: u64,
    /// Time in-flight requests get to finish once the listener is closed.
    pub shutdown_timeout_seconds: u64,
}

/// The admin listener (`admin.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
}

/// PostgreSQL (`database.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`; a secret, never logged.
    pub url: SecretString,
    /// Statements in flight at once on one HTTP worker's connection.
    pub pipeline_depth: usize,
    /// Longest wait for a request's statement to start (a pipeline slot,
    /// the connection) before it is refused unrun.
    pub queue_timeout_ms: u64,
    /// Requests waiting to start beyond this many (all workers together)
    /// are refused at once.
    pub max_queue: usize,
    /// `statement_timeout` set on every connection.
    pub statement_timeout_ms: u64,
    /// libpq `connect_timeout` for new connections.
    pub connect_timeout_seconds: u64,
    /// Longest wait for the migration lock (held by another replica or a
    /// `todo-app migrate` that is migrating) before start-up fails.
    pub migration_lock_wait_seconds: u64,
    /// Whether `serve` runs pending migrations before it listens.
    pub migrate_on_start: bool,
}

/// HTTPS for the API listener (`tls.*`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_path: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<PathBuf>,
    /// How often both files are read to pick up a renewed certificate; 0
    /// reads them only at start-up.
    pub reload_interval_seconds: u64,
}

impl TlsSettings {
    /// How often to look for a renewed certificate, or `None` for never.
    pub fn reload_interval(&self) -> Option<Duration> {
        (self.reload_interval_seconds > 0)
            .then(|| Duration::from_secs(self.reload_interval_seconds))
    }
}

/// API keys and rate limiting (`auth.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// How long a validated key is trusted before it is looked up again.
    pub key_cache_ttl_seconds: u64,
    /// Steady requests per second per key; 0 disables rate limiting.
    pub rate_limit_per_second: u32,
    /// Extra requests a key may send at once above the steady rate.
    pub rate_limit_burst: u32,
    /// Database lookups per second, across the process, of key ids this
    /// replica has not seen: caps what random well-formed tokens can cost
    /// the database. 0 disables the limit.
    pub unknown_key_lookups_per_second: u32,
    /// Lookups of unseen key ids allowed at once above the steady rate.
    pub unknown_key_lookup_burst: u32,
    /// Requests one API key may have in flight at once (being read,
    /// waiting for the database, being answered); more get 429 at once.
    /// 0 disables the limit.
    pub max_in_flight_per_key: u32,
}

/// Where log lines go (`log.*`): stdout, the optional file, or both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Also write every log line to this file (the chart points it at the
    /// volume the sidecar tails); unset means stdout only.
    pub file: Option<PathBuf>,
    /// Write every log line to stdout; false only with `file` set (the
    /// lines then go to the file alone).
    pub stdout: bool,
    /// Rotate the file before it grows past this size.
    pub max_bytes: u64,
    /// Rotated files kept (`app.log.1` … `app.log.N`).
    pub max_files: usize,
}

impl Settings {
    /// Loads the layered settings from the process environment and validates them.
    pub fn load() -> Result<Settings, SettingsError> {
        Self::load_from(&std::env::vars().collect())
    }

    /// Loads the layered settings from the given variables (tests pass their own).
    pub fn load_from(vars: &HashMap<String, String>) -> Result<Settings, SettingsError> {
        let environment = vars
            .get("APP_ENVIRONMENT")
            .cloned()
            .unwrap_or_else(|| "local".to_string());
        if environment != "local" && environment != "production" {
            return Err(SettingsError::UnknownEnvironment(environment));
        }
        let config_dir = vars
            .get("APP_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("configuration"));
        // The environment file is optional only when nobody asked for one:
        // a production pod without its file must not start on local defaults.
        let environment_file_required = vars.contains_key("APP_ENVIRONMENT");
        let settings: Settings = load_layers(Layers {
            base_yaml: BASE_YAML,
            file: Some((
                config_dir.join(format!("{environment}.yaml")),
                environment_file_required,
            )),
            env_prefix: "APP",
            vars,
            overrides: &[("database.url", "DATABASE_URL"), ("server.port", "PORT")],
        })?;
        settings.validate()?;
        validate_trace_sampler(vars)?;
        Ok(settings)
    }

    /// Rejects values that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.server.json_body_limit_bytes < 1024 {
            return Err(SettingsError::invalid(
                "server.json_body_limit_bytes",
                "must be at least 1024",
            ));
        }
        if self.server.request_body_timeout_ms == 0 {
            return Err(SettingsError::invalid(
                "server.request_body_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.database.pipeline_depth == 0 {
            return Err(SettingsError::invalid(
                "database.pipeline_depth",
                "must be at least 1",
            ));
        }
        if self.database.max_queue == 0 {
            return Err(SettingsError::invalid(
                "database.max_queue",
                "must be at least 1",
            ));
        }
        if !is_postgres_url(self.database.url.expose_secret()) {
            // Never echo the value: it may hold a password.
            return Err(SettingsError::invalid(
                "database.url",
                "must be a postgres:// or postgresql:// URL with every `%` followed by two hex digits (percent-encode a `%` in the password as %25)",
            ));
        }
        match (&self.tls.cert_path, &self.tls.key_path) {
            (Some(_), None) => {
                return Err(SettingsError::invalid(
                    "tls.key_path",
                    "is required with tls.cert_path",
                ));
            }
            (None, Some(_)) => {
                return Err(SettingsError::invalid(
                    "tls.cert_path",
                    "is required with tls.key_path",
                ));
            }
            _ => {}
        }
        if !self.log.stdout && self.log.file.is_none() {
            return Err(SettingsError::invalid(
                "log.stdout",
                "may be false only with log.file set (the log lines would go nowhere)",
            ));
        }
        if self.log.max_bytes < 4096 {
            return Err(SettingsError::invalid(
                "log.max_bytes",
                "must be at least 4096",
            ));
        }
        if self.auth.rate_limit_per_second > 0 && self.auth.rate_limit_burst == 0 {
            return Err(SettingsError::invalid(
                "auth.rate_limit_burst",
                "must be at least 1 when auth.rate_limit_per_second is set",
            ));
        }
        if self.auth.unknown_key_lookups_per_second > 0 && self.auth.unknown_key_lookup_burst == 0 {
            return Err(SettingsError::invalid(
                "auth.unknown_key_lookup_burst",
                "must be at least 1 when auth.unknown_key_lookups_per_second is set",
            ));
        }
        Ok(())
    }
}

impl ServerSettings {
    pub fn client_request_timeout(&self) -> Duration {
        Duration::from_millis(self.client_request_timeout_ms)
    }
    pub fn request_body_timeout(&self) -> Duration {
        Duration::from_millis(self.request_body_timeout_ms)
    }
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_seconds)
    }
    pub fn shutdown_readiness_delay(&self) -> Duration {
        Duration::from_secs(self.shutdown_readiness_delay_seconds)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_seconds)
    }
}

impl DatabaseSettings {
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }
    pub fn migration_lock_wait(&self) -> Duration {
        Duration::from_secs(self.migration_lock_wait_seconds)
    }

    /// The URL handed to libpq, with the connection options of
    /// [`with_connection_options`].
    pub fn connection_url(&self) -> SecretString {
        with_connection_options(
            &self.url,
            Duration::from_secs(self.connect_timeout_seconds),
            "todo-app",
        )
    }

    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }
}

impl AuthSettings {
    pub fn key_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.key_cache_ttl_seconds)
    }
}
