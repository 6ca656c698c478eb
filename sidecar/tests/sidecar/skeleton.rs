//! `run`: the admin listener, configuration errors, scheduled backups and
//! metrics read from the store, graceful SIGTERM.

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use crate::helpers::{ChildGuard, Sidecar, TestDb, free_port, http, spawn_run, wait_for};

/// A running `todo-sidecar run` and the admin port it logged.
struct Running {
    guard: ChildGuard,
    port: u16,
    lines: mpsc::Receiver<String>,
}

fn start_run(sidecar: &Sidecar) -> Running {
    let (guard, port, lines) = spawn_run(sidecar);
    Running { guard, port, lines }
}

fn metric(port: u16, name: &str) -> Option<f64> {
    let (status, body) = http(port, "GET", "/metrics")?;
    assert_eq!(status, 200);
    body.lines()
        .find(|line| line.starts_with(&format!("{name} ")))
        .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
}

fn terminate(mut running: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &running.guard.0.id().to_string()])
        .status()
        .expect("runs kill");
    assert!(status.success());
    let exit = wait_for(
        "the sidecar to exit after SIGTERM",
        Duration::from_secs(30),
        || running.guard.0.try_wait().expect("waits"),
    );
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
    // Every stdout line is a bunyan JSON record.
    for line in running.lines.try_iter() {
        let record: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        for field in ["v", "level", "name", "hostname", "pid", "time", "msg"] {
            assert!(record.get(field).is_some(), "{field} missing in {line}");
        }
    }
}

#[test]
fn run_serves_health_and_metrics_and_stops_on_sigterm() {
    // Arrange
    let db = TestDb::create();
    let sidecar = Sidecar::local(&db);

    // Act
    let running = start_run(&sidecar);

    // Assert
    let (status, body) = http(running.port, "GET", "/health/live").expect("answers");
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = wait_for(
        "the backup component to report",
        Duration::from_secs(30),
        || {
            let (status, body) = http(running.port, "GET", "/health/ready")?;
            assert_eq!(status, 200, "{body}");
            let ready: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            (ready["components"]["backup"]["status"] == "ok").then_some(ready)
        },
    );
    assert_eq!(ready["status"], "ok");
    for name in [
        "todo_backup_last_success_timestamp_seconds",
        "todo_backup_last_duration_seconds",
        "todo_backup_last_size_bytes",
        "todo_backup_snapshots",
        "todo_backup_failures_total",
        "todo_backup_restore_drill_last_success_timestamp_seconds",
        // Counters whose label values are known in advance exist at 0.
        r#"todo_logship_checkpoint_errors_total{reason="corrupt"}"#,
        r#"todo_app_scrape_failures_total{reason="parse"}"#,
        "todo_aggregation_series_dropped_total",
        "todo_remote_write_samples_failed_total",
    ] {
        assert_eq!(metric(running.port, name), Some(0.0), "{name}");
    }
    terminate(running);
}

#[test]
fn run_exposes_its_own_dropped_log_lines_and_spans_at_zero_from_start_up() {
    // Arrange: nothing answers at the app's address, so every series is the sidecar's.
    let db = TestDb::create();
    let mut sidecar = Sidecar::local(&db);
    let nowhere = format!("http://127.0.0.1:{}/metrics", free_port());
    sidecar.set("SIDECAR__AGGREGATE__APP_METRICS_URL", &nowhere);

    // Act
    let running = start_run(&sidecar);

    // Assert: the sidecar registers the counters its own logging and tracing
    // count into (they were the app's alone, so the sidecar's drops went unseen).
    for name in [
        "todo_log_lines_dropped_total",
        r#"todo_trace_spans_dropped_total{reason="queue_full"}"#,
        r#"todo_trace_spans_dropped_total{reason="export_failed"}"#,
        r#"todo_trace_spans_dropped_total{reason="collector_down"}"#,
        r#"todo_http_connection_errors_total{reason="header"}"#,
    ] {
        assert_eq!(metric(running.port, name), Some(0.0), "{name}");
    }
    terminate(running);
}

