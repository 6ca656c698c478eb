//! Layered configuration: unknown keys and invalid values stop start-up with
//! the key named; secrets never appear in messages.

use std::collections::HashMap;
use std::process::Command;

use secrecy::ExposeSecret;
use todo_app::configuration::Settings;

use crate::helpers::configuration_dir;

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    vars.entry("APP_CONFIG_DIR".into())
        .or_insert_with(|| configuration_dir().display().to_string());
    vars
}

#[test]
fn defaults_load_and_conventional_variables_win() {
    let settings = Settings::load_from(&vars(&[
        ("DATABASE_URL", "postgres://app:pw@db:5432/todo"),
        ("PORT", "8080"),
        ("APP__DATABASE__PIPELINE_DEPTH", "3"),
        ("APP__DATABASE__URL", "postgres://ignored@elsewhere/x"),
    ]))
    .unwrap();

    assert_eq!(settings.server.port, 8080);
    assert_eq!(settings.admin.port, 9000);
    assert_eq!(settings.database.pipeline_depth, 3);
    assert_eq!(
        settings.database.url.expose_secret(),
        "postgres://app:pw@db:5432/todo"
    );
    assert_eq!(settings.server.json_body_limit_bytes, 64 * 1024);
    assert_eq!(
        settings.server.host, "127.0.0.1",
        "local.yaml is layered over base.yaml"
    );
}

#[test]
fn an_unknown_key_in_a_variable_is_named() {
    let error = Settings::load_from(&vars(&[("APP__SERVER__PROT", "1")])).unwrap_err();

    assert!(error.to_string().contains("prot"), "{error}");
}

#[test]
fn an_unknown_key_in_a_file_is_named() {
    let dir = std::env::temp_dir().join(format!("todo-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("local.yaml"), "server:\n  prot: 1\n").unwrap();

    let error =
        Settings::load_from(&vars(&[("APP_CONFIG_DIR", dir.to_str().unwrap())])).unwrap_err();

    assert!(error.to_string().contains("prot"), "{error}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_invalid_value_is_named() {
    let not_a_number = Settings::load_from(&vars(&[("APP__SERVER__PORT", "abc")])).unwrap_err();
    let zero_pipeline =
        Settings::load_from(&vars(&[("APP__DATABASE__PIPELINE_DEPTH", "0")])).unwrap_err();
    let half_tls =
        Settings::load_from(&vars(&[("APP__TLS__CERT_PATH", "/tmp/cert.pem")])).unwrap_err();
    let no_lookup_burst =
        Settings::load_from(&vars(&[("APP__AUTH__UNKNOWN_KEY_LOOKUP_BURST", "0")])).unwrap_err();

    assert!(
        no_lookup_burst
            .to_string()
            .contains("auth.unknown_key_lookup_burst"),
        "{no_lookup_burst}"
    );
    assert!(not_a_number.to_string().contains("port"), "{not_a_number}");
    assert!(
        zero_pipeline
            .to_string()
            .contains("database.pipeline_depth"),
        "{zero_pipeline}"
    );
    assert!(half_tls.to_string().contains("tls.key_path"), "{half_tls}");
}

#[test]
fn an_unknown_environment_or_missing_environment_file_is_an_error() {
    let unknown = Settings::load_from(&vars(&[("APP_ENVIRONMENT", "staging")])).unwrap_err();
    let empty_dir = std::env::temp_dir().join(format!("todo-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&empty_dir).unwrap();
    let missing = Settings::load_from(&vars(&[
        ("APP_ENVIRONMENT", "production"),
        ("APP_CONFIG_DIR", empty_dir.to_str().unwrap()),
    ]))
    .unwrap_err();

    assert!(unknown.to_string().contains("APP_ENVIRONMENT"), "{unknown}");
    assert!(missing.to_string().contains("production"), "{missing}");
    std::fs::remove_dir_all(empty_dir).unwrap();
}

#[test]
fn a_database_url_that_is_not_postgres_is_rejected_without_echoing_it() {
    let error =
        Settings::load_from(&vars(&[("DATABASE_URL", "mysql://root:hunter2@db/x")])).unwrap_err();

    assert!(error.to_string().contains("database.url"), "{error}");
    assert!(!error.to_string().contains("hunter2"));
}

#[test]
fn a_database_url_with_a_broken_escape_is_rejected_before_libpq_can_quote_the_password() {
    // libpq would answer `invalid percent-encoded token: "hun%zzter2"`.
    let error = Settings::load_from(&vars(&[(
        "DATABASE_URL",
        "postgres://app:hun%zzter2@127.0.0.1:1/x",
    )]))
    .unwrap_err();

    assert!(error.to_string().contains("database.url"), "{error}");
    assert!(
        error.to_string().contains("%25"),
        "says how to write a %: {error}"
    );
    assert!(!error.to_string().contains("hun%zzter2"));
}

#[test]
fn the_server_exits_with_a_clear_message_and_no_password_when_the_database_is_unreachable() {
    let port = crate::helpers::free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_todo-app"))
        .env(
            "DATABASE_URL",
            format!("postgres://app:s3cret-pass@127.0.0.1:{port}/todo"),
        )
        .env("APP_CONFIG_DIR", configuration_dir())
        .env("APP__SERVER__PORT", "0")
        .env("APP__ADMIN__PORT", "0")
        .env_remove("APP_ENVIRONMENT")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Failed to connect to the database"),
        "{stderr}"
    );
    assert!(!stdout.contains("s3cret-pass") && !stderr.contains("s3cret-pass"));
    for line in stdout.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("stdout carries only JSON log lines: {line}"));
        assert!(entry["level"].is_number() && entry["msg"].is_string());
    }
}

#[test]
fn an_unknown_key_stops_the_binary_with_exit_code_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_todo-app"))
        .env("APP_CONFIG_DIR", configuration_dir())
        .env("APP__DATABASE__POOLSIZE", "3")
        .env_remove("APP_ENVIRONMENT")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("poolsize"));
}

