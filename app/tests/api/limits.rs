//! Bounded waits: a full executor queue, a slow statement, a slow client
//! (its head or its body) and a key holding many requests open each get a
//! fast, clear answer instead of a hang.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{
    RawConnection, TestApp, error_code, eventually, sample, spawn_app, spawn_app_with,
};

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

/// Sends `method path` with the body `{"title": title}`, in the background
/// (`PATCH /api/todos/{id}` to change a title, `POST /api/todos` to create).
fn spawn_with_title(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    title: &'static str,
) -> actix_web::rt::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let request = app
        .client
        .request(method, app.url(path))
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

/// Waits (at most 5 s) until the app reports `depth` messages waiting for an executor.
async fn wait_for_queue_depth(app: &TestApp, depth: u32) {
    let line = format!("todo_db_executor_queue_depth {depth}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.admin_get("/metrics")
                .await
                .text()
                .await
                .unwrap()
                .contains(&line)
        })
        .await,
        "the executor queue depth never became {depth}"
    );
}

#[actix_web::test]
async fn a_full_executor_queue_answers_503_at_once_and_a_stale_message_is_not_run() {
    let app = spawn_app_with(|settings| {
        settings.server.workers = 1;
        settings.database.pipeline_depth = 1;
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
    let stuck = spawn_with_title(
        &app,
        &token,
        Method::PATCH,
        &format!("/api/todos/{id}"),
        "first",
    );
    wait_until_blocked_on_lock(&app).await;
    // This one waits in the mailbox (queue depth 1 = max_queue)…
    let queued = spawn_with_title(
        &app,
        &token,
        Method::PATCH,
        &format!("/api/todos/{id}"),
        "second",
    );
    wait_for_queue_depth(&app, 1).await;

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
    // The given-up PATCH holds its queue slot until the executor drops it
    // unrun, which may be just after the first PATCH's answer went out; a
    // read sent before that would be refused as overload, not answered.
    wait_for_queue_depth(&app, 0).await;
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
        crate::helpers::sample(&metrics, r#"todo_db_errors_total{kind="timeout"}"#)
            .is_some_and(|errors| errors >= 1.0),
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

/// The head of an authenticated `POST /api/todos` announcing `length` bytes of JSON.
fn post_head(token: &str, length: usize) -> String {
    format!(
        "POST /api/todos HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

#[actix_web::test]
async fn a_body_that_stops_arriving_gets_408_and_its_connection_is_closed() {
    let app = spawn_app_with(|settings| settings.server.request_body_timeout_ms = 300).await;
    let token = app.create_key("alice");
    let mut connection = RawConnection::open(app.api_port).await;

    let started = Instant::now();
    connection
        .send(format!("{}{{\"title\":\"slow", post_head(&token, 1000)))
        .await
        .unwrap();
    let response = connection.read_response(false).await;

    assert_eq!(response.error_code(408), "request_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.header("connection"), Some("close"));
    assert!(connection.closed_within(Duration::from_secs(2)).await);
    let list: serde_json::Value = app.list_todos(&token, "").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]), "nothing was created");
}

#[actix_web::test]
async fn a_body_sent_a_byte_at_a_time_is_cut_off_at_the_deadline() {
    let app = spawn_app_with(|settings| settings.server.request_body_timeout_ms = 500).await;
    let token = app.create_key("alice");
    let mut connection = RawConnection::open(app.api_port).await;
    connection.send(post_head(&token, 1000)).await.unwrap();

    let started = Instant::now();
    let response = loop {
        // Each byte arrives well within any per-read timeout; only a
        // deadline on the whole body ends this.
        match tokio::time::timeout(Duration::from_millis(100), connection.read_response(false))
            .await
        {
            Ok(response) => break response,
            Err(_) => {
                assert!(started.elapsed() < Duration::from_secs(5), "no answer");
                let _ = connection.send(" ").await;
            }
        }
    };

    assert_eq!(response.error_code(408), "request_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn a_chunked_body_that_stops_arriving_gets_408_and_its_connection_is_closed() {
    let app = spawn_app_with(|settings| settings.server.request_body_timeout_ms = 300).await;
    let token = app.create_key("alice");
    let mut connection = RawConnection::open(app.api_port).await;

    connection
        .send(format!(
            "POST /api/todos HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"tit\r\n"
        ))
        .await
        .unwrap();
    let response = connection.read_response(false).await;

    assert_eq!(response.error_code(408), "request_timeout");
    assert!(connection.closed_within(Duration::from_secs(2)).await);
}

#[actix_web::test]
async fn a_key_with_too_many_requests_in_flight_gets_429_and_other_keys_do_not() {
    let app = spawn_app_with(|settings| {
        settings.auth.max_in_flight_per_key = 2;
        settings.server.request_body_timeout_ms = 1500;
    })
    .await;
    let leaked = app.create_key("alice");
    let other = app.create_key("bob");
    // Once the key is cached, a request takes its place in flight in the
    // same step that the in-flight gauge counts it.
    assert_eq!(app.list_todos(&leaked, "").await.status(), 200);
    // Two requests of the leaked key hold their connections with bodies
    // that never finish.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut connection = RawConnection::open(app.api_port).await;
        connection.send(post_head(&leaked, 100)).await.unwrap();
        held.push(connection);
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            let metrics = app.admin_get("/metrics").await.text().await.unwrap();
            sample(&metrics, "todo_http_requests_in_flight") == Some(2.0)
        })
        .await,
        "both slow requests are in flight"
    );

    let refused = app.list_todos(&leaked, "").await;
    let other_key = app.list_todos(&other, "").await;

    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(error_code(refused, 429).await, "too_many_in_flight");
    assert_eq!(other_key.status(), 200, "limits are per key");
    for mut connection in held {
        assert_eq!(
            connection.read_response(false).await.error_code(408),
            "request_timeout"
        );
    }
    assert_eq!(
        app.list_todos(&leaked, "").await.status(),
        200,
        "the key works again once its requests are answered"
    );
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(sample(&metrics, "todo_in_flight_limited_total"), Some(1.0));
}

#[actix_web::test]
async fn a_body_without_a_valid_key_is_refused_at_once_and_its_connection_closed() {
    let app = spawn_app().await;
    let framings = [
        "Content-Length: 1000\r\n\r\n{\"title\":\"slow".to_string(),
        "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"tit\r\n".to_string(),
    ];

    for framing in framings {
        let mut connection = RawConnection::open(app.api_port).await;
        connection
            .send(format!(
                "POST /api/todos HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{framing}"
            ))
            .await
            .unwrap();
        let response = connection.read_response(false).await;

        assert_eq!(response.error_code(401), "unauthorized", "{framing:?}");
        assert!(
            connection.closed_within(Duration::from_secs(3)).await,
            "the connection is not held open by an unread body: {framing:?}"
        );
    }
}

#[actix_web::test]
async fn a_create_refused_at_its_queue_timeout_is_never_written() {
    // One worker, one statement in flight: the first create's batch waits
    // on the table lock, and the second create cannot start behind it.
    let app = spawn_app_with(|settings| {
        settings.server.workers = 1;
        settings.database.pipeline_depth = 1;
        settings.database.queue_timeout_ms = 300;
        settings.auth.key_cache_ttl_seconds = 60;
    })
    .await;
    let token = app.create_key("alice");
    app.create_todo(&token, "warms the key cache and the connection")
        .await;
    let mut locker = app.connection();
    diesel::sql_query("BEGIN").execute(&mut locker).unwrap();
    diesel::sql_query("LOCK TABLE todos IN EXCLUSIVE MODE")
        .execute(&mut locker)
        .unwrap();
    let first = spawn_with_title(&app, &token, Method::POST, "/api/todos", "first");
    wait_until_blocked_on_lock(&app).await;
    let started = Instant::now();
    let second = spawn_with_title(&app, &token, Method::POST, "/api/todos", "second")
        .await
        .unwrap()
        .unwrap();
    let waited = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    diesel::sql_query("COMMIT").execute(&mut locker).unwrap();

    assert_eq!(error_code(second, 503).await, "service_unavailable");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(800),
        "refused at its queue timeout, in {waited:?}"
    );
    assert_eq!(first.await.unwrap().unwrap().status(), 201);
    let titles: Vec<String> = diesel::sql_query("SELECT title FROM todos ORDER BY title")
        .load::<Title>(&mut app.connection())
        .unwrap()
        .into_iter()
        .map(|row| row.title)
        .collect();
    assert_eq!(
        titles,
        ["first", "warms the key cache and the connection"],
        "the refused create was never written"
    );
}

#[derive(diesel::QueryableByName)]
struct Title {
    #[diesel(sql_type = diesel::sql_types::Text)]
    title: String,
}
