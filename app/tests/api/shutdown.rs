//! Graceful shutdown: readiness turns 503 first, the listener closes, the
//! request in flight completes, and the binary exits 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use diesel::{Connection, RunQueryDsl};
use serde_json::json;

use crate::helpers::{configuration_dir, eventually, spawn_app_with};

#[derive(diesel::QueryableByName)]
struct Waiting {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    count: i64,
}

#[actix_web::test]
async fn shutdown_turns_readiness_503_then_finishes_the_request_in_flight() {
    let mut app =
        spawn_app_with(|settings| settings.server.shutdown_readiness_delay_seconds = 1).await;
    let token = app.create_key("alice");
    let todo = app.create_todo(&token, "locked").await;
    let id = todo["id"].as_str().unwrap().to_string();
    // Hold the row lock so the PATCH below stays in flight until we let go.
    let mut locker = app.connection();
    diesel::sql_query("BEGIN").execute(&mut locker).unwrap();
    diesel::sql_query(format!("SELECT 1 FROM todos WHERE id = '{id}' FOR UPDATE"))
        .execute(&mut locker)
        .unwrap();
    let in_flight = {
        let client = app.client.clone();
        let url = app.url(&format!("/api/todos/{id}"));
        let token = token.clone();
        actix_web::rt::spawn(async move {
            client
                .patch(url)
                .bearer_auth(token)
                .json(&json!({"completed": true}))
                .send()
                .await
        })
    };
    let mut observer = app.connection();
    assert!(
        eventually(Duration::from_secs(10), || {
            let waiting: Waiting = diesel::sql_query(
                "SELECT count(*) AS count FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND datname = current_database()",
            )
            .get_result(&mut observer)
            .unwrap();
            async move { waiting.count == 1 }
        })
        .await,
        "the PATCH is waiting on the lock"
    );

    let shutdown = app.shutdown.clone();
    let stopping = actix_web::rt::spawn(async move { shutdown.shutdown().await });

    assert!(
        eventually(Duration::from_secs(2), || async {
            app.admin_get("/health/ready").await.status() == 503
        })
        .await,
        "readiness turns 503 first"
    );
    let fresh_client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            fresh_client
                .get(app.url("/api/todos"))
                .send()
                .await
                .is_err()
        })
        .await,
        "the listener stops accepting new connections"
    );
    assert!(!in_flight.is_finished(), "the request is still in flight");
    diesel::sql_query("COMMIT").execute(&mut locker).unwrap();

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(response.status(), 200);
    stopping.await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(10), &mut app.server).await;
    assert!(
        matches!(served, Ok(Ok(Ok(())))),
        "the server stops cleanly: {served:?}"
    );
}

#[test]
fn the_binary_exits_0_on_sigterm() {
    let (name, url) = crate::helpers::create_database(&crate::helpers::admin_database_url());
    let mut child = Command::new(env!("CARGO_BIN_EXE_todo-app"))
        .env("DATABASE_URL", &url)
        .env("APP_CONFIG_DIR", configuration_dir())
        .env("APP__SERVER__PORT", "0")
        .env("APP__ADMIN__PORT", "0")
        .env_remove("APP_ENVIRONMENT")
        .env_remove("RUST_LOG")
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let admin_port = loop {
        let line = lines
            .next()
            .expect("the server logs until it listens")
            .unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        if entry["msg"] == "todo-app listening" {
            break entry["admin_port"].as_u64().unwrap();
        }
    };
    let ready =
        reqwest::blocking_get_status(&format!("http://127.0.0.1:{admin_port}/health/ready"));
    assert_eq!(ready, Some(200));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();

    assert_eq!(status.code(), Some(0), "exit code 0 after SIGTERM");
    assert!(
        rest.iter()
            .any(|line| line.contains("stop signal received"))
    );
    assert!(
        rest.iter()
            .any(|line| line.contains("database workers stopped")),
        "the database workers ended before the process exited: {rest:?}"
    );
    crate::helpers::drop_database(&crate::helpers::admin_database_url(), &name);
    let _ = diesel::PgConnection::establish(&url);
}

/// A tiny blocking GET without pulling reqwest's blocking feature in.
mod reqwest {
    pub use ::reqwest::*;

    pub fn blocking_get_status(url: &str) -> Option<u16> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            crate::helpers::http_client()
                .get(url)
                .send()
                .await
                .ok()
                .map(|response| response.status().as_u16())
        })
    }
}
