//! The database stopping, freezing or dropping connections while the server
//! runs: fast 503s, readiness 503, reads retried once and writes never, and
//! recovery without a restart once it returns. The outage tests run on a
//! PostgreSQL cluster of their own so other tests keep their database.

use std::time::{Duration, Instant};

use diesel::RunQueryDsl;

use crate::helpers::{
    TestApp, ThrowawayCluster, error_code, eventually, spawn_app_on_server, spawn_app_with,
};

/// The slowest 503 allowed while the database refuses connections.
const FAST_REFUSAL: Duration = Duration::from_millis(100);

#[actix_web::test]
async fn with_the_database_stopped_requests_get_503_fast_and_recover_when_it_returns() {
    let cluster = ThrowawayCluster::start();
    let app = spawn_app_on_server(&cluster.url(), false, |settings| {
        settings.database.queue_timeout_ms = 500;
        settings.auth.key_cache_ttl_seconds = 1;
    })
    .await;
    let token = app.create_key("alice");
    let todo = app.create_todo(&token, "survives the outage").await;
    let id = todo["id"].as_str().unwrap().to_string();

    cluster.stop_server();
    // The first request finds the pooled connection dead and learns that
    // the database refuses new ones.
    assert_eq!(app.get_todo(&token, &id).await.status(), 503);

    // Both with the key cached and after the cache expired (then the key
    // lookup itself fails): 503 at once, never 401, never a wait for the
    // pool's timeout.
    let mut slowest = Duration::ZERO;
    for round in 0..12 {
        let started = Instant::now();
        let response = app.get_todo(&token, &id).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            error_code(response, 503).await,
            "service_unavailable",
            "round {round}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(slowest < FAST_REFUSAL, "the slowest 503 took {slowest:?}");
    let started = Instant::now();
    let create = app
        .post_todo(&token, &serde_json::json!({"title": "during outage"}))
        .await;
    assert!(started.elapsed() < FAST_REFUSAL, "{:?}", started.elapsed());
    assert_eq!(create.status(), 503);
    assert!(create.headers().contains_key("retry-after"));
    let started = Instant::now();
    let ready = app.admin_get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "readiness answers within a second"
    );
    // Readiness's own connection finds the refusal as fast as requests do.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let started = Instant::now();
    assert_eq!(app.admin_get("/health/ready").await.status(), 503);
    assert!(started.elapsed() < FAST_REFUSAL, "{:?}", started.elapsed());
    assert_eq!(
        app.admin_get("/health/live").await.status(),
        200,
        "liveness is unaffected"
    );

    cluster.start_server();
    let back = Instant::now();

    let recovered = eventually(Duration::from_secs(20), || async {
        app.get_todo(&token, &id).await.status() == 200
    })
    .await;
    assert!(recovered, "requests succeed again without a restart");
    // pg_ctl returns once the server accepts connections; after a refused
    // connection a worker tries again on the first request 0.1 s later.
    assert!(
        back.elapsed() < Duration::from_secs(2),
        "first 200 {:?} after the database was back",
        back.elapsed()
    );
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
    assert!(
        crate::helpers::sample(&metrics, r#"todo_db_errors_total{kind="unavailable"}"#)
            .is_some_and(|errors| errors >= 1.0),
        "{metrics}"
    );
}

#[actix_web::test]
async fn with_the_database_frozen_a_running_request_gets_503_past_its_statement_timeout_and_a_waiting_one_past_its_queue_timeout()
 {
    let cluster = ThrowawayCluster::start();
    let app = spawn_app_on_server(&cluster.url(), false, |settings| {
        // One worker with one statement in flight at most: the second
        // request must wait behind the first, which the freeze holds.
        settings.server.workers = 1;
        settings.database.pipeline_depth = 1;
        settings.database.queue_timeout_ms = 300;
        settings.database.statement_timeout_ms = 1500;
        settings.auth.key_cache_ttl_seconds = 60;
    })
    .await;
    // The statement timeout plus the 0.5 s margin.
    let answer_deadline = Duration::from_millis(2_000);
    let token = app.create_key("alice");
    let todo = app.create_todo(&token, "survives the freeze").await;
    let id = todo["id"].as_str().unwrap().to_string();

    // Connections stay open and nobody answers: statement_timeout cannot
    // fire (the frozen server enforces it) and the socket does not fail.
    cluster.freeze();
    let running = {
        let request = app
            .client
            .get(app.url(&format!("/api/todos/{id}")))
            .bearer_auth(&token);
        actix_web::rt::spawn(async move {
            let started = Instant::now();
            let response = request.send().await;
            (response, started.elapsed())
        })
    };
    // The first request now holds the only executor.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let waiting = app.get_todo(&token, &id).await;
    let waited = started.elapsed();
    let (running, ran) = running.await.unwrap();

    assert_eq!(error_code(waiting, 503).await, "service_unavailable");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(700),
        "the waiting request was refused by its queue timeout, in {waited:?}"
    );
    assert_eq!(
        error_code(running.unwrap(), 503).await,
        "service_unavailable"
    );
    assert!(
        ran >= Duration::from_millis(1_500) && ran < answer_deadline + Duration::from_millis(500),
        "the running request was answered at its statement timeout plus the margin, in {ran:?}"
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

/// Ends the app's sessions on its database (a failover, an administrator's
/// `pg_terminate_backend`): each connection is lost, the app is not told.
fn terminate_app_sessions(app: &TestApp) {
    let mut admin = app.connection();
    diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'todo-app' \
         AND pid <> pg_backend_pid()",
    )
    .execute(&mut admin)
    .unwrap();
}

#[actix_web::test]
async fn after_a_lost_connection_a_read_is_retried_once_a_write_is_not_and_the_next_write_succeeds()
{
    // One worker, so every request uses the one connection that is lost.
    let app = spawn_app_with(|settings| {
        settings.server.workers = 1;
        settings.auth.key_cache_ttl_seconds = 600;
    })
    .await;
    let token = app.create_key("alice");
    let todo = app.create_todo(&token, "before the failover").await;
    let id = todo["id"].as_str().unwrap().to_string();

    terminate_app_sessions(&app);
    let read = app.get_todo(&token, &id).await;
    terminate_app_sessions(&app);
    let write = app
        .patch_todo(
            &token,
            &id,
            &serde_json::json!({"title": "lost with its connection"}),
        )
        .await;
    // The next request opens a new connection; lose that one too.
    assert_eq!(app.get_todo(&token, &id).await.status(), 200);
    terminate_app_sessions(&app);
    let create = app
        .post_todo(&token, &serde_json::json!({"title": "lost with its batch"}))
        .await;
    let next_write = app
        .patch_todo(&token, &id, &serde_json::json!({"completed": true}))
        .await;

    assert_eq!(
        read.status(),
        200,
        "the read was retried on a fresh connection"
    );
    assert_eq!(error_code(write, 503).await, "service_unavailable");
    assert_eq!(
        error_code(create, 503).await,
        "service_unavailable",
        "a create batch on a lost connection is refused, not retried"
    );
    assert_eq!(next_write.status(), 200, "the lost connection was replaced");
    let current: serde_json::Value = app.get_todo(&token, &id).await.json().await.unwrap();
    assert_eq!(
        current["title"], "before the failover",
        "the refused write was not retried"
    );
    assert_eq!(current["completed"], true);
    let listed: serde_json::Value = app.list_todos(&token, "").await.json().await.unwrap();
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "the refused create was not written"
    );
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert!(
        crate::helpers::sample(&metrics, r#"todo_db_errors_total{kind="unavailable"}"#)
            .is_some_and(|errors| errors >= 1.0),
        "the lost write is counted: {metrics}"
    );
    // One worker, one connection: the replacements are not counted twice.
    assert_eq!(
        crate::helpers::sample(&metrics, r#"todo_db_pool_connections{state="idle"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        crate::helpers::sample(&metrics, r#"todo_db_pool_connections{state="active"}"#),
        Some(0.0),
        "{metrics}"
    );
}
