//! The `logship` section of the settings: which files to tail, where the
//! checkpoint lives, how lines are batched and retried, the dead-letter file.
//! Each sink's sub-section is in its folder (`sinks/<name>/config.rs`).
//!
//! Re-exported by `crate::configuration`. The component runs when `paths` is
//! not empty: the chart sets the paths exactly when it gives the app a log
//! file, so a separate `enabled` flag could only disagree with them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use super::sinks::SinksSettings;
use crate::configuration::SettingsError;

/// Log shipping (`logship.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogshipSettings {
    /// The live log files to tail (`/var/log/todo/app.log`); their rotated
    /// siblings (`app.log.1`, …) are found by name. Empty: no log shipping.
    /// As a variable, comma-separated.
    #[serde(deserialize_with = "paths_from_list_or_string")]
    pub paths: Vec<PathBuf>,
    /// The checkpoint file (fingerprint and acknowledged offset per path).
    pub checkpoint_path: PathBuf,
    /// Where to start a file that no checkpoint covers (first start, or a
    /// missing or corrupt checkpoint): `beginning` or `end`.
    pub start_at: StartAt,
    /// A longer line is cut to this many bytes and marked as truncated.
    pub max_line_bytes: usize,
    /// A file is identified by a hash of its first bytes, up to this many.
    pub fingerprint_bytes: usize,
    /// How often files are looked at again once everything was read.
    pub poll_interval_ms: u64,
    /// How many rotated siblings (`app.log.1` … `app.log.N`) are looked at
    /// after a rotation or a restart; at least the app's `log.max_files`.
    pub max_rotated_files: usize,
    /// Batching of lines into one request per sink.
    pub batch: BatchSettings,
    /// Retries of retryable failures (connection errors, 429, 5xx).
    pub retry: RetrySettings,
    /// Where batches refused by a sink (other 4xx) go.
    pub dead_letter: DeadLetterSettings,
    /// On SIGTERM, how long shipping goes on draining: every file is read
    /// to its end (the last unterminated line too), sinks are retried, the
    /// checkpoint is written. What is not shipped by then is counted and
    /// logged. 0: stop at once. The pod's grace period must cover it.
    pub drain_timeout_seconds: u64,
    /// The sinks; each one that is configured gets every line.
    pub sinks: SinksSettings,
}

/// Where a file without a checkpoint is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// From its first byte: nothing is missed, old lines may be shipped again.
    Beginning,
    /// From its current end: only lines written from now on.
    End,
}

/// Batching (`logship.batch.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    /// A batch is sent once it holds this many lines...
    pub max_lines: usize,
    /// ...or this many bytes of lines...
    pub max_bytes: usize,
    /// ...or its oldest line has waited this long.
    pub timeout_ms: u64,
}

/// Retries (`logship.retry.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// First wait after a retryable failure; doubled after each one.
    pub initial_backoff_ms: u64,
    /// The wait never grows beyond this (a `Retry-After` may ask for longer,
    /// up to ten times this).
    pub max_backoff_ms: u64,
    /// One request (connect, send, answer) must finish within this.
    pub request_timeout_ms: u64,
}

/// The dead-letter file (`logship.dead_letter.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSettings {
    /// One JSON object per refused line. When it would grow past
    /// `max_bytes` it is renamed to `<path>.1` (replacing the previous one),
    /// so at most twice `max_bytes` are kept.
    pub path: PathBuf,
    /// Size bound of the dead-letter file.
    pub max_bytes: u64,
}

impl LogshipSettings {
    /// Whether `run` starts the log shipper.
    pub fn enabled(&self) -> bool {
        !self.paths.is_empty()
    }

    /// How long draining goes on after SIGTERM.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_seconds)
    }

    /// Poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(1))
    }

    /// Rejects values that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !self.enabled() {
            return Ok(());
        }
        self.sinks.validate()?;
        if self.max_line_bytes < 64 {
            return Err(SettingsError::invalid(
                "logship.max_line_bytes",
                "must be at least 64",
            ));
        }
        if self.fingerprint_bytes < 16 {
            return Err(SettingsError::invalid(
                "logship.fingerprint_bytes",
                "must be at least 16",
            ));
        }
        if self.batch.max_lines == 0 || self.batch.max_bytes == 0 {
            return Err(SettingsError::invalid(
                "logship.batch",
                "max_lines and max_bytes must be at least 1",
            ));
        }
        if self.retry.request_timeout_ms == 0 {
            return Err(SettingsError::invalid(
                "logship.retry.request_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.dead_letter.max_bytes < 4096 {
            return Err(SettingsError::invalid(
                "logship.dead_letter.max_bytes",
                "must be at least 4096 (smaller keeps no refused line)",
            ));
        }
        if self.retry.initial_backoff_ms == 0
            || self.retry.max_backoff_ms < self.retry.initial_backoff_ms
        {
            return Err(SettingsError::invalid(
                "logship.retry",
                "initial_backoff_ms must be at least 1 and at most max_backoff_ms",
            ));
        }
        Ok(())
    }
}

/// `paths` as a YAML list, or as one comma-separated string (a variable).
fn paths_from_list_or_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Paths {
        List(Vec<String>),
        One(String),
    }
    let list = match Paths::deserialize(deserializer)? {
        Paths::List(list) => list,
        Paths::One(text) => text.split(',').map(str::to_string).collect(),
    };
    Ok(list
        .iter()
        .map(|path| path.trim())
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::configuration::load_for_test as load;

    #[test]
    fn log_shipping_is_off_by_default() {
        let settings = load(&[]).unwrap();
        assert!(!settings.logship.enabled());
    }

    #[test]
    fn paths_come_comma_separated_from_a_variable() {
        let settings = load(&[
            ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log, /logs/other.log"),
            ("SIDECAR__LOGSHIP__SINKS__STDOUT__ENABLED", "true"),
        ])
        .unwrap();
        assert!(settings.logship.enabled());
        assert_eq!(
            settings.logship.paths,
            vec![
                std::path::PathBuf::from("/logs/app.log"),
                std::path::PathBuf::from("/logs/other.log")
            ]
        );
    }

    #[test]
    fn values_that_would_lose_every_line_name_their_key() {
        for (variable, value, key) in [
            (
                "SIDECAR__LOGSHIP__RETRY__REQUEST_TIMEOUT_MS",
                "0",
                "logship.retry.request_timeout_ms",
            ),
            (
                "SIDECAR__LOGSHIP__DEAD_LETTER__MAX_BYTES",
                "0",
                "logship.dead_letter.max_bytes",
            ),
        ] {
            let error = load(&[
                ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
                ("SIDECAR__LOGSHIP__SINKS__STDOUT__ENABLED", "true"),
                (variable, value),
            ])
            .unwrap_err();
            assert!(error.contains(key), "{error}");
        }
    }

    #[test]
    fn an_unknown_logship_key_is_refused_with_its_name() {
        let error = load(&[("SIDECAR__LOGSHIP__BATCH__MAX_LINEZ", "5")]).unwrap_err();
        assert!(error.contains("max_linez"), "{error}");
    }
}