#[test]
fn an_unknown_configuration_key_stops_start_up_naming_the_key() {
    let db = TestDb::create();
    let mut sidecar = Sidecar::local(&db);
    sidecar.set("SIDECAR__BACKUP__RETENTION__KEEP_LAZT", "3");

    let outcome = sidecar.run(&["run"]);

    outcome.assert_code(2).assert_message("keep_lazt");
}

#[test]
fn scheduled_backups_run_and_the_metrics_come_from_the_store_after_a_restart() {
    // Arrange: a backup every second.
    let db = TestDb::create();
    db.seed_small();
    let mut sidecar = Sidecar::local(&db);
    sidecar.set("SIDECAR__BACKUP__SCHEDULE", "* * * * * *");
    let running = start_run(&sidecar);

    // Act
    wait_for("a scheduled backup", Duration::from_secs(60), || {
        metric(running.port, "todo_backup_snapshots").filter(|count| *count >= 1.0)
    });
    terminate(running);

    // Assert: a new process without a schedule reports the store's snapshots.
    let snapshots = sidecar.list();
    assert!(!snapshots.is_empty());
    let newest_finished = chrono::DateTime::parse_from_rfc3339(
        snapshots[0]["finished_at"].as_str().expect("finished_at"),
    )
    .expect("RFC 3339")
    .timestamp_millis() as f64
        / 1000.0;
    sidecar.vars.remove("SIDECAR__BACKUP__SCHEDULE");
    let running = start_run(&sidecar);
    let count = wait_for(
        "the metrics to be read from the store",
        Duration::from_secs(30),
        || metric(running.port, "todo_backup_snapshots").filter(|count| *count >= 1.0),
    );
    assert_eq!(count as usize, snapshots.len());
    let last_success =
        metric(running.port, "todo_backup_last_success_timestamp_seconds").expect("exposed");
    assert!(
        (last_success - newest_finished).abs() < 0.01,
        "{last_success} vs {newest_finished}"
    );
    assert!(metric(running.port, "todo_backup_last_size_bytes").expect("exposed") > 0.0);
    assert_eq!(
        metric(running.port, "todo_backup_failures_total"),
        Some(0.0)
    );
    terminate(running);
}

#[test]
fn a_failing_scheduled_backup_counts_a_failure_and_the_sidecar_keeps_serving() {
    // Arrange: the database is unreachable (nothing listens on the port).
    let db = TestDb::create();
    let mut sidecar = Sidecar::local(&db);
    let port = free_port();
    sidecar
        .set(
            "DATABASE_URL",
            &format!("postgres://postgres@127.0.0.1:{port}/nothing"),
        )
        .set("SIDECAR__BACKUP__SCHEDULE", "* * * * * *");

    // Act
    let running = start_run(&sidecar);

    // Assert
    wait_for(
        "a failed backup to be counted",
        Duration::from_secs(60),
        || metric(running.port, "todo_backup_failures_total").filter(|count| *count >= 1.0),
    );
    // The same event wrote the log line, with the step that failed.
    let logged = wait_for("the failure's log line", Duration::from_secs(10), || {
        let line = running
            .lines
            .recv_timeout(Duration::from_millis(100))
            .ok()?;
        let record: serde_json::Value = serde_json::from_str(&line).expect("JSON lines");
        (record["msg"] == "backup failed; nothing was published").then_some(record)
    });
    assert_eq!(logged["stage"], "connect", "{logged}");
    assert_eq!(logged["level"], 50, "an ERROR line: {logged}");
    // Health follows once the store has been re-read after the failure (a
    // moment after the counter and the log line): wait for it, and the
    // sidecar stays ready while it says so.
    let body = wait_for(
        "the backup component to report degraded",
        Duration::from_secs(10),
        || {
            let (status, body) = http(running.port, "GET", "/health/ready")?;
            assert_eq!(status, 200, "{body}");
            let ready: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            (ready["components"]["backup"]["status"] == "degraded").then_some(body)
        },
    );
    assert!(body.contains("last backup failed"), "{body}");
    assert_eq!(metric(running.port, "todo_backup_snapshots"), Some(0.0));
    terminate(running);
}