#[test]
fn an_unwritable_log_file_stops_start_up_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_todo-app"))
        .env("APP_CONFIG_DIR", configuration_dir())
        .env("APP__LOG__FILE", "/proc/todo-app-cannot-write-here/app.log")
        .env_remove("APP_ENVIRONMENT")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open log.file /proc/todo-app-cannot-write-here/app.log"),
        "{stderr}"
    );
}

#[test]
fn log_stdout_false_sends_the_lines_to_the_file_alone_and_needs_a_file() {
    let with_file = Settings::load_from(&vars(&[
        ("APP__LOG__STDOUT", "false"),
        ("APP__LOG__FILE", "/tmp/app.log"),
    ]))
    .unwrap();
    let without_file = Settings::load_from(&vars(&[("APP__LOG__STDOUT", "false")])).unwrap_err();

    assert!(!with_file.log.stdout);
    assert!(
        Settings::load_from(&vars(&[])).unwrap().log.stdout,
        "stdout by default"
    );
    assert!(
        without_file.to_string().contains("`log.stdout`"),
        "{without_file}"
    );
}

#[test]
fn log_stdout_false_without_a_file_stops_the_binary_with_exit_code_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_todo-app"))
        .env("APP_CONFIG_DIR", configuration_dir())
        .env("APP__LOG__STDOUT", "false")
        .env_remove("APP__LOG__FILE")
        .env_remove("APP_ENVIRONMENT")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("log.stdout"));
}

#[test]
fn the_standard_trace_sampler_variables_are_accepted() {
    for (sampler, arg) in [
        ("parentbased_traceidratio", Some("0.1")),
        ("traceidratio", Some("1")),
        ("always_off", None),
        ("parentbased_always_on", None),
    ] {
        let mut pairs = vec![("OTEL_TRACES_SAMPLER", sampler)];
        pairs.extend(arg.map(|arg| ("OTEL_TRACES_SAMPLER_ARG", arg)));

        let loaded = Settings::load_from(&vars(&pairs));

        assert!(loaded.is_ok(), "{sampler} {arg:?}: {:?}", loaded.err());
    }
}

#[test]
fn a_trace_sampler_the_sdk_would_silently_replace_is_refused_naming_the_variable() {
    // opentelemetry_sdk would sample every trace instead, saying so nowhere.
    let cases = [
        (
            vec![("OTEL_TRACES_SAMPLER", "parentbased_ratio")],
            "`OTEL_TRACES_SAMPLER`",
        ),
        (
            vec![("OTEL_TRACES_SAMPLER", "xray")],
            "`OTEL_TRACES_SAMPLER`",
        ),
        (
            vec![("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")],
            "`OTEL_TRACES_SAMPLER_ARG`",
        ),
        (
            vec![
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "10%"),
            ],
            "`OTEL_TRACES_SAMPLER_ARG`",
        ),
        (
            vec![
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ],
            "`OTEL_TRACES_SAMPLER_ARG`",
        ),
    ];
    for (pairs, named) in cases {
        let error = Settings::load_from(&vars(&pairs)).unwrap_err();

        assert!(error.to_string().contains(named), "{pairs:?}: {error}");
    }
}
