//! Metrics, logs and traces of `todo-app`, checked with exact expectations:
//! counters after a known sequence of requests, bounded series, `promtool
//! check metrics`, bunyan log lines without secrets, rotation keeping every
//! line, and OTLP spans received by a real protobuf decoder.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AttributeValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};

use crate::helpers::{
    ServerProcess, admin_database_url, drop_database, eventually, free_port, http_client,
    prepared_database, raw_exchange, sample, spawn_app,
};

#[actix_web::test]
async fn http_counters_and_histograms_count_exactly_the_requests_made() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    let first = app.create_todo(&token, "one").await;
    app.create_todo(&token, "two").await;
    app.get_todo(&token, first["id"].as_str().unwrap()).await;
    let invalid = app.post_todo(&token, &json!({"title": ""})).await;
    assert_eq!(invalid.status(), 422);
    for path in ["/random/a", "/random/b", "/api/nothing/here"] {
        app.client
            .get(app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
    }
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();

    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&metrics, series), Some(value), "{series}\n{metrics}");
    };
    expect(
        r#"todo_http_requests_total{method="POST",route="/api/todos",status="201"}"#,
        2.0,
    );
    expect(
        r#"todo_http_requests_total{method="POST",route="/api/todos",status="422"}"#,
        1.0,
    );
    expect(
        r#"todo_http_requests_total{method="GET",route="/api/todos/{id}",status="200"}"#,
        1.0,
    );
    let unmatched: f64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("todo_http_requests_total{") && line.contains("route=\"unmatched\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        unmatched, 3.0,
        "random paths share the `unmatched` route\n{metrics}"
    );
    expect(
        r#"todo_http_request_duration_seconds_count{method="POST",route="/api/todos"}"#,
        3.0,
    );
    expect(
        r#"todo_http_request_duration_seconds_bucket{method="POST",route="/api/todos",le="+Inf"}"#,
        3.0,
    );
    expect(
        r#"todo_http_request_duration_seconds_bucket{method="POST",route="/api/todos",le="0.0005"}"#,
        sample(
            &metrics,
            r#"todo_http_request_duration_seconds_bucket{method="POST",route="/api/todos",le="0.0005"}"#,
        )
        .unwrap(),
    );
    expect(
        r#"todo_db_query_duration_seconds_count{operation="create_todo"}"#,
        2.0,
    );
    expect(
        r#"todo_db_query_duration_seconds_count{operation="get_todo"}"#,
        1.0,
    );
    expect("todo_http_requests_in_flight", 0.0);
    expect("todo_db_executor_queue_depth", 0.0);
    assert!(sample(&metrics, r#"todo_db_pool_connections{state="idle"}"#).unwrap() >= 1.0);
    assert!(metrics.contains("process_resident_memory_bytes"));
    assert!(metrics.contains("process_open_fds"));
    assert!(metrics.contains(&format!(
        "todo_build_info{{revision=\"{}\",version=\"{}\"}} 1",
        env!("TODO_GIT_REVISION"),
        env!("CARGO_PKG_VERSION")
    )));
}

#[actix_web::test]
async fn a_thousand_random_paths_do_not_grow_the_series_count() {
    let app = spawn_app().await;
    let count_series = |metrics: &str| {
        metrics
            .lines()
            .filter(|line| line.starts_with("todo_http_"))
            .count()
    };
    app.client.get(app.url("/warm-up")).send().await.unwrap();
    let before = count_series(&app.admin_get("/metrics").await.text().await.unwrap());

    for n in 0..1000 {
        let path = format!("/scan/{n}/{}", uuid::Uuid::new_v4());
        let response = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 404);
    }

    let after = count_series(&app.admin_get("/metrics").await.text().await.unwrap());
    assert_eq!(before, after, "1,000 random paths add no series");
}

