//! The todo endpoints: create, get, list, patch, delete, and owner isolation.

use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_app};

#[actix_web::test]
async fn creating_a_todo_returns_201_with_the_todo_and_its_location() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    let response = app
        .post_todo(
            &token,
            &json!({"title": "  Buy milk ", "description": "2 litres"}),
        )
        .await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let todo: Value = response.json().await.unwrap();
    assert_eq!(todo["title"], "Buy milk", "the title is trimmed");
    assert_eq!(todo["description"], "2 litres");
    assert_eq!(todo["completed"], false);
    assert_eq!(
        location,
        format!("/api/todos/{}", todo["id"].as_str().unwrap())
    );
    assert_eq!(todo["created_at"], todo["updated_at"]);
    for field in ["created_at", "updated_at"] {
        chrono::DateTime::parse_from_rfc3339(todo[field].as_str().unwrap())
            .unwrap_or_else(|_| panic!("{field} is RFC 3339"));
    }
    let fetched: Value = app
        .get_todo(&token, todo["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, todo, "the Location names the stored todo");
}

#[actix_web::test]
async fn a_todo_without_description_has_null_description() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    let todo = app.create_todo(&token, "Walk the dog").await;

    assert_eq!(todo["description"], Value::Null);
}

#[actix_web::test]
async fn getting_an_unknown_or_malformed_id_returns_404() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    let unknown = app
        .get_todo(&token, &uuid::Uuid::new_v4().to_string())
        .await;
    let malformed = app.get_todo(&token, "not-a-uuid").await;

    assert_eq!(error_code(unknown, 404).await, "not_found");
    assert_eq!(error_code(malformed, 404).await, "not_found");
}

#[actix_web::test]
async fn patching_changes_only_the_given_fields_and_bumps_updated_at() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    let todo = app
        .post_todo(
            &token,
            &json!({"title": "Write report", "description": "draft"}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let id = todo["id"].as_str().unwrap();

    let response = app
        .patch_todo(&token, id, &json!({"completed": true}))
        .await;

    assert_eq!(response.status(), 200);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["completed"], true);
    assert_eq!(patched["title"], "Write report");
    assert_eq!(patched["description"], "draft");
    assert_eq!(patched["created_at"], todo["created_at"]);
    let before =
        chrono::DateTime::parse_from_rfc3339(todo["updated_at"].as_str().unwrap()).unwrap();
    let after =
        chrono::DateTime::parse_from_rfc3339(patched["updated_at"].as_str().unwrap()).unwrap();
    assert!(
        after > before,
        "updated_at moves forward ({before} -> {after})"
    );
}

#[actix_web::test]
async fn patching_description_to_null_clears_it_and_title_can_change() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    let todo = app
        .post_todo(&token, &json!({"title": "Old", "description": "remove me"}))
        .await
        .json::<Value>()
        .await
        .unwrap();

    let patched: Value = app
        .patch_todo(
            &token,
            todo["id"].as_str().unwrap(),
            &json!({"title": "New", "description": null}),
        )
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(patched["title"], "New");
    assert_eq!(patched["description"], Value::Null);
}

#[actix_web::test]
async fn patching_with_invalid_values_returns_422_and_changes_nothing() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    let todo = app.create_todo(&token, "Keep me").await;
    let id = todo["id"].as_str().unwrap();

    for body in [
        json!({"title": ""}),
        json!({"title": null}),
        json!({"completed": null}),
        json!({"completed": "yes"}),
        json!({"title": "x".repeat(256)}),
        json!({"id": uuid::Uuid::new_v4()}),
        json!({"owner": "mallory"}),
        json!({"created_at": "2020-01-01T00:00:00Z"}),
        json!({"title": "ok", "unknown": 1}),
    ] {
        let response = app.patch_todo(&token, id, &body).await;
        assert_eq!(
            error_code(response, 422).await,
            "validation_failed",
            "body {body}"
        );
    }

    let unchanged: Value = app.get_todo(&token, id).await.json().await.unwrap();
    assert_eq!(unchanged, todo);
}

#[actix_web::test]
async fn deleting_a_todo_returns_204_then_404() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    let todo = app.create_todo(&token, "Temporary").await;
    let id = todo["id"].as_str().unwrap();

    let first = app.delete_todo(&token, id).await;
    let second = app.delete_todo(&token, id).await;

    assert_eq!(first.status(), 204);
    assert!(first.headers().contains_key("x-request-id"));
    assert_eq!(error_code(second, 404).await, "not_found");
    assert_eq!(
        error_code(app.get_todo(&token, id).await, 404).await,
        "not_found"
    );
}

#[actix_web::test]
async fn listing_returns_newest_first_and_filters_on_completed() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    let first = app.create_todo(&token, "first").await;
    let second = app.create_todo(&token, "second").await;
    let third = app.create_todo(&token, "third").await;
    app.patch_todo(
        &token,
        second["id"].as_str().unwrap(),
        &json!({"completed": true}),
    )
    .await;

    let all: Value = app.list_todos(&token, "").await.json().await.unwrap();
    let done: Value = app
        .list_todos(&token, "?completed=true")
        .await
        .json()
        .await
        .unwrap();
    let open: Value = app
        .list_todos(&token, "?completed=false")
        .await
        .json()
        .await
        .unwrap();

    let titles = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|todo| todo["title"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(titles(&all), ["third", "second", "first"]);
    assert_eq!(all["next_cursor"], Value::Null);
    assert_eq!(titles(&done), ["second"]);
    assert_eq!(titles(&open), ["third", "first"]);
    let _ = (first, third);
}

