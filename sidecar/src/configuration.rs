//! Typed settings of `todo-sidecar` and how they are loaded.
//!
//! Layers, lowest first: `sidecar/configuration/base.yaml` (compiled in), then
//! the file named by `SIDECAR_CONFIG_FILE` (required when the variable is set),
//! then `SIDECAR__SECTION__KEY` environment variables, then `DATABASE_URL`.
//! Every struct rejects unknown keys and [`Settings::validate`] rejects values
//! that would fail later, so a typo stops start-up with the key named.
//!
//! Each component owns one section (`backup`, `logship`, `aggregate`): adding
//! a component is one field here and one section in base.yaml. The layering
//! itself is `todo_common::configuration::load_layers`, shared by both programs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
/// Why the settings could not be loaded: the error both programs share.
pub use todo_common::configuration::SettingsError;
use todo_common::configuration::{Layers, load_layers, validate_trace_sampler};
use todo_common::pg_url::is_postgres_url;

pub use crate::aggregate::config::{AggregateSettings, RemoteWriteSettings, RuleSettings};
pub use crate::logship::config::LogshipSettings;

/// Deserializes an optional text setting, an empty (or blank) value being
/// unset: `SIDECAR__…__URL=""` is how an operator turns a sink off, and
/// must not become a URL that fails on every request.
pub fn empty_is_none<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = Option::<String>::deserialize(deserializer)?;
    Ok(value.filter(|text| !text.trim().is_empty()))
}

/// Whether `url` is an absolute `http://` or `https://` URL with a host.
pub fn is_http_url(url: &str) -> bool {
    url::Url::parse(url)
        .is_ok_and(|parsed| matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some())
}

/// The defaults, compiled in so the binary runs where no file is shipped.
const BASE_YAML: &str = include_str!("../configuration/base.yaml");

/// Smallest part S3 accepts in a multipart upload (all but the last part).
pub const MIN_PART_SIZE_BYTES: usize = 5 * 1024 * 1024;

/// Everything `todo-sidecar` can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The health and metrics listener.
    pub admin: AdminSettings,
    /// The database the sidecar backs up.
    pub database: DatabaseSettings,
    /// The backup component.
    pub backup: BackupSettings,
    /// The metric aggregation component (`crate::aggregate::config`).
    pub aggregate: AggregateSettings,
    /// The log shipping component (`crate::logship::config`).
    pub logship: LogshipSettings,
}

/// The admin listener (`admin.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
    /// On SIGTERM, components get this long to stop before the process exits.
    pub shutdown_timeout_seconds: u64,
}

/// PostgreSQL (`database.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`; a secret, never logged.
    pub url: SecretString,
    /// libpq `connect_timeout` for every connection the sidecar and its child
    /// processes open, so a black-holed host fails fast instead of hanging.
    pub connect_timeout_seconds: u64,
}

/// Backups (`backup.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// Whether `run` starts the backup component.
    pub enabled: bool,
    /// Cron expression (UTC) for backups taken by `run`; none: no scheduled backups.
    pub schedule: Option<String>,
    /// pg_dump to use; none: the first `pg_dump` on PATH.
    pub pg_dump_path: Option<PathBuf>,
    /// pg_restore to use; none: the first `pg_restore` on PATH.
    pub pg_restore_path: Option<PathBuf>,
    /// zstd compression level, 1..=19.
    pub compression_level: i32,
    /// Longest wait for a table lock (behind a migration, `VACUUM FULL`…)
    /// while the snapshot opens and pg_dump runs; then the backup fails.
    pub lock_wait_seconds: u64,
    /// How often `run` re-reads the store to refresh the snapshot metrics.
    pub refresh_interval_seconds: u64,
    /// Where snapshots are kept.
    pub store: StoreSettings,
    /// Which snapshots `prune` keeps.
    pub retention: RetentionSettings,
}

/// The kind of snapshot store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A local directory (a PersistentVolume in the chart).
    Local,
    /// S3-compatible object storage.
    S3,
}