#[test]
fn a_backup_store_that_cannot_be_set_up_fails_only_the_backup_component() {
    // Arrange: S3 with a credential file missing from the "mounted Secret".
    let db = TestDb::create();
    let mut sidecar = Sidecar::local(&db);
    sidecar
        .set("SIDECAR__BACKUP__STORE__KIND", "s3")
        .set("SIDECAR__BACKUP__STORE__BUCKET", "backups")
        .set(
            "SIDECAR__BACKUP__STORE__ACCESS_KEY_ID_FILE",
            "/nonexistent/secret/access-key-id",
        )
        .set(
            "SIDECAR__BACKUP__STORE__SECRET_ACCESS_KEY_FILE",
            "/nonexistent/secret/secret-access-key",
        );

    // Act
    let running = start_run(&sidecar);

    // Assert: the sidecar serves, and says which component failed and why.
    let body = wait_for(
        "the backup component to be reported failed",
        Duration::from_secs(30),
        || {
            let (_, body) = http(running.port, "GET", "/health/ready")?;
            body.contains("\"failed\"").then_some(body)
        },
    );
    let ready: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(ready["components"]["backup"]["status"], "failed", "{body}");
    assert!(
        ready["components"]["backup"]["message"]
            .as_str()
            .unwrap()
            .contains("access-key-id"),
        "{body}"
    );
    assert!(
        metric(running.port, "todo_backup_failures_total").is_some(),
        "/metrics is still served"
    );
    terminate(running);
}

/// The status and message of `component` in `/health/ready`.
fn component_health(port: u16, component: &str) -> Option<(String, String)> {
    let (_, body) = http(port, "GET", "/health/ready")?;
    let ready: serde_json::Value = serde_json::from_str(&body).ok()?;
    let health = &ready["components"][component];
    Some((
        health["status"].as_str()?.to_string(),
        health["message"].as_str().unwrap_or_default().to_string(),
    ))
}

/// One policy for every component: a secret file that cannot be read fails
/// that component only (reported with the file named, and retried until the
/// Secret is there); the sidecar and the other components go on.
#[test]
fn a_secret_file_that_cannot_be_read_fails_only_its_component_until_it_appears() {
    let secrets = tempfile::tempdir().expect("a temporary directory");
    let logs = tempfile::tempdir().expect("a temporary directory");
    let cases = [
        (
            "logship",
            "loki-token",
            vec![
                (
                    "SIDECAR__LOGSHIP__PATHS",
                    logs.path().join("app.log").display().to_string(),
                ),
                (
                    "SIDECAR__LOGSHIP__CHECKPOINT_PATH",
                    logs.path().join("checkpoint.json").display().to_string(),
                ),
                (
                    "SIDECAR__LOGSHIP__SINKS__LOKI__URL",
                    "http://127.0.0.1:9/".to_string(),
                ),
                (
                    "SIDECAR__LOGSHIP__SINKS__LOKI__HTTP__AUTH",
                    "bearer".to_string(),
                ),
                (
                    "SIDECAR__LOGSHIP__SINKS__LOKI__HTTP__TOKEN_FILE",
                    secrets.path().join("loki-token").display().to_string(),
                ),
            ],
        ),
        (
            "aggregate",
            "remote-write-token",
            vec![
                (
                    "SIDECAR__AGGREGATE__REMOTE_WRITE__URL",
                    "http://127.0.0.1:9/api/v1/write".to_string(),
                ),
                (
                    "SIDECAR__AGGREGATE__REMOTE_WRITE__AUTH",
                    "bearer".to_string(),
                ),
                (
                    "SIDECAR__AGGREGATE__REMOTE_WRITE__TOKEN_FILE",
                    secrets
                        .path()
                        .join("remote-write-token")
                        .display()
                        .to_string(),
                ),
            ],
        ),
    ];
    for (component, file, vars) in cases {
        // Arrange
        let db = TestDb::create();
        let mut sidecar = Sidecar::local(&db);
        for (name, value) in &vars {
            sidecar.set(name, value);
        }

        // Act
        let running = start_run(&sidecar);

        // Assert: failed with the file named; the backup component is fine.
        let (_, message) = wait_for(
            &format!("the {component} component to be reported failed"),
            Duration::from_secs(30),
            || component_health(running.port, component).filter(|(status, _)| status == "failed"),
        );
        assert!(message.contains(file), "{component}: {message}");
        assert_ne!(
            component_health(running.port, "backup").map(|(status, _)| status),
            Some("failed".to_string())
        );
        // The Secret appears: the next restart of the component takes it.
        std::fs::write(secrets.path().join(file), "t0ken\n").expect("writes the secret");
        wait_for(
            &format!("the {component} component to run again"),
            Duration::from_secs(30),
            || component_health(running.port, component).filter(|(status, _)| status != "failed"),
        );
        terminate(running);
    }
}

