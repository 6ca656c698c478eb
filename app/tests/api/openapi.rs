//! `/api/openapi.json` describes what the server really serves.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn the_openapi_document_lists_exactly_the_served_operations() {
    let app = spawn_app().await;
    let token = app.create_key("alice");

    let response = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200, "the document is public");
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let served: BTreeSet<String> = [
        "GET /api/todos",
        "POST /api/todos",
        "GET /api/todos/{id}",
        "PATCH /api/todos/{id}",
        "DELETE /api/todos/{id}",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(documented, served);

    // Every documented operation answers something other than 404/405 on
    // the real server, with the statuses the document promises.
    let todo = app.create_todo(&token, "documented").await;
    let id = todo["id"].as_str().unwrap();
    for operation in &served {
        let (method, path) = operation.split_once(' ').unwrap();
        let url = app.url(&path.replace("{id}", id));
        let request = match method {
            "GET" => app.client.get(url),
            "POST" => app
                .client
                .post(url)
                .json(&serde_json::json!({"title": "x"})),
            "PATCH" => app
                .client
                .patch(url)
                .json(&serde_json::json!({"completed": true})),
            "DELETE" => app.client.delete(url),
            _ => unreachable!(),
        };
        let status = request
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        let documented_statuses = document["paths"][path][method.to_lowercase()]["responses"]
            .as_object()
            .unwrap();
        assert!(
            documented_statuses.contains_key(&status.to_string()),
            "{operation} answered {status}, which the document does not list"
        );
        for error_status in ["401", "503"] {
            assert!(
                documented_statuses.contains_key(error_status),
                "{operation} documents {error_status}"
            );
        }
    }

    // And nothing else is served on those paths: every other method is a 405.
    let paths: BTreeSet<&str> = served
        .iter()
        .map(|operation| operation.split_once(' ').unwrap().1)
        .collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if served.contains(&format!("{method} {path}")) {
                continue;
            }
            let status = app
                .client
                .request(method.parse().unwrap(), app.url(&path.replace("{id}", id)))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 405, "{method} {path} is served but not documented");
        }
    }

    // The todo schema names the fields the API returns.
    let schema = &document["components"]["schemas"]["TodoResponse"]["properties"];
    let mut fields: Vec<&String> = schema.as_object().unwrap().keys().collect();
    fields.sort();
    let mut returned: Vec<&String> = todo.as_object().unwrap().keys().collect();
    returned.sort();
    assert_eq!(fields, returned);
}
