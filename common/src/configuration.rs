//! Layered configuration loading, the same for both programs: compiled-in
//! defaults, an optional file, `PREFIX__SECTION__KEY` variables, then
//! conventional variables overriding single keys, every struct rejecting
//! unknown keys. Also the error both programs report when a setting is wrong
//! (todo-app wraps it for its own `APP_ENVIRONMENT` check).

use std::collections::HashMap;
use std::path::PathBuf;

use config::{Config, Environment, File, FileFormat};

/// Why a program's settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A layer did not parse, or a key is unknown or of the wrong type.
    #[error("invalid configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value that parses but cannot work.
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid {
        /// The key, as an operator writes it (`database.url`).
        key: &'static str,
        /// What is wrong with its value (never the value: it may be a secret).
        problem: String,
    },
}

impl SettingsError {
    /// A value that parses but cannot work, naming its key (never its value,
    /// which may be a secret).
    pub fn invalid(key: &'static str, problem: impl Into<String>) -> SettingsError {
        SettingsError::Invalid {
            key,
            problem: problem.into(),
        }
    }
}

/// The layers of one program's configuration, lowest first: compiled-in
/// defaults, an optional file, `PREFIX__SECTION__KEY` variables, then
/// conventional variables overriding single keys.
pub struct Layers<'a> {
    /// The defaults, compiled into the binary.
    pub base_yaml: &'a str,
    /// A YAML file and whether it must exist.
    pub file: Option<(PathBuf, bool)>,
    /// `APP` or `SIDECAR`: variables `PREFIX__SECTION__KEY` set `section.key`.
    pub env_prefix: &'a str,
    /// The process environment (tests pass their own).
    pub vars: &'a HashMap<String, String>,
    /// `(key, VARIABLE)`: the variable, when set, wins for that key (`DATABASE_URL`, `PORT`).
    pub overrides: &'a [(&'a str, &'a str)],
}

/// Builds and deserializes the layered configuration.
pub fn load_layers<T: serde::de::DeserializeOwned>(
    layers: Layers<'_>,
) -> Result<T, config::ConfigError> {
    let marker = format!("{}__", layers.env_prefix);
    // Only this program's variables: the `config` crate would otherwise read
    // the real process environment, which tests must not depend on.
    let own_vars: config::Map<String, String> = layers
        .vars
        .iter()
        .filter(|(name, _)| name.starts_with(&marker))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let mut builder =
        Config::builder().add_source(File::from_str(layers.base_yaml, FileFormat::Yaml));
    if let Some((path, required)) = layers.file {
        builder = builder.add_source(File::from(path).required(required));
    }
    builder = builder.add_source(
        Environment::with_prefix(layers.env_prefix)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(own_vars)),
    );
    for (key, variable) in layers.overrides {
        builder = builder.set_override_option(*key, layers.vars.get(*variable).cloned())?;
    }
    builder.build()?.try_deserialize()
}

/// The samplers of the standard `OTEL_TRACES_SAMPLER` variable that
/// opentelemetry_sdk implements (it reads the variable itself when the
/// tracer provider is built).
const TRACE_SAMPLERS: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// Checks `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` the way the
/// settings are checked. opentelemetry_sdk replaces an unknown sampler with
/// `parentbased_always_on` and a missing or invalid ratio with 1.0, and says
/// so only through its internal log, which these builds do not have: a typo
/// would silently export every span (in todo-app, every request's: about
/// 20% of GET throughput). Both programs call it when they load their settings.
pub fn validate_trace_sampler(vars: &HashMap<String, String>) -> Result<(), SettingsError> {
    let Some(sampler) = vars.get("OTEL_TRACES_SAMPLER").filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    if !TRACE_SAMPLERS.contains(&sampler.as_str()) {
        return Err(SettingsError::invalid(
            "OTEL_TRACES_SAMPLER",
            format!("must be one of {}", TRACE_SAMPLERS.join(", ")),
        ));
    }
    if sampler.ends_with("traceidratio") {
        let ratio = vars
            .get("OTEL_TRACES_SAMPLER_ARG")
            .and_then(|arg| arg.trim().parse::<f64>().ok());
        if !ratio.is_some_and(|ratio| (0.0..=1.0).contains(&ratio)) {
            return Err(SettingsError::invalid(
                "OTEL_TRACES_SAMPLER_ARG",
                format!("must be a ratio from 0 to 1 with OTEL_TRACES_SAMPLER={sampler}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        section: Section,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        port: u16,
        name: String,
    }

    const BASE: &str = "section:\n  port: 1\n  name: base\n";

    fn load(vars: &[(&str, &str)], file: Option<(PathBuf, bool)>) -> Result<Sample, SettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Ok(load_layers(Layers {
            base_yaml: BASE,
            file,
            env_prefix: "TEST",
            vars: &vars,
            overrides: &[("section.port", "PORT")],
        })?)
    }

    #[test]
    fn each_layer_wins_over_the_ones_below_it() {
        let dir = std::env::temp_dir().join(format!("todo-common-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("layers.yaml");
        std::fs::write(&file, "section:\n  name: file\n  port: 2\n").unwrap();

        let from_file = load(&[], Some((file.clone(), true))).unwrap();
        let from_variable = load(
            &[("TEST__SECTION__NAME", "variable")],
            Some((file.clone(), true)),
        )
        .unwrap();
        let overridden = load(
            &[
                ("TEST__SECTION__PORT", "3"),
                ("PORT", "4"),
                ("OTHER__SECTION__NAME", "x"),
            ],
            Some((file.clone(), true)),
        )
        .unwrap();

        assert_eq!(
            (from_file.section.port, from_file.section.name.as_str()),
            (2, "file")
        );
        assert_eq!(from_variable.section.name, "variable");
        assert_eq!(
            (overridden.section.port, overridden.section.name.as_str()),
            (4, "file")
        );
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn an_unknown_key_and_a_missing_required_file_are_errors() {
        let unknown = load(&[("TEST__SECTION__PORTT", "3")], None).unwrap_err();
        let missing =
            load(&[], Some((PathBuf::from("/nonexistent/layers.yaml"), true))).unwrap_err();
        let optional = load(
            &[],
            Some((PathBuf::from("/nonexistent/layers.yaml"), false)),
        );

        assert!(
            unknown.to_string().starts_with("invalid configuration: "),
            "{unknown}"
        );
        assert!(unknown.to_string().contains("portt"), "{unknown}");
        assert!(
            missing.to_string().contains("/nonexistent/layers.yaml"),
            "{missing}"
        );
        assert_eq!(optional.unwrap().section.name, "base");
    }

    #[test]
    fn an_invalid_value_names_its_key_and_not_its_value() {
        let error = SettingsError::invalid("database.url", "must be a postgres:// URL");

        assert_eq!(
            error.to_string(),
            "invalid configuration: `database.url` must be a postgres:// URL"
        );
    }
}
