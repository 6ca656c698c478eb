//! The admin listener: liveness, readiness and metrics.

use crate::helpers::spawn_app;

#[actix_web::test]
async fn liveness_and_readiness_are_200_when_the_database_is_up() {
    let app = spawn_app().await;

    let live = app.admin_get("/health/live").await;
    let ready = app.admin_get("/health/ready").await;

    assert_eq!(live.status(), 200);
    assert_eq!(ready.status(), 200);
}

#[actix_web::test]
async fn metrics_are_served_in_the_prometheus_text_format() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    app.create_todo(&token, "counted").await;

    let response = app.admin_get("/metrics").await;

    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let body = response.text().await.unwrap();
    assert!(body.contains("todo_build_info{"));
    assert_eq!(
        crate::helpers::sample(
            &body,
            r#"todo_db_query_duration_seconds_count{operation="create_todo"}"#
        ),
        Some(1.0)
    );
}

#[actix_web::test]
async fn a_fresh_server_exposes_its_known_series_at_zero() {
    let app = spawn_app().await;

    let body = app.admin_get("/metrics").await.text().await.unwrap();

    for series in [
        r#"todo_auth_failures_total{reason="missing"}"#,
        r#"todo_auth_failures_total{reason="malformed"}"#,
        r#"todo_auth_failures_total{reason="invalid"}"#,
        r#"todo_db_errors_total{kind="unavailable"}"#,
        r#"todo_db_errors_total{kind="overloaded"}"#,
        r#"todo_db_errors_total{kind="timeout"}"#,
        r#"todo_db_errors_total{kind="query"}"#,
        r#"todo_db_query_duration_seconds_count{operation="delete_todo"}"#,
        "todo_rate_limited_total",
        "todo_auth_unknown_key_lookups_refused_total",
    ] {
        assert_eq!(
            crate::helpers::sample(&body, series),
            Some(0.0),
            "{series} in {body}"
        );
    }
    for series in [
        r#"todo_trace_spans_dropped_total{reason="queue_full"}"#,
        r#"todo_trace_spans_dropped_total{reason="export_failed"}"#,
        r#"todo_trace_spans_dropped_total{reason="collector_down"}"#,
        "todo_log_lines_dropped_total",
    ] {
        // Process-wide counters: present, whatever other tests in this process did.
        assert!(
            crate::helpers::sample(&body, series).is_some(),
            "{series} in {body}"
        );
    }
}

#[actix_web::test]
async fn the_api_listener_does_not_serve_admin_endpoints() {
    let app = spawn_app().await;

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();

    assert_eq!(response.status(), 404);
}
