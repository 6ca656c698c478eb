//! API keys on `/api`: 401 without a valid key, revocation, rate limiting,
//! how the secret is stored, and the caching headers of keyed answers.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel::RunQueryDsl;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{error_code, eventually, raw_exchange, sample, spawn_app, spawn_app_with};

#[actix_web::test]
async fn requests_without_a_valid_key_get_the_same_401() {
    let app = spawn_app().await;
    let real = app.create_key("alice");
    let (revoked_id, revoked) = app.create_key_with_id("alice");
    todo_app::db::api_keys::revoke(&mut app.connection(), revoked_id).unwrap();
    // Same key id as a real key, wrong secret.
    let mut forged = real.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");

    let headers = [
        None,
        Some("Basic YWxpY2U6cGFzcw==".to_string()),
        Some("Bearer".to_string()),
        Some("Bearer not-a-token".to_string()),
        Some(format!("Bearer {forged}")),
        Some(format!("Bearer {revoked}")),
        Some(format!("Bearer todo_{}", "A".repeat(64))),
    ];
    let mut bodies = Vec::new();
    for header in headers {
        let mut request = app.client.get(app.url("/api/todos"));
        if let Some(header) = &header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body = response.text().await.unwrap();
        bodies.push(body);
    }

    assert!(
        bodies.windows(2).all(|pair| pair[0] == pair[1]),
        "every 401 says the same, so it cannot tell whether a key exists: {bodies:?}"
    );
    assert!(bodies[0].contains("\"unauthorized\""));
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&metrics, r#"todo_auth_failures_total{reason="missing"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, r#"todo_auth_failures_total{reason="invalid"}"#),
        Some(3.0)
    );
}

#[actix_web::test]
async fn every_verb_requires_a_key() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4();

    let responses = [
        app.client.get(app.url("/api/todos")).send().await.unwrap(),
        app.client
            .post(app.url("/api/todos"))
            .json(&json!({"title": "x"}))
            .send()
            .await
            .unwrap(),
        app.client
            .get(app.url(&format!("/api/todos/{id}")))
            .send()
            .await
            .unwrap(),
        app.client
            .patch(app.url(&format!("/api/todos/{id}")))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        app.client
            .delete(app.url(&format!("/api/todos/{id}")))
            .send()
            .await
            .unwrap(),
    ];

    for response in responses {
        assert_eq!(error_code(response, 401).await, "unauthorized");
    }
}

#[actix_web::test]
async fn a_revoked_key_stops_working_within_the_cache_ttl() {
    let app = spawn_app_with(|settings| settings.auth.key_cache_ttl_seconds = 1).await;
    let (id, token) = app.create_key_with_id("alice");
    assert_eq!(app.list_todos(&token, "").await.status(), 200);

    todo_app::db::api_keys::revoke(&mut app.connection(), id).unwrap();

    let refused = eventually(Duration::from_secs(5), || async {
        app.list_todos(&token, "").await.status() == 401
    })
    .await;
    assert!(refused, "the revoked key is refused within the TTL");
}

#[actix_web::test]
async fn using_a_key_records_last_used_at() {
    let app = spawn_app().await;
    let (id, token) = app.create_key_with_id("alice");

    app.list_todos(&token, "").await;

    let recorded = eventually(Duration::from_secs(5), || async {
        let keys = todo_app::db::api_keys::list(&mut app.connection()).unwrap();
        keys.iter()
            .any(|key| key.id == id && key.last_used_at.is_some())
    })
    .await;
    assert!(recorded);
}

#[actix_web::test]
async fn a_key_over_its_rate_limit_gets_429_with_retry_after_and_others_do_not() {
    let app = spawn_app_with(|settings| {
        settings.auth.rate_limit_per_second = 1;
        settings.auth.rate_limit_burst = 3;
    })
    .await;
    let busy = app.create_key("alice");
    let quiet = app.create_key("bob");

    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let response = app.list_todos(&busy, "").await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            limited = Some(response);
        }
    }

    assert_eq!(
        &statuses[..3],
        &[200, 200, 200],
        "the burst is allowed: {statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "then the limit applies: {statuses:?}"
    );
    let limited = limited.unwrap();
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=2).contains(&retry_after),
        "Retry-After is {retry_after}"
    );
    assert_eq!(error_code(limited, 429).await, "rate_limited");
    assert_eq!(
        app.list_todos(&quiet, "").await.status(),
        200,
        "limits are per key"
    );
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    let limited_count = statuses.iter().filter(|status| **status == 429).count();
    assert_eq!(
        sample(&metrics, "todo_rate_limited_total"),
        Some(limited_count as f64)
    );
}

