//! Keyset pagination: every todo exactly once, newest first, even while
//! other requests insert todos between pages.

use std::collections::HashSet;

use serde_json::Value;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn paging_through_more_than_two_pages_sees_every_todo_once_despite_concurrent_inserts() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    let mut existing = Vec::new();
    for n in 0..25 {
        existing.push(app.create_todo(&token, &format!("todo {n}")).await);
    }
    let expected: Vec<String> = existing
        .iter()
        .rev()
        .map(|todo| todo["id"].as_str().unwrap().to_string())
        .collect();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("?limit=10&cursor={cursor}"),
            None => "?limit=10".to_string(),
        };
        let page: Value = app.list_todos(&token, &query).await.json().await.unwrap();
        pages += 1;
        for todo in page["items"].as_array().unwrap() {
            seen.push(todo["id"].as_str().unwrap().to_string());
        }
        // Between pages, other clients keep writing.
        let a = app.create_todo(&token, "inserted while paging");
        let b = app.create_todo(&token, "inserted while paging too");
        futures_util::future::join(a, b).await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 20, "pagination terminates");
    }

    assert_eq!(pages, 3, "25 todos in pages of 10");
    assert_eq!(
        seen, expected,
        "each pre-existing todo once, newest first, none inserted later"
    );
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
}

#[actix_web::test]
async fn the_default_page_size_is_20() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    for n in 0..21 {
        app.create_todo(&token, &format!("todo {n}")).await;
    }

    let page: Value = app.list_todos(&token, "").await.json().await.unwrap();

    assert_eq!(page["items"].as_array().unwrap().len(), 20);
    assert!(page["next_cursor"].is_string());
}

#[actix_web::test]
async fn a_cursor_from_another_owner_reveals_nothing() {
    let app = spawn_app().await;
    let alice = app.create_key("alice");
    let bob = app.create_key("bob");
    for n in 0..3 {
        app.create_todo(&alice, &format!("alice {n}")).await;
    }
    let page: Value = app
        .list_todos(&alice, "?limit=1")
        .await
        .json()
        .await
        .unwrap();
    let cursor = page["next_cursor"].as_str().unwrap();

    let bobs: Value = app
        .list_todos(&bob, &format!("?cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(bobs["items"], serde_json::json!([]));
}

#[actix_web::test]
async fn every_cursor_the_document_allows_is_accepted() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    app.create_todo(&token, "listed").await;
    let document: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parameters = document["paths"]["/api/todos"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let cursor = parameters
        .iter()
        .find(|parameter| parameter["name"] == "cursor")
        .expect("the cursor is documented");
    assert_eq!(cursor["schema"]["pattern"], "^[0-9a-f]{48}$");
    assert_eq!(cursor["schema"]["minLength"], 48);
    assert_eq!(cursor["schema"]["maxLength"], 48);

    // The earliest and latest positions, and what a fuzzer tries first.
    for cursor in [
        "0".repeat(48),
        "f".repeat(48),
        format!("7{}", "f".repeat(47)),
        format!("{}{}", "0".repeat(16), "f".repeat(32)),
    ] {
        let response = app
            .list_todos(&token, &format!("?completed=true&cursor={cursor}"))
            .await;
        assert_eq!(response.status(), 200, "cursor {cursor}");
    }
    let before_everything: Value = app
        .list_todos(&token, &format!("?cursor={}", "f".repeat(48)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        before_everything["items"].as_array().unwrap().len(),
        0,
        "ffff… is -1 µs: only todos older than 1970 would follow it"
    );
}
