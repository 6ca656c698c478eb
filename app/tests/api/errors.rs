//! Every error status of the API, in the `{"error": {"code", "message"}}` shape,
//! and the `X-Request-Id` header on every answer.

use serde_json::{Value, json};

use crate::helpers::{error_code, raw_exchange, spawn_app, spawn_app_with};

#[actix_web::test]
async fn malformed_json_returns_400() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    for body in ["{\"title\": ", "not json", ""] {
        let response = app
            .client
            .post(app.url("/api/todos"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(response, 400).await,
            "malformed_json",
            "body {body:?}"
        );
    }
}

#[actix_web::test]
async fn invalid_todos_return_422_and_create_nothing() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    for body in [
        json!({}),
        json!({"title": ""}),
        json!({"title": "   "}),
        json!({"title": "x".repeat(256)}),
        json!({"title": 42}),
        json!({"title": "ok", "description": 7}),
        json!({"title": "ok", "description": "d".repeat(10_001)}),
        json!({"title": "nul\u{0}byte"}),
        json!(["title"]),
    ] {
        let response = app.post_todo(&token, &body).await;
        assert_eq!(
            error_code(response, 422).await,
            "validation_failed",
            "body {body}"
        );
    }
    let list: Value = app.list_todos(&token, "").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));
}

#[actix_web::test]
async fn a_title_of_exactly_255_characters_is_accepted() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    let response = app
        .post_todo(&token, &json!({"title": "ü".repeat(255)}))
        .await;

    assert_eq!(response.status(), 201);
}

#[actix_web::test]
async fn malformed_queries_return_400() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    for query in [
        "?limit=0",
        "?limit=101",
        "?limit=abc",
        "?limit=-1",
        "?completed=maybe",
        "?cursor=garbage",
        "?colour=red",
    ] {
        let response = app.list_todos(&token, query).await;
        let code = error_code(response, 400).await;
        assert!(
            code == "invalid_query" || code == "invalid_cursor",
            "query {query} gave {code}"
        );
    }
}

#[actix_web::test]
async fn limits_at_the_bounds_are_accepted() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    assert_eq!(app.list_todos(&token, "?limit=1").await.status(), 200);
    assert_eq!(app.list_todos(&token, "?limit=100").await.status(), 200);
}

#[actix_web::test]
async fn unknown_routes_return_404_and_wrong_methods_405() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    let unknown = app.client.get(app.url("/nowhere")).send().await.unwrap();
    let put = app
        .client
        .put(app.url("/api/todos"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let post_item = app
        .client
        .post(app.url(&format!("/api/todos/{}", uuid::Uuid::new_v4())))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    assert_eq!(error_code(unknown, 404).await, "not_found");
    assert_eq!(put.headers()["allow"], "GET, HEAD, POST, OPTIONS");
    assert_eq!(error_code(put, 405).await, "method_not_allowed");
    assert_eq!(
        post_item.headers()["allow"],
        "GET, HEAD, PATCH, DELETE, OPTIONS"
    );
    assert_eq!(error_code(post_item, 405).await, "method_not_allowed");
}

#[actix_web::test]
async fn a_body_over_the_limit_returns_413() {
    let app = spawn_app_with(|settings| settings.server.json_body_limit_bytes = 4096).await;
    let token = app.create_key("alice");

    let response = app
        .post_todo(
            &token,
            &json!({"title": "big", "description": "x".repeat(5000)}),
        )
        .await;

    assert_eq!(error_code(response, 413).await, "payload_too_large");
}

#[actix_web::test]
async fn the_default_body_limit_is_64_kib() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    let response = app
        .client
        .post(app.url("/api/todos"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!(
            "{{\"title\": \"t\", \"description\": \"{}\"}}",
            " ".repeat(65 * 1024)
        ))
        .send()
        .await
        .unwrap();

    assert_eq!(error_code(response, 413).await, "payload_too_large");
}

#[actix_web::test]
async fn a_body_that_is_not_json_returns_415() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    let response = app
        .client
        .post(app.url("/api/todos"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("title=x")
        .send()
        .await
        .unwrap();

    assert_eq!(error_code(response, 415).await, "unsupported_media_type");
}

#[actix_web::test]
async fn a_sane_request_id_is_echoed_and_an_insane_one_replaced() {
    let app = spawn_app().await;

    let echoed = app
        .client
        .get(app.url("/api/todos"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    let replaced = app
        .client
        .get(app.url("/api/todos"))
        .header("x-request-id", "x".repeat(500))
        .send()
        .await
        .unwrap();
    let generated = app.client.get(app.url("/nowhere")).send().await.unwrap();

    assert_eq!(echoed.headers()["x-request-id"], "trace-abc-123");
    let replaced = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(
        uuid::Uuid::try_parse(replaced).is_ok(),
        "replaced by a UUID: {replaced}"
    );
    let generated = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::try_parse(generated).is_ok());
}

/// A raw `POST /api/todos` with `Content-Encoding: coding` and `body`.
fn encoded_post(token: &str, coding: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /api/todos HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Encoding: {coding}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[actix_web::test]
async fn a_body_that_does_not_decode_gets_a_400_without_internal_details() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    for coding in ["gzip", "deflate"] {
        let response = raw_exchange(
            app.api_port,
            encoded_post(&token, coding, br#"{"title": "plain"}"#),
        )
        .await;

        assert_eq!(response.error_code(400), "malformed_body", "{coding}");
        let message = response.json()["error"]["message"].to_string();
        for internal in ["gzip header", "Custom", "EOF", "InvalidInput", "Some("] {
            assert!(!message.contains(internal), "{coding}: {message}");
        }
    }
}

#[actix_web::test]
async fn a_content_encoding_the_server_cannot_decode_gets_415() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    for coding in ["br", "zstd", "foo", "gzip, br"] {
        let response = raw_exchange(
            app.api_port,
            encoded_post(&token, coding, br#"{"title": "plain"}"#),
        )
        .await;

        assert_eq!(
            response.error_code(415),
            "unsupported_content_encoding",
            "{coding}"
        );
        assert_eq!(
            response.header("accept-encoding"),
            Some("gzip, deflate, identity")
        );
    }
    let list: Value = app.list_todos(&token, "").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]), "nothing was created");
}

#[actix_web::test]
async fn a_gzip_body_is_decoded() {
    use std::io::Write;
    let app = spawn_app().await;
    let token = app.create_key("alice");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(br#"{"title": "zipped"}"#).unwrap();
    let gzipped = encoder.finish().unwrap();

    let response = raw_exchange(app.api_port, encoded_post(&token, "gzip", &gzipped)).await;

    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(response.json()["title"], "zipped");
}

#[actix_web::test]
async fn titles_with_nothing_visible_or_with_bidi_overrides_are_refused() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    for title in [
        "\u{200B}\u{200B}",
        "\u{FEFF}\u{2060}",
        " \u{3164} ",
        "invoice\u{202E}fdp.exe",
        "a\u{2066}b",
    ] {
        let response = app.post_todo(&token, &json!({ "title": title })).await;
        assert_eq!(
            error_code(response, 422).await,
            "validation_failed",
            "{title:?}"
        );
    }
    let rtl = app
        .post_todo(
            &token,
            &json!({"title": "\u{05E9}\u{05DC}\u{05D5}\u{05DD}\u{200F}!"}),
        )
        .await;
    assert_eq!(
        rtl.status(),
        201,
        "right-to-left text with a direction mark"
    );
}