/// The snapshot store (`backup.store.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `local` or `s3`.
    pub kind: StoreKind,
    /// local: the directory holding the snapshots.
    pub path: PathBuf,
    /// s3: the bucket.
    pub bucket: Option<String>,
    /// s3: key prefix under which snapshots are written.
    pub prefix: String,
    /// s3: endpoint URL; none means AWS itself.
    pub endpoint: Option<String>,
    /// s3: region.
    pub region: String,
    /// s3: path-style addressing (`endpoint/bucket/key`) instead of virtual hosts.
    pub path_style: bool,
    /// s3: file holding the access key id; none: the standard AWS sources.
    pub access_key_id_file: Option<PathBuf>,
    /// s3: file holding the secret access key; none: the standard AWS sources.
    pub secret_access_key_file: Option<PathBuf>,
    /// s3: multipart part size in bytes, at least 5 MiB.
    pub part_size_bytes: usize,
    /// s3: retries of one failed request (5xx, timeouts) before the backup fails.
    pub max_retries: usize,
    /// s3: one request must complete within this time.
    pub request_timeout_seconds: u64,
}

/// Retention (`backup.retention.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// The newest N complete snapshots are kept.
    pub keep_last: usize,
    /// Plus the newest snapshot of each of the last D UTC days that have one.
    pub daily: usize,
    /// Plus the newest snapshot of each of the last W ISO weeks that have one.
    pub weekly: usize,
    /// Plus the newest snapshot of each of the last M UTC months that have one.
    pub monthly: usize,
    /// Incomplete snapshots older than this are deleted by `prune`; younger
    /// ones may belong to a backup still running.
    pub incomplete_grace_seconds: u64,
}

/// Loads settings from the given variables only; the message on failure
/// (for the configuration tests of every component section).
#[cfg(test)]
pub(crate) fn load_for_test(pairs: &[(&str, &str)]) -> Result<Settings, String> {
    let vars: HashMap<String, String> = pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    Settings::load_from(&vars).map_err(|error| error.to_string())
}

impl Settings {
    /// Loads the layered settings from the process environment and validates them.
    pub fn load() -> Result<Settings, SettingsError> {
        Self::load_from(&std::env::vars().collect())
    }

    /// Loads the layered settings from the given variables (tests pass their own).
    pub fn load_from(vars: &HashMap<String, String>) -> Result<Settings, SettingsError> {
        // A file nobody asked for is not looked for: the pod's configuration
        // is explicit, and a stray file in the working directory cannot leak in.
        let settings: Settings = load_layers(Layers {
            base_yaml: BASE_YAML,
            file: vars
                .get("SIDECAR_CONFIG_FILE")
                .map(|path| (PathBuf::from(path), true)),
            env_prefix: "SIDECAR",
            vars,
            overrides: &[("database.url", "DATABASE_URL")],
        })?;
        settings.validate()?;
        validate_trace_sampler(vars)?;
        Ok(settings)
    }

    /// Rejects values that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !is_postgres_url(self.database.url.expose_secret()) {
            // Never echo the value: it may hold a password.
            return Err(SettingsError::invalid(
                "database.url",
                "must be a postgres:// or postgresql:// URL with every `%` followed by two hex digits (percent-encode a `%` in the password as %25)",
            ));
        }
        let backup = &self.backup;
        if !(1..=19).contains(&backup.compression_level) {
            return Err(SettingsError::invalid(
                "backup.compression_level",
                "must be within 1..=19",
            ));
        }
        if backup.refresh_interval_seconds == 0 {
            return Err(SettingsError::invalid(
                "backup.refresh_interval_seconds",
                "must be at least 1",
            ));
        }
        if let Some(schedule) = &backup.schedule
            && let Err(error) = parse_schedule(schedule)
        {
            return Err(SettingsError::invalid(
                "backup.schedule",
                format!("is not a cron expression: {error}"),
            ));
        }
        let store = &backup.store;
        if store.kind == StoreKind::S3 {
            if store.bucket.as_deref().is_none_or(str::is_empty) {
                return Err(SettingsError::invalid(
                    "backup.store.bucket",
                    "is required when backup.store.kind is s3",
                ));
            }
            if store.part_size_bytes < MIN_PART_SIZE_BYTES {
                return Err(SettingsError::invalid(
                    "backup.store.part_size_bytes",
                    format!("must be at least {MIN_PART_SIZE_BYTES} (the S3 minimum)"),
                ));
            }
            if store.access_key_id_file.is_some() != store.secret_access_key_file.is_some() {
                return Err(SettingsError::invalid(
                    "backup.store.secret_access_key_file",
                    "and backup.store.access_key_id_file must be set together",
                ));
            }
        }
        if store.prefix.contains("..") {
            return Err(SettingsError::invalid(
                "backup.store.prefix",
                "must not contain `..`",
            ));
        }
        if backup.retention.keep_last == 0 {
            return Err(SettingsError::invalid(
                "backup.retention.keep_last",
                "must be at least 1",
            ));
        }
        if backup.lock_wait_seconds == 0 {
            return Err(SettingsError::invalid(
                "backup.lock_wait_seconds",
                "must be at least 1 (0 would mean waiting for ever)",
            ));
        }
        self.aggregate.validate()?;
        self.logship.validate()?;
        Ok(())
    }
}

