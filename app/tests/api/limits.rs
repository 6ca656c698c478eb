//! Bounded waits: a full executor queue, a slow statement and a slow client
//! each get a fast, clear answer instead of a hang.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use serde_json::json;

use crate::helpers::{TestApp, error_code, eventually, spawn_app_with};

#[derive(diesel::QueryableByName)]
struct Waiting {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    count: i64,
}

/// Holds a row lock on `id` in a transaction of its own until dropped.
fn lock_row(app: &TestApp, id: &str) -> diesel::PgConnection {
    let mut locker = app.connection();
    diesel::sql_query("BEGIN").execute(&mut locker).unwrap();
    diesel::sql_query(format!("SELECT 1 FROM todos WHERE id = '{id}' FOR UPDATE"))
        .execute(&mut locker)
        .unwrap();
    locker
}

/// Sends `PATCH /api/todos/{id}` setting the title, in the background.
fn spawn_patch_title(
    app: &TestApp,
    token: &str,
    id: &str,
    title: &'static str,
) -> actix_web::rt::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let request = app
        .client
        .patch(app.url(&format!("/api/todos/{id}")))
        .bearer_auth(token)
        .json(&json!({ "title": title }));
    actix_web::rt::spawn(request.send())
}

async fn wait_until_blocked_on_lock(app: &TestApp) {
    let mut observer = app.connection();
    let blocked = eventually(Duration::from_secs(10), || {
        let waiting: Waiting = diesel::sql_query(
            "SELECT count(*) AS count FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .get_result(&mut observer)
        .unwrap();
        async move { waiting.count >= 1 }
    })
    .await;
    assert!(blocked, "a request is blocked on the row lock");
}

#[actix_web::test]
async fn a_full_executor_queue_answers_503_at_once_and_a_stale_message_is_not_run() {
    let app = spawn_app_with(|settings| {
        settings.database.executor_threads = 1;
        settings.database.pool_size = 1;
        settings.database.max_queue = 1;
        settings.database.queue_timeout_ms = 300;
        settings.auth.key_cache_ttl_seconds = 60;
    })
    .await;
    let token = app.create_key("alice");
    let todo = app.create_todo(&token, "contended").await;
    let id = todo["id"].as_str().unwrap().to_string();
    let mut locker = lock_row(&app, &id);
    // The only executor is now stuck on the lock with this PATCH.
    let stuck = spawn_patch_title(&app, &token, &id, "first");
    wait_until_blocked_on_lock(&app).await;
    // This one waits in the mailbox (queue depth 1 = max_queue)…
    let queued = spawn_patch_title(&app, &token, &id, "second");
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.admin_get("/metrics")
                .await
                .text()
                .await
                .unwrap()
                .contains("todo_db_executor_queue_depth 1")
        })
        .await
    );

    // …so the next one is refused at once.
    let started = Instant::now();
    let refused = app.get_todo(&token, &id).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error_code(refused, 503).await, "service_unavailable");

    tokio::time::sleep(Duration::from_millis(400)).await;
    diesel::sql_query("COMMIT").execute(&mut locker).unwrap();
    assert_eq!(stuck.await.unwrap().unwrap().status(), 200);
    let queued = queued.await.unwrap().unwrap();
    assert_eq!(
        queued.status(),
        503,
        "the message waited past queue_timeout_ms"
    );
    let current: serde_json::Value = app.get_todo(&token, &id).await.json().await.unwrap();
    assert_eq!(
        current["title"], "first",
        "the refused PATCH changed nothing"
    );
}

#[actix_web::test]
async fn a_statement_over_the_timeout_is_cancelled_with_503() {
    let app = spawn_app_with(|settings| settings.database.statement_timeout_ms = 300).await;
    let token = app.create_key("alice");
    let todo = app.create_todo(&token, "slow").await;
    let id = todo["id"].as_str().unwrap().to_string();
    let _locker = lock_row(&app, &id);

    let started = Instant::now();
    let response = app
        .patch_todo(&token, &id, &json!({"completed": true}))
        .await;

    assert_eq!(error_code(response, 503).await, "service_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("todo_db_errors_total{kind=\"timeout\"}"),
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_client_that_never_finishes_its_request_head_gets_408() {
    let app = spawn_app_with(|settings| settings.server.client_request_timeout_ms = 300).await;
    let port = app.api_port;

    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /api/todos HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}