#[actix_web::test]
async fn rate_limiting_is_off_when_set_to_zero() {
    // With a burst of 1, a limit that were on would refuse the second request.
    let app = spawn_app_with(|settings| {
        settings.auth.rate_limit_per_second = 0;
        settings.auth.rate_limit_burst = 1;
    })
    .await;
    let token = app.create_key("alice");

    for _ in 0..20 {
        assert_eq!(app.list_todos(&token, "?limit=1").await.status(), 200);
    }
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(sample(&metrics, "todo_rate_limited_total"), Some(0.0));
}

#[actix_web::test]
async fn only_a_hash_of_the_secret_is_stored() {
    let app = spawn_app().await;
    let (id, token) = app.create_key_with_id("alice");
    let raw = URL_SAFE_NO_PAD
        .decode(&token["todo_".len()..])
        .expect("a token is base64url");
    let secret = &raw[16..];

    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: uuid::Uuid,
        #[diesel(sql_type = diesel::sql_types::Binary)]
        secret_hash: Vec<u8>,
        #[diesel(sql_type = diesel::sql_types::Text)]
        dump: String,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT id, secret_hash, row_to_json(api_keys)::text AS dump FROM api_keys",
    )
    .load(&mut app.connection())
    .unwrap();

    assert_eq!(rows.len(), 1, "one key, one row");
    assert_eq!(rows[0].id, id);
    assert_eq!(rows[0].secret_hash, Sha256::digest(secret).to_vec());
    for leaked in [
        token.clone(),
        token["todo_".len()..].to_string(),
        hex::encode(secret),
    ] {
        assert!(!rows[0].dump.contains(&leaked), "{leaked} is stored");
    }
}

#[actix_web::test]
async fn two_authorization_headers_are_refused_even_when_both_are_valid() {
    let app = spawn_app().await;
    let alice = app.create_key("alice");
    let bob = app.create_key("bob");

    let response = raw_exchange(
        app.api_port,
        format!(
            "GET /api/todos HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {alice}\r\n\
             Authorization: Bearer {bob}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;

    assert_eq!(response.error_code(401), "unauthorized");
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&metrics, r#"todo_auth_failures_total{reason="malformed"}"#),
        Some(1.0)
    );
}

#[actix_web::test]
async fn the_bearer_scheme_is_accepted_in_any_case() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = app
            .client
            .get(app.url("/api/todos"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
}

#[actix_web::test]
async fn answers_that_depend_on_the_key_are_never_stored_by_caches() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    let todo = app.create_todo(&token, "private").await;

    let responses = [
        app.post_todo(&token, &json!({"title": "x"})).await,
        app.list_todos(&token, "").await,
        app.get_todo(&token, todo["id"].as_str().unwrap()).await,
        app.client.get(app.url("/api/todos")).send().await.unwrap(),
    ];

    for response in responses {
        let status = response.status();
        assert_eq!(response.headers()["cache-control"], "no-store", "{status}");
        assert_eq!(response.headers()["vary"], "Authorization", "{status}");
    }
}

#[actix_web::test]
async fn lookups_of_unseen_key_ids_are_limited_and_keys_already_seen_never_wait() {
    let app = spawn_app_with(|settings| {
        settings.auth.unknown_key_lookups_per_second = 1;
        settings.auth.unknown_key_lookup_burst = 3;
        // Every request of a known key is then a refresh, which must not
        // be held back by the limit on unseen ids.
        settings.auth.key_cache_ttl_seconds = 0;
    })
    .await;
    let known = app.create_key("alice");
    assert_eq!(app.list_todos(&known, "").await.status(), 200);

    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let stranger = todo_app::auth::generate_token();
        let response = app.list_todos(todo_app::auth::reveal(&stranger), "").await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            limited = Some(response);
        }
    }

    assert_eq!(
        &statuses[..2],
        &[401, 401],
        "the burst left after the known key's first lookup: {statuses:?}"
    );
    assert!(statuses[2..].contains(&429), "then 429: {statuses:?}");
    let limited = limited.unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(error_code(limited, 429).await, "rate_limited");
    assert_eq!(
        app.list_todos(&known, "").await.status(),
        200,
        "a key already seen is refreshed whatever the limit"
    );
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    let refused = statuses.iter().filter(|status| **status == 429).count();
    assert_eq!(
        sample(&metrics, "todo_auth_unknown_key_lookups_refused_total"),
        Some(refused as f64)
    );
    // The known key's 2 lookups, and one per unseen id that got its 401
    // (the budget refills by one a second, so a slow run may admit more).
    let looked_up = 2 + statuses.iter().filter(|status| **status == 401).count();
    assert_eq!(
        sample(
            &metrics,
            r#"todo_db_query_duration_seconds_count{operation="find_api_key"}"#
        ),
        Some(looked_up as f64),
        "refused requests never reached the database"
    );
}