#[actix_web::test]
async fn an_owner_never_sees_or_changes_another_owners_todos() {
    let app = spawn_app().await;
    let alice = app.create_key("alice");
    let bob = app.create_key("bob");
    let alices = app.create_todo(&alice, "alice's secret").await;
    let id = alices["id"].as_str().unwrap();

    let get = app.get_todo(&bob, id).await;
    let patch = app.patch_todo(&bob, id, &json!({"title": "pwned"})).await;
    let delete = app.delete_todo(&bob, id).await;
    let list: Value = app.list_todos(&bob, "").await.json().await.unwrap();

    assert_eq!(
        error_code(get, 404).await,
        "not_found",
        "GET is a 404, not a 403"
    );
    assert_eq!(error_code(patch, 404).await, "not_found");
    assert_eq!(error_code(delete, 404).await, "not_found");
    assert_eq!(list["items"], json!([]));
    let still: Value = app.get_todo(&alice, id).await.json().await.unwrap();
    assert_eq!(still, alices, "alice's todo is untouched");
}

#[actix_web::test]
async fn two_keys_of_one_owner_share_that_owners_todos() {
    let app = spawn_app().await;
    let laptop = app.create_key("carol");
    let phone = app.create_key("carol");
    let todo = app.create_todo(&laptop, "shared").await;

    let response = app.get_todo(&phone, todo["id"].as_str().unwrap()).await;

    assert_eq!(response.status(), 200);
}

#[actix_web::test]
async fn clients_cannot_set_id_owner_or_timestamps_on_create() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    for extra in [
        json!({"title": "t", "id": uuid::Uuid::new_v4()}),
        json!({"title": "t", "owner": "bob"}),
        json!({"title": "t", "created_at": "2020-01-01T00:00:00Z"}),
        json!({"title": "t", "completed": true}),
    ] {
        let response = app.post_todo(&token, &extra).await;
        assert_eq!(
            error_code(response, 422).await,
            "validation_failed",
            "body {extra}"
        );
    }
    let list: Value = app.list_todos(&token, "").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]), "nothing was created");
}

#[actix_web::test]
async fn trailing_and_repeated_slashes_reach_the_same_route_with_the_query_kept() {
    let app = spawn_app().await;
    let token = app.create_key("alice");
    app.create_todo(&token, "older").await;
    let todo = app.create_todo(&token, "newer").await;
    let id = todo["id"].as_str().unwrap();

    for path in [
        "/api/todos/?limit=1".to_string(),
        "/api//todos?limit=1".to_string(),
    ] {
        let page: Value = app
            .client
            .get(app.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 1, "{path}");
        assert_eq!(page["items"][0]["id"], id, "{path}");
    }
    let fetched = app
        .client
        .get(app.url(&format!("/api/todos/{id}/")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
}

#[actix_web::test]
async fn concurrent_creates_of_many_owners_each_get_their_own_todo() {
    // One worker: concurrent creates share its insert batches.
    let app = crate::helpers::spawn_app_with(|settings| settings.server.workers = 1).await;
    let owners = ["alice", "bob", "carol", "dave"];
    let tokens: Vec<String> = owners.iter().map(|owner| app.create_key(owner)).collect();
    for token in &tokens {
        app.create_todo(token, "warm-up").await;
    }

    // Sent together from one task: the worker receives them concurrently.
    let bodies: Vec<Value> = (0..64)
        .map(|n| json!({ "title": format!("todo {n}"), "description": format!("of request {n}") }))
        .collect();
    let responses = futures_util::future::join_all(
        bodies
            .iter()
            .enumerate()
            .map(|(n, body)| app.post_todo(&tokens[n % tokens.len()], body)),
    )
    .await;
    let mut created = Vec::new();
    for (n, response) in responses.into_iter().enumerate() {
        assert_eq!(response.status(), 201, "request {n}");
        let todo: Value = response.json().await.unwrap();
        assert_eq!(
            todo["title"],
            format!("todo {n}"),
            "each request gets its own row back"
        );
        assert_eq!(todo["description"], format!("of request {n}"));
        created.push((n, todo["id"].as_str().unwrap().to_string()));
    }

    for (n, id) in created {
        let owner_token = &tokens[n % tokens.len()];
        let other_token = &tokens[(n + 1) % tokens.len()];
        let own: Value = app.get_todo(owner_token, &id).await.json().await.unwrap();
        assert_eq!(own["title"], format!("todo {n}"));
        assert_eq!(app.get_todo(other_token, &id).await.status(), 404);
    }
    for token in &tokens {
        let page: Value = app
            .list_todos(token, "?limit=100")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            page["items"].as_array().unwrap().len(),
            1 + 64 / tokens.len()
        );
    }
}
