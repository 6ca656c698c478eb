//! Metric aggregation through the real binary: a fixed exposition served by
//! a small real HTTP server stands in for the app's `/metrics`; the sidecar's
//! `/metrics` is checked value by value and with `promtool check metrics`.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use crate::helpers::{
    AppFixture, TestDb, assert_promtool_accepts, free_port, http, readiness, sample_lines, scrape,
    sidecar_for, spawn_run, start_run, timed_scrape, value, wait_for, with_config_file,
};
use todo_sidecar::aggregate::events::ScrapeFailureReason;

/// An exposition like the app's: counters with status, a histogram, gauges
/// and process metrics (which the sidecar also exposes).
pub const APP_EXPOSITION: &str = "\
# HELP todo_http_requests_total API requests answered, by method, matched route pattern and status code.
# TYPE todo_http_requests_total counter
todo_http_requests_total{method=\"GET\",route=\"/api/todos\",status=\"200\"} 10
todo_http_requests_total{method=\"GET\",route=\"/api/todos\",status=\"204\"} 3
todo_http_requests_total{method=\"GET\",route=\"/api/todos\",status=\"404\"} 2
todo_http_requests_total{method=\"POST\",route=\"/api/todos\",status=\"201\"} 5
todo_http_requests_total{method=\"GET\",route=\"/api/todos/{id}\",status=\"500\"} 1
# HELP todo_http_request_duration_seconds Time from receiving an API request to its response.
# TYPE todo_http_request_duration_seconds histogram
todo_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/todos\",le=\"0.005\"} 4
todo_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/todos\",le=\"0.1\"} 14
todo_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/todos\",le=\"+Inf\"} 15
todo_http_request_duration_seconds_sum{method=\"GET\",route=\"/api/todos\"} 0.5
todo_http_request_duration_seconds_count{method=\"GET\",route=\"/api/todos\"} 15
todo_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/todos\",le=\"0.005\"} 1
todo_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/todos\",le=\"0.1\"} 5
todo_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/todos\",le=\"+Inf\"} 5
todo_http_request_duration_seconds_sum{method=\"POST\",route=\"/api/todos\"} 0.25
todo_http_request_duration_seconds_count{method=\"POST\",route=\"/api/todos\"} 5
# HELP todo_db_pool_connections Connections in the database pool, by state (idle or active).
# TYPE todo_db_pool_connections gauge
todo_db_pool_connections{state=\"active\"} 1
todo_db_pool_connections{state=\"idle\"} 7
# HELP todo_db_executor_queue_depth Database messages sent to the executors and not yet picked up.
# TYPE todo_db_executor_queue_depth gauge
todo_db_executor_queue_depth 0
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 42
";

/// Rules used with [`APP_EXPOSITION`].
pub const RULES_YAML: &str = "\
aggregate:
  rules:
    - metric: todo_http_requests_total
      type: counter
      collapse_status: true
      by: [route, status_class]
    - metric: todo_http_request_duration_seconds
      type: histogram
      by: [route, le]
    - metric: todo_db_pool_connections
      type: gauge
      function: sum
      by: []
    - metric: todo_db_executor_queue_depth
      drop: true
";

fn migrate_and_add_todos(db: &TestDb, completed: usize, open: usize) {
    let mut connection = db.connect();
    todo_app::db::migrations::run_pending_migrations(
        &mut connection,
        std::time::Duration::from_secs(60),
    )
    .expect("migrates");
    for (count, done) in [(completed, true), (open, false)] {
        for index in 0..count {
            connection
                .batch_execute(&format!(
                    "INSERT INTO todos (id, title, completed, owner) VALUES (gen_random_uuid(), 'todo {index}', {done}, 'alice')"
                ))
                .expect("inserts a todo");
        }
    }
}

#[test]
fn aggregate_serves_the_apps_metrics_summed_by_the_rules_with_database_gauges() {
    // Arrange
    let db = TestDb::create();
    migrate_and_add_todos(&db, 2, 3);
    let app = AppFixture::start(APP_EXPOSITION);
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut sidecar = sidecar_for(&db, &app.url());
    with_config_file(&mut sidecar, &dir, RULES_YAML);
    sidecar.set("SIDECAR__AGGREGATE__CACHE_TTL_MS", "0");
    let running = start_run(&sidecar);

    // Act
    let body = scrape(running.port);

    // Assert: hand-computed sums.
    assert_eq!(
        sample_lines(&body, "todo_http_requests_total"),
        vec![
            "todo_http_requests_total{route=\"/api/todos\",status_class=\"2xx\"} 18",
            "todo_http_requests_total{route=\"/api/todos\",status_class=\"4xx\"} 2",
            "todo_http_requests_total{route=\"/api/todos/{id}\",status_class=\"5xx\"} 1",
        ]
    );
    assert_eq!(
        sample_lines(&body, "todo_http_request_duration_seconds"),
        vec![
            "todo_http_request_duration_seconds_bucket{route=\"/api/todos\",le=\"0.005\"} 5",
            "todo_http_request_duration_seconds_bucket{route=\"/api/todos\",le=\"0.1\"} 19",
            "todo_http_request_duration_seconds_bucket{route=\"/api/todos\",le=\"+Inf\"} 20",
            "todo_http_request_duration_seconds_sum{route=\"/api/todos\"} 0.75",
            "todo_http_request_duration_seconds_count{route=\"/api/todos\"} 20",
        ]
    );
    assert_eq!(
        sample_lines(&body, "todo_db_pool_connections"),
        vec!["todo_db_pool_connections 8"]
    );
    assert!(sample_lines(&body, "todo_db_executor_queue_depth").is_empty());
    // Both processes' process_open_fds, told apart by `source`.
    assert_eq!(value(&body, "process_open_fds{source=\"app\"}"), Some(42.0));
    assert!(value(&body, "process_open_fds{source=\"sidecar\"}").is_some());
    assert_eq!(value(&body, "todo_app_up"), Some(1.0));
    assert!(value(&body, "todo_app_scrape_duration_seconds").expect("duration") < 3.0);
    assert_eq!(value(&body, "todo_aggregation_series"), Some(10.0));
    assert_eq!(
        value(&body, "todo_aggregation_series_dropped_total"),
        Some(0.0)
    );
    assert_eq!(value(&body, "todo_pg_up"), Some(1.0));
    assert_eq!(value(&body, "todo_todos{completed=\"true\"}"), Some(2.0));
    assert_eq!(value(&body, "todo_todos{completed=\"false\"}"), Some(3.0));
    // The size as PostgreSQL reports it (polled: background writes such as
    // a hint-bit flush could change it between the two reads).
    wait_for("the database size", Duration::from_secs(30), || {
        let size: f64 = db
            .query("SELECT pg_database_size(current_database())::text AS value")
            .parse()
            .expect("a number");
        (value(&scrape(running.port), "todo_pg_database_size_bytes") == Some(size)).then_some(())
    });
    assert_promtool_accepts(&body);
}

#[test]
fn aggregate_database_gauges_count_connections_and_vanish_when_the_database_is_down() {
    // Arrange: one idle session, one idle in an open transaction.
    let db = TestDb::create();
    let app = AppFixture::start(APP_EXPOSITION);
    let mut sidecar = sidecar_for(&db, &app.url());
    sidecar.set("SIDECAR__AGGREGATE__CACHE_TTL_MS", "0");
    let running = start_run(&sidecar);
    let _idle = db.connect();
    let mut in_transaction = db.connect();
    in_transaction
        .batch_execute("BEGIN; SELECT 1")
        .expect("opens a transaction");
    let opened = Instant::now();

    // Act / Assert: the sidecar's own session is the active one.
    let body = wait_for("the connections by state", Duration::from_secs(30), || {
        let body = scrape(running.port);
        (value(&body, "todo_pg_connections{state=\"active\"}") == Some(1.0)
            && value(&body, "todo_pg_connections{state=\"idle\"}") == Some(1.0)
            && value(&body, "todo_pg_connections{state=\"idle_in_transaction\"}") == Some(1.0)
            && value(
                &body,
                "todo_pg_connections{state=\"idle_in_transaction_aborted\"}",
            ) == Some(0.0))
        .then_some(body)
    });
    let age = value(&body, "todo_pg_oldest_transaction_age_seconds").expect("age");
    assert!(
        age >= 0.0 && age <= opened.elapsed().as_secs_f64() + 1.0,
        "age {age}"
    );
    // The age grows with the open transaction (a query falling back to its
    // default of 0 would not).
    std::thread::sleep(Duration::from_millis(1500));
    let later = value(
        &scrape(running.port),
        "todo_pg_oldest_transaction_age_seconds",
    )
    .expect("age");
    assert!(later >= 1.0, "age {later} after 1.5 s");
    // No todos table: the gauge is absent rather than a made-up zero.
    assert!(sample_lines(&body, "todo_todos").is_empty());

    // Act: the database goes away.
    drop(in_transaction);
    drop(_idle);
    let mut admin =
        PgConnection::establish(&crate::helpers::admin_url()).expect("admin connection");
    admin
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", db.name))
        .expect("drops the database");

    // Assert: todo_pg_up 0, the gauges absent, the app's metrics still served.
    let body = wait_for("todo_pg_up 0", Duration::from_secs(30), || {
        let body = scrape(running.port);
        (value(&body, "todo_pg_up") == Some(0.0)).then_some(body)
    });
    for gauge in [
        "todo_pg_connections",
        "todo_pg_database_size_bytes",
        "todo_pg_oldest_transaction_age_seconds",
        "todo_todos",
    ] {
        assert!(
            !body.lines().any(|line| line.starts_with(gauge)),
            "{gauge} present while the database is down:\n{body}"
        );
    }
    assert_eq!(value(&body, "todo_app_up"), Some(1.0));
    assert_eq!(sample_lines(&body, "todo_http_requests_total").len(), 5);
    let ready = readiness(running.port);
    assert!(ready.contains("cannot read the database gauges"), "{ready}");
    assert_promtool_accepts(&body);
}

#[test]
fn aggregate_a_failed_scrape_is_logged_and_counted_under_the_same_reason() {
    // Arrange: every scrape of the sidecar collects anew.
    let db = TestDb::create();
    let app = AppFixture::start(APP_EXPOSITION);
    let mut sidecar = sidecar_for(&db, &app.url());
    sidecar.set("SIDECAR__AGGREGATE__CACHE_TTL_MS", "0");
    let (_guard, port, lines) = spawn_run(&sidecar);

    // Assert: before any failure, every reason is exposed at 0.
    let body = scrape(port);
    for reason in ScrapeFailureReason::ALL {
        let series = format!(
            "todo_app_scrape_failures_total{{reason=\"{}\"}}",
            reason.as_str()
        );
        assert_eq!(value(&body, &series), Some(0.0), "{series} in {body}");
    }

    // Act: the app answers something that is not an exposition.
    app.set(|answer| answer.body = "<html>502 Bad Gateway</html>\n".to_string());
    let body = scrape(port);

    // Assert: the warning and the counter name the same reason.
    let logged = wait_for(
        "the scrape failure's log line",
        Duration::from_secs(10),
        || {
            let line = lines.recv_timeout(Duration::from_millis(100)).ok()?;
            let record: serde_json::Value = serde_json::from_str(&line).expect("JSON lines");
            (record["msg"] == "cannot scrape the app's metrics").then_some(record)
        },
    );
    assert_eq!(logged["reason"], "parse", "{logged}");
    assert_eq!(
        value(&body, "todo_app_scrape_failures_total{reason=\"parse\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(&body, "todo_app_scrape_failures_total{reason=\"connect\"}"),
        Some(0.0)
    );
}

/// The app's HTTP series in an exposition: `todo_http_*` but
/// `todo_http_connection_errors_total`, which the sidecar exposes too (its
/// admin listener counts its own connection errors).
fn app_http_series(body: &str) -> Vec<&str> {
    sample_lines(body, "todo_http_")
        .into_iter()
        .filter(|line| !line.starts_with("todo_http_connection_errors_total"))
        .collect()
}

#[test]
fn aggregate_app_down_sets_app_up_to_0_and_still_serves_the_rest() {
    // Arrange: nothing listens on the app's port.
    let db = TestDb::create();
    let mut sidecar = sidecar_for(&db, &format!("http://127.0.0.1:{}/metrics", free_port()));
    sidecar.set("SIDECAR__AGGREGATE__CACHE_TTL_MS", "60000");
    let running = start_run(&sidecar);

    // Act
    let body = scrape(running.port);

    // Assert: one collection (at start-up, then cached), one failure.
    assert_eq!(value(&body, "todo_app_up"), Some(0.0));
    assert_eq!(
        value(&body, "todo_app_scrape_failures_total{reason=\"connect\"}"),
        Some(1.0)
    );
    assert_eq!(value(&body, "todo_aggregation_series"), Some(0.0));
    assert!(app_http_series(&body).is_empty(), "{body}");
    assert_eq!(value(&body, "todo_pg_up"), Some(1.0));
    assert_eq!(
        value(&body, "todo_backup_failures_total"),
        Some(0.0),
        "the sidecar's own metrics are served"
    );
    let (status, ready) = http(running.port, "GET", "/health/ready").expect("answers");
    assert_eq!(status, 200);
    assert!(ready.contains("cannot scrape the app"), "{ready}");
    assert_promtool_accepts(&body);
}

#[test]
fn aggregate_garbage_from_the_app_is_an_error_and_the_last_good_scrape_is_not_served() {
    // Arrange: a good scrape first.
    let db = TestDb::create();
    let app = AppFixture::start(APP_EXPOSITION);
    let mut sidecar = sidecar_for(&db, &app.url());
    sidecar.set("SIDECAR__AGGREGATE__CACHE_TTL_MS", "0");
    let running = start_run(&sidecar);
    let good = scrape(running.port);
    assert_eq!(value(&good, "todo_app_up"), Some(1.0));
    assert_eq!(sample_lines(&good, "todo_http_requests_total").len(), 5);

    // Act: the app answers an HTML error page with status 200.
    app.set(|answer| answer.body = "<html><body>502 Bad Gateway</body></html>\n".to_string());
    let body = scrape(running.port);

    // Assert
    assert_eq!(value(&body, "todo_app_up"), Some(0.0));
    assert_eq!(
        value(&body, "todo_app_scrape_failures_total{reason=\"parse\"}"),
        Some(1.0)
    );
    assert!(app_http_series(&body).is_empty(), "{body}");
    let ready = readiness(running.port);
    assert!(
        ready.contains("not a valid exposition: line 1: expected a metric name"),
        "{ready}"
    );

    // Act: OpenMetrics cut short (no `# EOF`) is garbage too.
    app.set(|answer| {
        answer.body = "# TYPE todo_x gauge\ntodo_x 1\n".to_string();
        answer.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    });
    let body = scrape(running.port);
    assert_eq!(value(&body, "todo_app_up"), Some(0.0));
    assert!(sample_lines(&body, "todo_x").is_empty());

    // Act: a good answer again.
    app.set(|answer| {
        answer.body = format!("{APP_EXPOSITION}# EOF\n");
    });
    let body = scrape(running.port);
    assert_eq!(value(&body, "todo_app_up"), Some(1.0));
    assert_eq!(sample_lines(&body, "todo_http_requests_total").len(), 5);
}

#[test]
fn aggregate_a_slow_app_times_out_and_the_scrape_stays_fast() {
    // Arrange: the app takes 10 s; the sidecar waits 500 ms.
    let db = TestDb::create();
    let app = AppFixture::start(APP_EXPOSITION);
    app.set(|answer| answer.delay = Duration::from_secs(10));
    let mut sidecar = sidecar_for(&db, &app.url());
    sidecar
        .set("SIDECAR__AGGREGATE__CACHE_TTL_MS", "0")
        .set("SIDECAR__AGGREGATE__SCRAPE_TIMEOUT_MS", "500");
    let running = start_run(&sidecar);

    // Act
    let (body, took) = timed_scrape(running.port);

    // Assert
    assert!(took < Duration::from_secs(5), "the scrape took {took:?}");
    assert_eq!(value(&body, "todo_app_up"), Some(0.0));
    // The start-up collection and this one.
    assert_eq!(
        value(&body, "todo_app_scrape_failures_total{reason=\"timeout\"}"),
        Some(2.0)
    );
    let duration = value(&body, "todo_app_scrape_duration_seconds").expect("duration");
    assert!((0.5..2.5).contains(&duration), "duration {duration}");
    assert_promtool_accepts(&body);
}

/// 50,000 series: 10 gauges, 25,990 counters, 2,000 histograms of 12 lines.
fn big_exposition() -> String {
    let mut text = String::with_capacity(6 << 20);
    text.push_str("# HELP todo_small Small.\n# TYPE todo_small gauge\n");
    for index in 0..10 {
        text.push_str(&format!("todo_small{{shard=\"{index}\"}} {index}\n"));
    }
    text.push_str("# HELP todo_big_total Big.\n# TYPE todo_big_total counter\n");
    for index in 0..25_990 {
        text.push_str(&format!(
            "todo_big_total{{tenant=\"t{index}\",route=\"/api/todos\"}} {index}\n"
        ));
    }
    text.push_str("# HELP todo_latency_seconds Latency.\n# TYPE todo_latency_seconds histogram\n");
    for index in 0..2_000 {
        let mut cumulative = 0;
        for le in [
            "0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "10", "+Inf",
        ] {
            cumulative += 1;
            text.push_str(&format!(
                "todo_latency_seconds_bucket{{tenant=\"t{index}\",le=\"{le}\"}} {cumulative}\n"
            ));
        }
        text.push_str(&format!(
            "todo_latency_seconds_sum{{tenant=\"t{index}\"}} 1.5\ntodo_latency_seconds_count{{tenant=\"t{index}\"}} 10\n"
        ));
    }
    text
}

#[test]
fn aggregate_50000_series_are_cut_to_the_guards_10000_and_the_excess_counted() {
    // Arrange
    let db = TestDb::create();
    let app = AppFixture::start(&big_exposition());
    let mut sidecar = sidecar_for(&db, &app.url());
    sidecar
        .set("SIDECAR__AGGREGATE__MAX_SERIES", "10000")
        .set("SIDECAR__AGGREGATE__CACHE_TTL_MS", "600000")
        .set("SIDECAR__AGGREGATE__SCRAPE_TIMEOUT_MS", "20000");
    let running = start_run(&sidecar);

    // Act: two scrapes within the cache TTL.
    let body = scrape(running.port);
    let again = scrape(running.port);

    // Assert: the 10 gauges, then 832 whole histograms (9,984 lines), then
    // 6 counters: 10,000; 40,000 dropped, counted once (one collection).
    assert_eq!(sample_lines(&body, "todo_small").len(), 10);
    let histogram = sample_lines(&body, "todo_latency_seconds");
    assert_eq!(histogram.len(), 832 * 12);
    assert_eq!(sample_lines(&body, "todo_big_total").len(), 6);
    assert_eq!(value(&body, "todo_aggregation_series"), Some(10_000.0));
    assert_eq!(
        value(&body, "todo_aggregation_series_dropped_total"),
        Some(40_000.0)
    );
    assert_eq!(
        value(&again, "todo_aggregation_series_dropped_total"),
        Some(40_000.0)
    );
    assert_eq!(value(&body, "todo_app_up"), Some(1.0));
    assert_promtool_accepts(&body);
}

#[test]
fn aggregate_invalid_rules_stop_start_up_with_the_reason() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("temporary directory");
    for (rules, expected) in [
        (
            "aggregate:\n  rules:\n    - metric: todo_db_pool_connections\n      type: gauge\n      by: [state]\n",
            "rule 1 (`todo_db_pool_connections`): a gauge (or untyped metric) has no natural aggregate: declare `function`",
        ),
        (
            "aggregate:\n  rules:\n    - metric: todo_http_request_duration_seconds\n      type: histogram\n      by: [route]\n",
            "rule 1 (`todo_http_request_duration_seconds`): `by` must keep `le` for a histogram",
        ),
        (
            "aggregate:\n  rules:\n    - metric: pool\n      type: gauge\n      by: [state]\n      function: median\n",
            "`median` is not a function (sum, min, max or avg) for key `aggregate.rules[0]function`",
        ),
        (
            "aggregate:\n  rules:\n    - metric: a_total\n      drop: true\n    - metric: pool\n      type: guage\n      by: [state]\n",
            "`guage` is not a metric type (counter, gauge, histogram, summary or untyped) for key `aggregate.rules[1]type`",
        ),
    ] {
        let mut sidecar = sidecar_for(&db, "http://127.0.0.1:9/metrics");
        with_config_file(&mut sidecar, &dir, rules);

        let outcome = sidecar.run(&["run"]);

        outcome
            .assert_code(2)
            .assert_message("`aggregate.rules")
            .assert_message(expected);
    }
}

#[test]
fn aggregate_scrapers_within_the_cache_ttl_share_one_scrape_of_the_app() {
    // Arrange
    let db = TestDb::create();
    let app = AppFixture::start(APP_EXPOSITION);
    let mut sidecar = sidecar_for(&db, &app.url());
    sidecar.set("SIDECAR__AGGREGATE__CACHE_TTL_MS", "600000");
    let running = start_run(&sidecar);
    assert_eq!(
        app.requests.load(Ordering::SeqCst),
        1,
        "the start-up collection"
    );

    // Act: four scrapers at once, then two more.
    let port = running.port;
    let bodies: Vec<String> = (0..4)
        .map(|_| std::thread::spawn(move || scrape(port)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|scraper| scraper.join().expect("scraper thread"))
        .chain([scrape(port), scrape(port)])
        .collect();

    // Assert: the app was asked once in all; every scraper got its metrics.
    assert_eq!(app.requests.load(Ordering::SeqCst), 1);
    for body in &bodies {
        assert_eq!(sample_lines(body, "todo_http_requests_total").len(), 5);
    }
}

#[test]
fn aggregate_simultaneous_scrapers_after_the_cache_expired_share_one_new_scrape() {
    // Arrange: a short TTL, and an app slow enough (500 ms) that four
    // scrapers arriving together all find the cache expired.
    let db = TestDb::create();
    let app = AppFixture::start(APP_EXPOSITION);
    let mut sidecar = sidecar_for(&db, &app.url());
    sidecar.set("SIDECAR__AGGREGATE__CACHE_TTL_MS", "1000");
    let running = start_run(&sidecar);
    let before = app.requests.load(Ordering::SeqCst);
    app.set(|answer| answer.delay = Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(1200));

    // Act
    let port = running.port;
    let bodies: Vec<String> = (0..4)
        .map(|_| std::thread::spawn(move || scrape(port)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|scraper| scraper.join().expect("scraper thread"))
        .collect();

    // Assert: one new scrape of the app, whose result every scraper got.
    assert_eq!(app.requests.load(Ordering::SeqCst), before + 1);
    for body in &bodies {
        assert_eq!(sample_lines(body, "todo_http_requests_total").len(), 5);
    }
}

#[test]
fn aggregate_the_real_apps_exposition_is_parsed_aggregated_and_valid() {
    // Arrange: todo-app's own metrics module, with known traffic.
    let app_metrics = todo_app::metrics::Metrics::new();
    for (method, route, status, count) in [
        ("GET", "/api/todos", "200", 6),
        ("GET", "/api/todos", "304", 1),
        ("POST", "/api/todos", "201", 4),
        ("POST", "/api/todos", "422", 2),
        ("GET", "/api/todos/{id}", "404", 3),
    ] {
        app_metrics
            .http_requests
            .with_label_values(&[method, route, status])
            .inc_by(count);
    }
    for (method, seconds) in [
        ("GET", 0.0004),
        ("GET", 0.003),
        ("POST", 0.003),
        ("POST", 0.2),
    ] {
        app_metrics
            .http_request_duration
            .with_label_values(&[method, "/api/todos"])
            .observe(seconds);
    }
    let exposition = app_metrics.render();
    let db = TestDb::create();
    let app = AppFixture::start(&exposition);
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut sidecar = sidecar_for(&db, &app.url());
    with_config_file(&mut sidecar, &dir, RULES_YAML);
    let running = start_run(&sidecar);

    // Act
    let body = scrape(running.port);

    // Assert: by route and class, 2xx 6 + 4, 3xx 1, 4xx 2 (and 3 on /{id}).
    assert_eq!(
        sample_lines(&body, "todo_http_requests_total"),
        vec![
            "todo_http_requests_total{route=\"/api/todos\",status_class=\"2xx\"} 10",
            "todo_http_requests_total{route=\"/api/todos\",status_class=\"3xx\"} 1",
            "todo_http_requests_total{route=\"/api/todos\",status_class=\"4xx\"} 2",
            "todo_http_requests_total{route=\"/api/todos/{id}\",status_class=\"4xx\"} 3",
        ]
    );
    // GET and POST summed per bucket: ≤0.0005 → 1, ≤0.0025 → 1, ≤0.005 → 3,
    // ≤0.1 → 3, ≤0.25 → 4, … +Inf → 4.
    let route = "todo_http_request_duration_seconds_bucket{route=\"/api/todos\",le=";
    for (le, expected) in [
        ("0.0005", 1.0),
        ("0.0025", 1.0),
        ("0.005", 3.0),
        ("0.1", 3.0),
        ("0.25", 4.0),
        ("+Inf", 4.0),
    ] {
        assert_eq!(
            value(&body, &format!("{route}\"{le}\"}}")),
            Some(expected),
            "le={le}"
        );
    }
    assert_eq!(
        value(
            &body,
            "todo_http_request_duration_seconds_count{route=\"/api/todos\"}"
        ),
        Some(4.0)
    );
    assert_eq!(value(&body, "todo_app_up"), Some(1.0));
    // The app's build info passes through; its process metrics and the
    // sidecar's are told apart.
    assert_eq!(sample_lines(&body, "todo_build_info").len(), 1);
    assert!(
        body.contains("process_start_time_seconds{source=\"app\"}")
            && body.contains("process_start_time_seconds{source=\"sidecar\"}"),
        "{body}"
    );
    assert_promtool_accepts(&body);
}

#[test]
fn aggregate_a_database_query_that_waits_is_cut_by_the_statement_timeout() {
    // Arrange: the todos table locked by another session.
    let db = TestDb::create();
    migrate_and_add_todos(&db, 1, 1);
    let app = AppFixture::start(APP_EXPOSITION);
    let mut sidecar = sidecar_for(&db, &app.url());
    sidecar
        .set("SIDECAR__AGGREGATE__CACHE_TTL_MS", "0")
        .set("SIDECAR__AGGREGATE__DATABASE_STATEMENT_TIMEOUT_MS", "300");
    let running = start_run(&sidecar);
    let mut locker = db.lock_table("todos");

    // Act
    let (body, took) = timed_scrape(running.port);

    // Assert: given up after the timeout, well within the scrape deadline.
    assert!(
        took < Duration::from_millis(2500),
        "the scrape took {took:?}"
    );
    assert_eq!(value(&body, "todo_pg_up"), Some(0.0));
    assert!(sample_lines(&body, "todo_todos").is_empty());
    assert!(sample_lines(&body, "todo_pg_connections").is_empty());
    assert_eq!(value(&body, "todo_app_up"), Some(1.0));
    let ready = readiness(running.port);
    // statement_timeout or lock_timeout (both set), whichever fires first.
    assert!(
        ready.contains("Failed to count the todos: canceling statement due to"),
        "{ready}"
    );

    // Act: the lock goes away; the next read reconnects.
    locker.batch_execute("ROLLBACK").expect("releases the lock");
    let body = scrape(running.port);

    // Assert
    assert_eq!(value(&body, "todo_pg_up"), Some(1.0));
    assert_eq!(value(&body, "todo_todos{completed=\"true\"}"), Some(1.0));
    assert_eq!(value(&body, "todo_todos{completed=\"false\"}"), Some(1.0));
}

#[test]
fn aggregate_a_black_holed_database_costs_one_deadline_then_fails_fast() {
    // Arrange: a "database" that accepts connections and never answers.
    let hole = TcpListener::bind("127.0.0.1:0").expect("binds the black hole");
    let hole_port = hole.local_addr().expect("has an address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hole.incoming().flatten() {
            held.push(stream);
        }
    });
    let db = TestDb::create();
    let app = AppFixture::start(APP_EXPOSITION);
    let mut sidecar = sidecar_for(&db, &app.url());
    sidecar
        .set(
            "DATABASE_URL",
            &format!("postgres://postgres@127.0.0.1:{hole_port}/todo"),
        )
        .set("SIDECAR__DATABASE__CONNECT_TIMEOUT_SECONDS", "30")
        .set("SIDECAR__AGGREGATE__CACHE_TTL_MS", "0")
        .set("SIDECAR__AGGREGATE__SCRAPE_TIMEOUT_MS", "3000");
    // The start-up collection already hangs on the database (for 3 s).
    let running = start_run(&sidecar);

    // Act: the connection attempt still hangs (libpq waits up to 30 s).
    let (body, took) = timed_scrape(running.port);

    // Assert: no second wait behind the first; the app's metrics are served.
    assert!(
        took < Duration::from_millis(600),
        "the scrape took {took:?}"
    );
    assert_eq!(value(&body, "todo_pg_up"), Some(0.0));
    assert!(sample_lines(&body, "todo_pg_database_size_bytes").is_empty());
    assert_eq!(value(&body, "todo_app_up"), Some(1.0));
    let ready = readiness(running.port);
    assert!(
        ready.contains("the previous read of the database gauges is still running"),
        "{ready}"
    );
}
