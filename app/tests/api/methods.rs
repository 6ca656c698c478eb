//! Methods beyond each route's own: `HEAD` answers as `GET` without the
//! body, `OPTIONS` lists what the resource allows, anything else is a 405
//! in the error shape.

use crate::helpers::{RawConnection, raw_exchange, spawn_app};

#[actix_web::test]
async fn head_answers_as_get_without_the_body() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    let todo = app.create_todo(&token, "headed").await;
    let path = format!("/api/todos/{}", todo["id"].as_str().unwrap());
    let request = |method: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
    };
    let mut connection = RawConnection::open(app.api_port).await;

    connection.send(request("HEAD")).await.unwrap();
    let head = connection.read_response(true).await;
    // The same connection still carries a request: HEAD's framing is right.
    connection.send(request("GET")).await.unwrap();
    let get = connection.read_response(false).await;

    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(get.status, 200, "{get:?}");
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    assert_eq!(head.header("content-type"), get.header("content-type"));
    for path in ["/api/todos", "/api/openapi.json"] {
        let response = raw_exchange(
            app.api_port,
            format!(
                "HEAD {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(response.status, 200, "HEAD {path}: {response:?}");
    }
}

#[actix_web::test]
async fn options_lists_the_allowed_methods() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    let id = uuid::Uuid::new_v4();

    for (path, allowed) in [
        ("/api/todos".to_string(), "GET, HEAD, POST, OPTIONS"),
        (
            format!("/api/todos/{id}"),
            "GET, HEAD, PATCH, DELETE, OPTIONS",
        ),
        ("/api/openapi.json".to_string(), "GET, HEAD, OPTIONS"),
        ("/api/docs".to_string(), "GET, HEAD, OPTIONS"),
    ] {
        let response = raw_exchange(
            app.api_port,
            format!(
                "OPTIONS {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .await;

        assert_eq!(response.status, 204, "OPTIONS {path}: {response:?}");
        assert_eq!(response.header("allow"), Some(allowed), "{path}");
        assert!(response.header("x-request-id").is_some());
    }
}

#[actix_web::test]
async fn options_on_the_todos_needs_a_key_like_every_other_method() {
    let app = spawn_app().await;

    let response = raw_exchange(
        app.api_port,
        "OPTIONS /api/todos HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;

    assert_eq!(response.error_code(401), "unauthorized");
}

#[actix_web::test]
async fn other_methods_on_the_document_get_405_in_the_error_shape() {
    let app = spawn_app().await;

    let response = raw_exchange(
        app.api_port,
        "DELETE /api/openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;

    assert_eq!(response.error_code(405), "method_not_allowed");
    assert_eq!(response.header("allow"), Some("GET, HEAD, OPTIONS"));
}