impl DatabaseSettings {
    /// Timeout for opening a connection.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_seconds.max(1))
    }
}

impl AdminSettings {
    /// Time components get to stop on SIGTERM.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_seconds)
    }
}

/// Parses a cron expression: five fields, or six with seconds first.
pub fn parse_schedule(expression: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::Cron::from_str(expression)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn the_defaults_load_and_validate() {
        let settings = Settings::load_from(&HashMap::new()).expect("base.yaml is valid");
        assert_eq!(settings.admin.port, 9001);
        assert_eq!(settings.backup.store.kind, StoreKind::Local);
        assert!(settings.backup.schedule.is_none());
    }

    #[test]
    fn variables_and_database_url_override_the_file() {
        let settings = Settings::load_from(&vars(&[
            ("SIDECAR__BACKUP__STORE__KIND", "s3"),
            ("SIDECAR__BACKUP__STORE__BUCKET", "backups"),
            ("SIDECAR__BACKUP__STORE__PATH_STYLE", "true"),
            ("SIDECAR__BACKUP__RETENTION__KEEP_LAST", "3"),
            ("DATABASE_URL", "postgres://u:p@db:5432/todo"),
        ]))
        .expect("valid settings");
        assert_eq!(settings.backup.store.kind, StoreKind::S3);
        assert!(settings.backup.store.path_style);
        assert_eq!(settings.backup.retention.keep_last, 3);
        assert_eq!(
            settings.database.url.expose_secret(),
            "postgres://u:p@db:5432/todo"
        );
    }

    #[test]
    fn a_backup_lock_wait_of_zero_is_refused() {
        let error = load_for_test(&[("SIDECAR__BACKUP__LOCK_WAIT_SECONDS", "0")]).unwrap_err();
        assert!(error.contains("backup.lock_wait_seconds"), "{error}");
    }

    #[test]
    fn an_unknown_key_is_rejected_with_its_name() {
        let error = Settings::load_from(&vars(&[("SIDECAR__BACKUP__STORE__KINDD", "s3")]))
            .expect_err("unknown key");
        assert!(error.to_string().contains("kindd"), "{error}");
    }

    #[test]
    fn s3_without_a_bucket_is_rejected() {
        let error = Settings::load_from(&vars(&[("SIDECAR__BACKUP__STORE__KIND", "s3")]))
            .expect_err("bucket missing");
        assert!(error.to_string().contains("backup.store.bucket"), "{error}");
    }

    #[test]
    fn a_bad_schedule_is_rejected() {
        let error = Settings::load_from(&vars(&[("SIDECAR__BACKUP__SCHEDULE", "every day")]))
            .expect_err("bad cron");
        assert!(error.to_string().contains("backup.schedule"), "{error}");
    }

    #[test]
    fn a_trace_sampler_the_sdk_would_silently_replace_is_refused_naming_the_variable() {
        // The sidecar exports traces too when OTEL_* asks: a typo would sample every span.
        let error = Settings::load_from(&vars(&[("OTEL_TRACES_SAMPLER", "parentbased_ratio")]))
            .expect_err("unknown sampler");
        assert!(error.to_string().contains("OTEL_TRACES_SAMPLER"), "{error}");
        let error = Settings::load_from(&vars(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "10%"),
        ]))
        .expect_err("bad ratio");
        assert!(
            error.to_string().contains("OTEL_TRACES_SAMPLER_ARG"),
            "{error}"
        );
        let accepted = Settings::load_from(&vars(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]));
        assert!(accepted.is_ok(), "{:?}", accepted.err());
    }

    #[test]
    fn a_bad_database_url_is_rejected_without_echoing_it() {
        let error = Settings::load_from(&vars(&[("DATABASE_URL", "mysql://u:hunter2@x/db")]))
            .expect_err("bad scheme");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
