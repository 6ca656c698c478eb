//! The database stopping while the server runs: fast 503s, readiness 503,
//! and recovery without a restart once it returns. Runs on a PostgreSQL
//! cluster of its own so other tests keep their database.

use std::time::{Duration, Instant};

use crate::helpers::{ThrowawayCluster, error_code, eventually, spawn_app_on_server};

#[actix_web::test]
async fn with_the_database_stopped_requests_get_503_fast_and_recover_when_it_returns() {
    let cluster = ThrowawayCluster::start();
    let app = spawn_app_on_server(&cluster.url(), false, |settings| {
        settings.database.pool_wait_timeout_ms = 500;
        settings.database.queue_timeout_ms = 500;
        settings.auth.key_cache_ttl_seconds = 1;
    })
    .await;
    let token = app.create_key("alice");
    let todo = app.create_todo(&token, "survives the outage").await;
    let id = todo["id"].as_str().unwrap().to_string();

    cluster.stop_server();

    // Both with the key cached and after the cache expired (then the key
    // lookup itself fails): 503, never 401, never a hang.
    for round in 0..3 {
        let started = Instant::now();
        let response = app.get_todo(&token, &id).await;
        let elapsed = started.elapsed();
        assert_eq!(
            error_code(response, 503).await,
            "service_unavailable",
            "round {round}"
        );
        assert!(elapsed < Duration::from_secs(3), "answered in {elapsed:?}");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let create = app
        .post_todo(&token, &serde_json::json!({"title": "during outage"}))
        .await;
    assert_eq!(create.status(), 503);
    assert!(create.headers().contains_key("retry-after"));
    let started = Instant::now();
    let ready = app.admin_get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "readiness answers within a second"
    );
    assert_eq!(
        app.admin_get("/health/live").await.status(),
        200,
        "liveness is unaffected"
    );

    cluster.start_server();

    let recovered = eventually(Duration::from_secs(20), || async {
        app.get_todo(&token, &id).await.status() == 200
    })
    .await;
    assert!(recovered, "requests succeed again without a restart");
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.admin_get("/health/ready").await.status() == 200
        })
        .await
    );
    let created = app
        .post_todo(&token, &serde_json::json!({"title": "after outage"}))
        .await;
    assert_eq!(created.status(), 201);
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("todo_db_errors_total{kind=\"unavailable\"}"));
}

#[actix_web::test]
async fn with_the_database_frozen_requests_get_503_by_the_deadline_and_recover_when_it_thaws() {
    let cluster = ThrowawayCluster::start();
    let app = spawn_app_on_server(&cluster.url(), false, |settings| {
        settings.database.pool_wait_timeout_ms = 300;
        settings.database.queue_timeout_ms = 300;
        settings.database.statement_timeout_ms = 500;
        settings.auth.key_cache_ttl_seconds = 60;
    })
    .await;
    // queue 0.3 + 2 × (pool 0.3 + statement 0.5) + 1 s of slack.
    let deadline = Duration::from_millis(2_900);
    let token = app.create_key("alice");
    let todo = app.create_todo(&token, "survives the freeze").await;
    let id = todo["id"].as_str().unwrap().to_string();

    // Connections stay open and nobody answers: statement_timeout cannot
    // fire (the frozen server enforces it) and the socket does not fail.
    cluster.freeze();
    let started = Instant::now();
    let response = app.get_todo(&token, &id).await;
    let elapsed = started.elapsed();
    assert_eq!(error_code(response, 503).await, "service_unavailable");
    assert!(
        elapsed >= Duration::from_millis(2_000) && elapsed < deadline + Duration::from_secs(2),
        "answered by the deadline, in {elapsed:?}"
    );
    let started = Instant::now();
    assert_eq!(app.admin_get("/health/ready").await.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "readiness answers within a second"
    );

    cluster.thaw();

    let recovered = eventually(Duration::from_secs(20), || async {
        app.get_todo(&token, &id).await.status() == 200
    })
    .await;
    assert!(
        recovered,
        "requests succeed again once the database answers"
    );
}