#[actix_web::test]
async fn the_exposition_passes_promtool_check_metrics() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    app.create_todo(&token, "lint me").await;
    app.client.get(app.url("/missing")).send().await.unwrap();
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package `prometheus`; scripts/test.sh installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();

    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn log_lines_are_bunyan_json_with_the_request_id_and_without_secrets() {
    let (name, url, token) = prepared_database("alice");
    let server = ServerProcess::start(&url, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = http_client();
        let response = client
            .post(format!("{}/api/todos", server.address))
            .bearer_auth(&token)
            .header("x-request-id", "req-logs-1")
            .header("x-api-secret", "topsecret-header-value")
            .header("cookie", "session=cookie-secret-value")
            .json(&json!({"title": "logged"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    });

    let (code, lines) = server.terminate();

    assert_eq!(code, Some(0));
    let mut request_lines = Vec::new();
    for line in &lines {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        for field in ["v", "level", "name", "hostname", "pid", "time", "msg"] {
            assert!(
                !entry[field].is_null(),
                "bunyan field {field} missing: {line}"
            );
        }
        if entry["request_id"] == "req-logs-1" {
            request_lines.push(entry);
        }
    }
    let completed = request_lines
        .iter()
        .find(|entry| entry["msg"].as_str().unwrap().contains("request completed"))
        .expect("the request's completion line");
    assert_eq!(completed["method"], "POST");
    assert_eq!(completed["route"], "/api/todos");
    assert_eq!(completed["status"], 201);
    assert_eq!(completed["owner"], "alice");
    assert!(completed["latency_ms"].as_f64().unwrap() > 0.0);
    let output = lines.join("\n");
    for secret in [
        token.as_str(),
        &token["todo_".len()..],
        "topsecret-header-value",
        "cookie-secret-value",
        "Bearer",
    ] {
        assert!(!output.contains(secret), "`{secret}` leaked into the logs");
    }
    drop_database(&admin_database_url(), &name);
}

/// Requests actix-http's parser refuses, and what it answers (it answers
/// them itself, before any middleware: no JSON body, no `X-Request-Id`;
/// `docs/architecture.md` lists them).
fn requests_the_parser_refuses() -> Vec<(&'static str, String, u16)> {
    let many_headers: String = (0..100).map(|n| format!("X-Header-{n}: v\r\n")).collect();
    vec![
        (
            "over 96 headers",
            format!("GET /api/todos HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n"),
            431,
        ),
        (
            "a 64 KiB request line",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(64 * 1024)),
            400,
        ),
        ("no Host", "GET /api/todos HTTP/1.1\r\n\r\n".into(), 400),
        (
            "two Hosts",
            "GET /api/todos HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
            400,
        ),
        (
            "Content-Length with Transfer-Encoding",
            "POST /api/todos HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .into(),
            400,
        ),
        (
            "a folded header",
            "GET /api/todos HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n".into(),
            400,
        ),
        (
            "HTTP/1.2",
            "GET /api/todos HTTP/1.2\r\nHost: x\r\n\r\n".into(),
            400,
        ),
    ]
}

#[test]
fn requests_the_parser_refuses_are_counted_and_summarised_instead_of_logged_as_errors() {
    let (name, url, _token) = prepared_database("alice");
    let server = ServerProcess::start(&url, &[]);
    let port: u16 = server.address.rsplit(':').next().unwrap().parse().unwrap();
    let refused = requests_the_parser_refuses();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let metrics = runtime.block_on(async {
        for (what, request, status) in &refused {
            let response = raw_exchange(port, request).await;
            assert_eq!(response.status, *status, "{what}: {response:?}");
        }
        let client = http_client();
        client
            .get(format!("{}/metrics", server.admin_address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let (code, lines) = server.terminate();

    assert_eq!(code, Some(0));
    let counted: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("todo_http_connection_errors_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, refused.len() as f64, "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            r#"todo_http_connection_errors_total{reason="too_large"}"#
        ),
        Some(1.0)
    );
    let entries: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let errors: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["level"].as_u64() >= Some(50))
        .collect();
    assert!(errors.is_empty(), "ERROR lines: {errors:?}");
    let summaries: Vec<&Value> = entries
        .iter()
        .filter(|entry| {
            entry["msg"]
                .as_str()
                .is_some_and(|msg| msg.starts_with("HTTP connections ended in an error"))
        })
        .collect();
    assert!(
        (1..=2).contains(&summaries.len()),
        "one summary at once, the rest within 10 s: {summaries:?}"
    );
    assert_eq!(summaries[0]["level"], 40, "WARN");
    assert!(summaries[0]["count"].as_u64() >= Some(1));
    drop_database(&admin_database_url(), &name);
}

#[test]
fn the_log_file_rotates_by_size_and_keeps_every_line() {
    let (name, url, token) = prepared_database("alice");
    let dir = std::env::temp_dir().join(format!("todo-logs-{}", uuid::Uuid::new_v4()));
    let log_file = dir.join("app.log");
    let server = ServerProcess::start(
        &url,
        &[
            ("APP__LOG__FILE", log_file.to_str().unwrap()),
            ("APP__LOG__MAX_BYTES", "4096"),
            ("APP__LOG__MAX_FILES", "1000"),
        ],
    );
    let requests = 150;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = http_client();
        for n in 0..requests {
            let response = client
                .get(format!("{}/api/todos", server.address))
                .bearer_auth(&token)
                .header("x-request-id", format!("rotation-{n}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    });

    let (code, stdout) = server.terminate();

    assert_eq!(code, Some(0));
    let mut file_lines = Vec::new();
    let mut rotated = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file_name = path.file_name().unwrap().to_str().unwrap().to_string();
        if file_name != "app.log" {
            assert!(file_name.starts_with("app.log."), "{file_name}");
            rotated += 1;
        }
        assert!(
            std::fs::metadata(&path).unwrap().len() <= 4096,
            "{file_name} over max_bytes"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            serde_json::from_str::<Value>(line).expect("whole JSON lines, never split");
            file_lines.push(line.to_string());
        }
    }
    assert!(
        rotated >= 5,
        "150 request lines rotate several times ({rotated} files)"
    );
    let ids_in = |lines: &[String]| -> HashSet<String> {
        lines
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| {
                entry["msg"]
                    .as_str()
                    .is_some_and(|m| m.contains("request completed"))
            })
            .filter_map(|entry| entry["request_id"].as_str().map(String::from))
            .collect()
    };
    let expected: HashSet<String> = (0..requests).map(|n| format!("rotation-{n}")).collect();
    assert_eq!(
        ids_in(&file_lines),
        expected,
        "every request line is in the files"
    );
    assert_eq!(ids_in(&stdout), expected, "and on stdout");
    assert_eq!(
        file_lines.len(),
        stdout.len(),
        "the file has every stdout line"
    );
    std::fs::remove_dir_all(dir).unwrap();
    drop_database(&admin_database_url(), &name);
}

/// An OTLP/HTTP receiver that decodes trace exports with the official
/// protobuf definitions and keeps every span.
struct OtlpReceiver {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
    handle: actix_web::dev::ServerHandle,
}

impl OtlpReceiver {
    /// A receiver over plain HTTP.
    async fn start() -> OtlpReceiver {
        Self::start_with(None).await
    }

    /// A receiver over HTTPS with a new self-signed certificate for
    /// `localhost`, and that certificate as PEM (what a client must trust).
    async fn start_tls() -> (OtlpReceiver, String) {
        let (config, certificate) = todo_common::test_support::self_signed_localhost();
        (Self::start_with(Some(config)).await, certificate)
    }

    async fn start_with(tls: Option<rustls::ServerConfig>) -> OtlpReceiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let store = web::Data::new(Arc::clone(&spans));
        let server = HttpServer::new(move || {
            App::new().app_data(store.clone()).route(
                "/v1/traces",
                web::post().to(
                    |body: web::Bytes, store: web::Data<Arc<Mutex<Vec<Span>>>>| async move {
                        let request =
                            ExportTraceServiceRequest::decode(body).expect("valid OTLP protobuf");
                        let mut spans = store.lock().unwrap();
                        for resource in request.resource_spans {
                            for scope in resource.scope_spans {
                                spans.extend(scope.spans);
                            }
                        }
                        HttpResponse::Ok()
                            .content_type("application/x-protobuf")
                            .body(Vec::new())
                    },
                ),
            )
        })
        .workers(1)
        .disable_signals();
        let server = match tls {
            Some(config) => server.bind_rustls_0_23(("127.0.0.1", 0), config),
            None => server.bind(("127.0.0.1", 0)),
        }
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        OtlpReceiver {
            port,
            spans,
            handle,
        }
    }

    /// The names of the spans received so far.
    fn span_names(&self) -> Vec<String> {
        let spans = self.spans.lock().unwrap();
        spans.iter().map(|span| span.name.clone()).collect()
    }
}

#[actix_web::test]
async fn a_request_with_traceparent_exports_its_server_span_and_database_child_span() {
    let receiver = OtlpReceiver::start().await;
    let (name, url, token) = prepared_database("alice");
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let server = ServerProcess::start(&url, &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span_id = "00f067aa0ba902b7";

    let response = http_client()
        .post(format!("{}/api/todos", server.address))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{caller_span_id}-01"))
        .header("x-request-id", "traced-1")
        .json(&json!({"title": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (code, lines) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(code, Some(0));

    let spans = receiver.spans.lock().unwrap().clone();
    let in_trace: Vec<&Span> = spans
        .iter()
        .filter(|span| hex::encode(&span.trace_id) == trace_id)
        .collect();
    let server_span = in_trace
        .iter()
        .find(|span| span.name == "POST /api/todos")
        .unwrap_or_else(|| {
            panic!(
                "no server span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(hex::encode(&server_span.parent_span_id), caller_span_id);
    assert_eq!(server_span.kind, 2, "SPAN_KIND_SERVER");
    // Each attribute's value as text (strings as they are, integers in decimal).
    let attribute = |span: &Span, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.clone())
            .map(|value| match value {
                AttributeValue::StringValue(text) => text,
                AttributeValue::IntValue(number) => number.to_string(),
                other => format!("{other:?}"),
            })
    };
    for (key, expected) in [
        ("http.route", "/api/todos"),
        ("http.request.method", "POST"),
        ("http.response.status_code", "201"),
        ("request_id", "traced-1"),
        ("owner", "alice"),
    ] {
        assert_eq!(
            attribute(server_span, key).as_deref(),
            Some(expected),
            "{key}"
        );
    }
    let db_span = in_trace
        .iter()
        .find(|span| span.name == "create_todo")
        .expect("the database operation's span");
    assert_eq!(
        db_span.parent_span_id, server_span.span_id,
        "child of the request span"
    );
    assert_eq!(db_span.kind, 3, "SPAN_KIND_CLIENT");
    for (key, expected) in [
        ("db.system.name", "postgresql"),
        ("db.operation.name", "create_todo"),
        ("db.operation.batch.size", "1"),
    ] {
        assert_eq!(attribute(db_span, key).as_deref(), Some(expected), "{key}");
    }
    assert!(db_span.start_time_unix_nano >= server_span.start_time_unix_nano);
    assert!(db_span.end_time_unix_nano <= server_span.end_time_unix_nano);
    let logged = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| entry["request_id"] == "traced-1")
        .expect("the request's log line");
    assert_eq!(
        logged["trace_id"], trace_id,
        "the trace id is in the log line"
    );
    receiver.handle.stop(false).await;
    drop_database(&admin_database_url(), &name);
}

#[actix_web::test]
async fn with_the_collector_down_requests_succeed_at_normal_latency_and_drops_are_counted() {
    let (name, url, token) = prepared_database("alice");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let traced = ServerProcess::start(&url, &[("OTEL_EXPORTER_OTLP_ENDPOINT", closed.as_str())]);
    let untraced = ServerProcess::start(&url, &[]);
    let client = http_client();
    let median_latency = |address: String| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let mut latencies = Vec::new();
            for _ in 0..200 {
                let started = Instant::now();
                let response = client
                    .get(format!("{address}/api/todos?limit=5"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                latencies.push(started.elapsed());
            }
            latencies.sort();
            latencies[latencies.len() / 2]
        }
    };

    let without = median_latency(untraced.address.clone()).await;
    let with = median_latency(traced.address.clone()).await;

    assert!(
        with < without * 3 + Duration::from_millis(5),
        "median {with:?} with a dead collector vs {without:?} without"
    );
    assert!(
        export_failures_are_counted(&traced.admin_address).await,
        "spans that could not be exported are counted"
    );
    // After a failed export, requests make no spans while the collector
    // waits to be tried again (and count them instead).
    let admin = traced.admin_address.clone();
    let address = traced.address.clone();
    let skipped = eventually(Duration::from_secs(10), || {
        let (client, admin, address, token) = (
            client.clone(),
            admin.clone(),
            address.clone(),
            token.clone(),
        );
        async move {
            let response = client
                .get(format!("{address}/api/todos?limit=1"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            spans_dropped(&admin, "collector_down").await > 0.0
        }
    })
    .await;
    assert!(
        skipped,
        "spans not made while the collector is down are counted"
    );
    let (code, _) = tokio::task::spawn_blocking(move || traced.terminate())
        .await
        .unwrap();
    assert_eq!(
        code,
        Some(0),
        "shutdown does not hang on the dead collector"
    );
    drop(untraced);
    drop_database(&admin_database_url(), &name);
}

/// A PEM file in a fresh temporary directory, removed on drop.
struct PemFile(std::path::PathBuf);

impl PemFile {
    fn new(pem: &str) -> PemFile {
        let dir = std::env::temp_dir().join(format!("todo-otlp-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("collector-ca.pem");
        std::fs::write(&path, pem).unwrap();
        PemFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for PemFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

/// Makes one traced request to `server` and shuts it down (which exports
/// the queued spans); returns the exit code.
async fn one_traced_request(server: ServerProcess, token: &str) -> Option<i32> {
    let response = http_client()
        .post(format!("{}/api/todos", server.address))
        .bearer_auth(token)
        .json(&json!({"title": "over https"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (code, _) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    code
}

// The binary under test is built with the features of the packages being
// tested: with `cargo test -p todo-app` alone this is the image's case, no
// TLS borrowed from the sidecar's dependencies.
#[actix_web::test]
async fn spans_reach_an_https_collector_trusted_through_otel_exporter_otlp_certificate() {
    let (receiver, certificate) = OtlpReceiver::start_tls().await;
    let ca_file = PemFile::new(&certificate);
    let (name, url, token) = prepared_database("alice");
    let endpoint = format!("https://localhost:{}", receiver.port);
    let server = ServerProcess::start(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.path()),
        ],
    );

    let code = one_traced_request(server, &token).await;

    assert_eq!(code, Some(0));
    assert!(
        receiver
            .span_names()
            .contains(&"POST /api/todos".to_string()),
        "the server span arrived over TLS: {:?}",
        receiver.span_names()
    );
    receiver.handle.stop(false).await;
    drop_database(&admin_database_url(), &name);
}

#[actix_web::test]
async fn an_https_collector_whose_certificate_is_not_trusted_gets_no_spans_and_drops_are_counted() {
    let (receiver, _certificate) = OtlpReceiver::start_tls().await;
    // Another certificate than the collector's: the handshake must fail.
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let ca_file = PemFile::new(&stranger.cert.pem());
    let (name, url, token) = prepared_database("alice");
    let endpoint = format!("https://localhost:{}", receiver.port);
    let server = ServerProcess::start(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.path()),
        ],
    );
    let admin = server.admin_address.clone();
    http_client()
        .post(format!("{}/api/todos", server.address))
        .bearer_auth(&token)
        .json(&json!({"title": "untrusted"}))
        .send()
        .await
        .unwrap();

    let counted = export_failures_are_counted(&admin).await;

    assert!(counted, "spans the collector could not take are counted");
    assert!(receiver.span_names().is_empty(), "nothing got through");
    let (code, _) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    receiver.handle.stop(false).await;
    drop_database(&admin_database_url(), &name);
}

#[actix_web::test]
async fn an_unreadable_otel_exporter_otlp_certificate_disables_traces_and_the_server_still_serves()
{
    let receiver = OtlpReceiver::start().await;
    let (name, url, token) = prepared_database("alice");
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let missing = std::env::temp_dir().join(format!("no-such-{}.pem", uuid::Uuid::new_v4()));
    let server = ServerProcess::start(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", missing.to_str().unwrap()),
        ],
    );

    let code = one_traced_request(server, &token).await;

    assert_eq!(code, Some(0), "served and shut down normally");
    assert!(
        receiver.span_names().is_empty(),
        "no exporter that ignores the certificate it was given"
    );
    receiver.handle.stop(false).await;
    drop_database(&admin_database_url(), &name);
}

#[test]
fn log_level_sets_the_filter() {
    let (name, url, token) = prepared_database("alice");
    // The start-up line stays on so the test learns the ports.
    let server = ServerProcess::start(&url, &[("LOG_LEVEL", "warn,todo_app::startup=info")]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let response = http_client()
            .get(format!("{}/api/todos", server.address))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    });

    let (code, lines) = server.terminate();

    assert_eq!(code, Some(0));
    let info_lines: Vec<&String> = lines
        .iter()
        .filter(|line| !line.contains("todo_app::startup"))
        .filter(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|entry| entry["level"].as_u64())
                .is_some_and(|level| level < 40)
        })
        .collect();
    assert!(
        info_lines.is_empty(),
        "no info lines at LOG_LEVEL=warn: {info_lines:?}"
    );
    drop_database(&admin_database_url(), &name);
}

#[actix_web::test]
async fn the_standard_sampler_variables_choose_which_traces_are_exported() {
    // Ratio 0 for new traces, and the caller's decision for continued ones:
    // only the request whose traceparent says "sampled" is exported.
    let receiver = OtlpReceiver::start().await;
    let (name, url, token) = prepared_database("alice");
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let server = ServerProcess::start(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    );
    let sampled = "4bf92f3577b34da6a3ce929d0e0e4736";
    let not_sampled = "5bf92f3577b34da6a3ce929d0e0e4737";
    let client = http_client();
    for traceparent in [
        Some(format!("00-{sampled}-00f067aa0ba902b7-01")),
        Some(format!("00-{not_sampled}-00f067aa0ba902b7-00")),
        None,
        None,
        None,
    ] {
        let mut request = client
            .get(format!("{}/api/todos", server.address))
            .bearer_auth(&token);
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        assert_eq!(request.send().await.unwrap().status(), 200);
    }

    let (code, _) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();

    assert_eq!(code, Some(0));
    let spans = receiver.spans.lock().unwrap().clone();
    let traces: HashSet<String> = spans
        .iter()
        .map(|span| hex::encode(&span.trace_id))
        .collect();
    assert_eq!(
        traces,
        HashSet::from([sampled.to_string()]),
        "only the sampled caller's trace is exported"
    );
    assert!(spans.iter().any(|span| span.name == "GET /api/todos"));
    assert!(
        spans.iter().any(|span| span.name == "list_todos"),
        "the sampled request's database span"
    );
    receiver.handle.stop(false).await;
    drop_database(&admin_database_url(), &name);
}

#[test]
fn with_log_stdout_false_the_lines_go_to_the_file_alone() {
    use std::io::Read;
    let (name, url, token) = prepared_database("alice");
    let dir = std::env::temp_dir().join(format!("todo-logs-{}", uuid::Uuid::new_v4()));
    let log_file = dir.join("app.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_todo-app"))
        .env("DATABASE_URL", &url)
        .env("APP_CONFIG_DIR", crate::helpers::configuration_dir())
        .env("APP__SERVER__PORT", "0")
        .env("APP__ADMIN__PORT", "0")
        .env("APP__SERVER__WORKERS", "1")
        .env("APP__LOG__FILE", &log_file)
        .env("APP__LOG__STDOUT", "false")
        .env_remove("APP_ENVIRONMENT")
        .env_remove("RUST_LOG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("LOG_LEVEL", "info")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("todo-app starts");
    let file_entries = || -> Vec<Value> {
        std::fs::read_to_string(&log_file)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON lines"))
            .collect()
    };
    let started = Instant::now();
    let api_port = loop {
        if let Some(entry) = file_entries()
            .into_iter()
            .find(|entry| entry["msg"] == "todo-app listening")
        {
            break entry["api_port"].as_u64().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "todo-app logs that it listens, in the file"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        http_client()
            .get(format!("http://127.0.0.1:{api_port}/api/todos"))
            .bearer_auth(&token)
            .header("x-request-id", "file-only-1")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let code = child.wait().unwrap().code();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();

    assert_eq!(code, Some(0));
    assert_eq!(stdout, "", "nothing on stdout");
    assert!(
        file_entries()
            .iter()
            .any(|entry| entry["request_id"] == "file-only-1"),
        "the request's line is in the file"
    );
    std::fs::remove_dir_all(dir).unwrap();
    drop_database(&admin_database_url(), &name);
}

/// Whether the server at `admin` counts (within 15 s) spans it could not export.
async fn export_failures_are_counted(admin: &str) -> bool {
    eventually(Duration::from_secs(15), || async move {
        spans_dropped(admin, "export_failed").await > 0.0
    })
    .await
}

/// `todo_trace_spans_dropped_total{reason}` of the server at `admin` (0 when absent).
async fn spans_dropped(admin: &str, reason: &str) -> f64 {
    let metrics = http_client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    sample(
        &metrics,
        &format!(r#"todo_trace_spans_dropped_total{{reason="{reason}"}}"#),
    )
    .unwrap_or(0.0)
}
