//! remote_write against a real Prometheus (Debian's `prometheus`, started on
//! a free loopback port with its remote-write receiver on), read back
//! through its HTTP query API.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::aggregate::RULES_YAML;
use crate::helpers::{
    AppFixture, ChildGuard, TestDb, free_port, http, scrape, sidecar_for, start_run, value,
    wait_for, with_config_file,
};

/// A Prometheus of its own, stopped (and its storage removed) on drop.
struct Prometheus {
    port: u16,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start() -> Prometheus {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("writes the config");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts prometheus (Debian package prometheus)");
        let mut guard = ChildGuard(child);
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            if let Ok(Some(status)) = guard.0.try_wait() {
                panic!("prometheus exited at start-up: {status}");
            }
            http(port, "GET", "/-/ready").filter(|(status, _)| *status == 200)
        });
        Prometheus {
            port,
            _child: guard,
            _dir: dir,
        }
    }

    fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// An instant query: each series' labels (without `__name__`) and value.
    fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, String)> {
        let encoded: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let (status, body) = http(self.port, "GET", &format!("/api/v1/query?query={encoded}"))
            .expect("Prometheus answers queries");
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        answer["data"]["result"]
            .as_array()
            .expect("a vector")
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .filter(|(name, _)| *name != "__name__")
                    .map(|(name, value)| (name.clone(), value.as_str().expect("text").to_string()))
                    .collect();
                (
                    labels,
                    series["value"][1].as_str().expect("value").to_string(),
                )
            })
            .collect()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[test]
fn aggregate_remote_write_pushes_the_aggregated_series_to_a_real_prometheus() {
    // Arrange
    let prometheus = Prometheus::start();
    let db = TestDb::create();
    let app = AppFixture::start(crate::aggregate::APP_EXPOSITION);
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut sidecar = sidecar_for(&db, &app.url());
    with_config_file(&mut sidecar, &dir, RULES_YAML);
    sidecar
        .set(
            "SIDECAR__AGGREGATE__REMOTE_WRITE__URL",
            &prometheus.write_url(),
        )
        .set("SIDECAR__AGGREGATE__REMOTE_WRITE__INTERVAL_SECONDS", "1")
        .set(
            "SIDECAR__AGGREGATE__REMOTE_WRITE__LABELS__INSTANCE",
            "pod-under-test",
        );

    // Act
    let running = start_run(&sidecar);

    // Assert: the sums of the rules, as Prometheus stored them.
    let requests = wait_for(
        "the aggregated requests in Prometheus",
        Duration::from_secs(60),
        || {
            let mut found =
                prometheus.query("todo_http_requests_total{instance=\"pod-under-test\"}");
            found.sort();
            (found.len() == 3).then_some(found)
        },
    );
    let common = [("instance", "pod-under-test"), ("job", "todo-backend")];
    let with = |extra: &[(&str, &str)]| {
        let mut all = labels(&common);
        all.extend(labels(extra));
        all
    };
    assert_eq!(
        requests,
        vec![
            (
                with(&[("route", "/api/todos"), ("status_class", "2xx")]),
                "18".to_string()
            ),
            (
                with(&[("route", "/api/todos"), ("status_class", "4xx")]),
                "2".to_string()
            ),
            (
                with(&[("route", "/api/todos/{id}"), ("status_class", "5xx")]),
                "1".to_string()
            ),
        ]
    );
    assert_eq!(
        prometheus.query("todo_http_request_duration_seconds_bucket{le=\"0.1\"}"),
        vec![(
            with(&[("route", "/api/todos"), ("le", "0.1")]),
            "19".to_string()
        )]
    );
    assert_eq!(
        prometheus.query("todo_http_request_duration_seconds_sum"),
        vec![(with(&[("route", "/api/todos")]), "0.75".to_string())]
    );
    assert_eq!(
        prometheus.query("todo_app_up"),
        vec![(with(&[]), "1".to_string())]
    );
    assert_eq!(
        prometheus.query("todo_pg_up"),
        vec![(with(&[]), "1".to_string())]
    );
    // Pushes within one cache TTL (1 s interval, 5 s TTL) share a collection
    // yet each is stored: three distinct samples of todo_app_up.
    wait_for("three pushes stored", Duration::from_secs(60), || {
        let counts = prometheus.query("count_over_time(todo_app_up[5m])");
        (counts.first()?.1.parse::<f64>().ok()? >= 3.0).then_some(())
    });
    // Nothing failed or was dropped; something was sent.
    let body = scrape(running.port);
    assert_eq!(
        value(&body, "todo_remote_write_samples_failed_total"),
        Some(0.0)
    );
    assert_eq!(
        value(&body, "todo_remote_write_samples_dropped_total"),
        Some(0.0)
    );
    assert!(value(&body, "todo_remote_write_samples_sent_total").expect("sent") > 0.0);

    // Act: the app goes away.
    app.set(|answer| answer.body = "<html>down</html>\n".to_string());

    // Assert: its series go stale in Prometheus at once (no five-minute
    // lookback of the last value) while todo_app_up says 0.
    wait_for(
        "the app's series to go stale",
        Duration::from_secs(60),
        || {
            let up = prometheus.query("todo_app_up");
            (prometheus
                .query("todo_http_requests_total{instance=\"pod-under-test\"}")
                .is_empty()
                && up.first().map(|(_, value)| value.as_str()) == Some("0"))
            .then_some(())
        },
    );
    assert!(
        prometheus
            .query("todo_http_request_duration_seconds_bucket")
            .is_empty()
    );
}

#[test]
fn aggregate_remote_write_to_an_unreachable_receiver_counts_failed_samples() {
    // Arrange: nothing listens on the receiver's port.
    let db = TestDb::create();
    let app = AppFixture::start(crate::aggregate::APP_EXPOSITION);
    let mut sidecar = sidecar_for(&db, &app.url());
    sidecar
        .set(
            "SIDECAR__AGGREGATE__REMOTE_WRITE__URL",
            &format!("http://127.0.0.1:{}/api/v1/write", free_port()),
        )
        .set("SIDECAR__AGGREGATE__REMOTE_WRITE__INTERVAL_SECONDS", "1")
        .set("SIDECAR__AGGREGATE__REMOTE_WRITE__MAX_RETRIES", "2")
        .set("SIDECAR__AGGREGATE__REMOTE_WRITE__MIN_BACKOFF_MS", "10")
        .set("SIDECAR__AGGREGATE__REMOTE_WRITE__MAX_BACKOFF_MS", "20");

    // Act
    let running = start_run(&sidecar);

    // Assert: given up after the retries, counted, nothing sent or dropped.
    let body = wait_for("failed samples", Duration::from_secs(60), || {
        let body = scrape(running.port);
        (value(&body, "todo_remote_write_samples_failed_total")? > 0.0).then_some(body)
    });
    assert_eq!(
        value(&body, "todo_remote_write_samples_sent_total"),
        Some(0.0)
    );
    assert_eq!(
        value(&body, "todo_remote_write_samples_dropped_total"),
        Some(0.0)
    );
    // The reason shows in readiness once the next collection reports.
    let ready = wait_for("the failure in readiness", Duration::from_secs(30), || {
        let (_, ready) = http(running.port, "GET", "/health/ready")?;
        ready.contains("remote_write:").then_some(ready)
    });
    assert!(
        ready.contains("samples given up: cannot reach http://127.0.0.1:"),
        "{ready}"
    );
}