#[test]
fn check_config_accepts_a_valid_configuration_without_touching_the_database() {
    // A database that does not exist and a port nothing listens on: a check
    // that connected would fail.
    let db = TestDb::create();
    let mut sidecar = Sidecar::local(&db);
    sidecar.set(
        "DATABASE_URL",
        &format!("postgres://nobody@127.0.0.1:{}/nothing", free_port()),
    );
    sidecar.set("SIDECAR__LOGSHIP__PATHS", "/nonexistent/app.log");
    sidecar.set("SIDECAR__LOGSHIP__SINKS__STDOUT__ENABLED", "true");

    let outcome = sidecar.run(&["check-config"]);

    outcome
        .assert_code(0)
        .assert_message("the configuration is valid")
        .assert_message("backup, logship, aggregate");
}

#[test]
fn check_config_refuses_an_invalid_configuration_naming_the_key() {
    let db = TestDb::create();
    let mut sidecar = Sidecar::local(&db);
    sidecar.set("SIDECAR__BACKUP__COMPRESSION_LEVEL", "42");

    let outcome = sidecar.run(&["check-config"]);

    outcome
        .assert_code(2)
        .assert_message("backup.compression_level");
}

#[test]
fn check_config_refuses_an_elasticsearch_index_pattern_chrono_cannot_format() {
    let db = TestDb::create();
    let mut sidecar = Sidecar::local(&db);
    // Log shipping on, to stdout only: the Elasticsearch section is checked
    // all the same, so turning that sink on later cannot fail at run time.
    let log = sidecar.store_dir.with_file_name("app.log");
    sidecar.set("SIDECAR__LOGSHIP__PATHS", log.to_str().unwrap());
    sidecar.set("SIDECAR__LOGSHIP__SINKS__STDOUT__ENABLED", "true");
    sidecar.set("SIDECAR__LOGSHIP__SINKS__ELASTICSEARCH__INDEX", "todo-%Q");

    let outcome = sidecar.run(&["check-config"]);

    outcome
        .assert_code(2)
        .assert_message("logship.sinks.elasticsearch.index");
}

#[test]
fn check_config_names_an_unknown_key_of_the_configuration_file() {
    let db = TestDb::create();
    let mut sidecar = Sidecar::local(&db);
    let file = sidecar.store_dir.with_file_name("sidecar.yaml");
    std::fs::write(&file, "backup:\n  retention:\n    keep_lazt: 3\n").unwrap();
    sidecar.set("SIDECAR_CONFIG_FILE", file.to_str().unwrap());

    let outcome = sidecar.run(&["check-config"]);

    outcome.assert_code(2).assert_message("keep_lazt");
}
