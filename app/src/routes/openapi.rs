//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]`
//! annotations once per process and served at `/api/openapi.json`.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::header::ContentType;
use actix_web::web::Bytes;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref};
use utoipa::{Modify, OpenApi};

use super::todos;
use crate::error::{ErrorBody, ErrorDetail};

/// The API description; tests check it against the routes the server serves.
#[derive(OpenApi)]
#[openapi(
    info(title = "todo-backend API", description = "Todos scoped to the owner of the API key."),
    paths(
        todos::create_todo,
        todos::list_todos,
        todos::get_todo,
        todos::update_todo,
        todos::delete_todo
    ),
    components(schemas(
        todos::TodoResponse,
        todos::TodoList,
        todos::CreateTodoRequest,
        todos::UpdateTodoRequest,
        ErrorBody,
        ErrorDetail
    )),
    modifiers(&BearerAuth, &SharedRefusals),
    tags((name = "todos", description = "Create, read, update and delete todos"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The refusals that come from the layers every route goes through rather
/// than from the handler: the auth middleware and rate limits (401, 429) and
/// the database layer (503) on every route with an API key, and the bounded
/// JSON body reader (408, 413, 415) on every route that takes a body. Stated
/// here once, so a new route documents them without repeating them, and a
/// changed refusal is described in one place.
struct SharedRefusals;

/// (status, description) of the refusals of every route with an API key.
const SECURED_ROUTE_REFUSALS: [(&str, &str); 3] = [
    ("401", "Missing or invalid API key"),
    (
        "429",
        "Rate limited, or too many requests of this key in flight",
    ),
    ("503", "Database unavailable"),
];

/// (status, description) of the refusals of every route that reads a body.
const BODY_REFUSALS: [(&str, &str); 3] = [
    (
        "408",
        "The body did not arrive within `server.request_body_timeout_ms`",
    ),
    ("413", "Body over the limit"),
    (
        "415",
        "Not application/json, or a Content-Encoding other than gzip or deflate",
    ),
];

impl Modify for SharedRefusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                if operation.security.is_some() {
                    add_error_responses(operation, &SECURED_ROUTE_REFUSALS);
                }
                if operation.request_body.is_some() {
                    add_error_responses(operation, &BODY_REFUSALS);
                }
            }
        }
    }
}

/// Adds each (status, description) as an [`ErrorBody`] response, keeping a
/// response the handler documents itself for the same status.
fn add_error_responses(operation: &mut Operation, refusals: &[(&str, &str)]) {
    for (status, description) in refusals {
        operation
            .responses
            .responses
            .entry((*status).to_string())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(*description)
                    .content(
                        "application/json",
                        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                    )
                    .into()
            });
    }
}

/// The document as served, serialized on first use.
static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| {
    Bytes::from(
        ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serializes"),
    )
});

/// `GET /api/openapi.json`: public, no API key needed.
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(DOCUMENT.clone())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::domain::todo::{BIDI_CONTROLS, CONTROLS, DEFAULT_IGNORABLES, WHITESPACE};

    /// `ranges` as numbers; every one is in the Basic Multilingual Plane, so
    /// a class of them reads the same over UTF-16 or over code points.
    fn bmp(ranges: &[(char, char)]) -> Vec<(u32, u32)> {
        ranges
            .iter()
            .map(|&(low, high)| (u32::from(low), u32::from(high)))
            .inspect(|&(_, high)| assert!(high <= 0xFFFF, "outside the BMP: {high:X}"))
            .collect()
    }

    /// An ECMA-262 character class body of merged, sorted ranges.
    fn class(mut ranges: Vec<(u32, u32)>) -> String {
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::new();
        for (low, high) in ranges {
            match merged.last_mut() {
                Some(last) if low <= last.1 + 1 => last.1 = last.1.max(high),
                _ => merged.push((low, high)),
            }
        }
        merged
            .iter()
            .map(|&(low, high)| match low == high {
                true => format!("\\u{low:04X}"),
                false => format!("\\u{low:04X}-\\u{high:04X}"),
            })
            .collect()
    }

    fn property_pattern(document: &Value, schema: &str, property: &str) -> String {
        document["components"]["schemas"][schema]["properties"][property]["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{schema}.{property} has a pattern"))
            .to_string()
    }

    #[test]
    fn every_route_documents_the_refusals_of_the_layers_it_goes_through() {
        let document: Value = serde_json::from_slice(&DOCUMENT).unwrap();
        let mut operations = 0;
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                operations += 1;
                let documented = operation["responses"].as_object().unwrap();
                let mut expected: Vec<&str> = Vec::new();
                if operation.get("security").is_some() {
                    expected.extend(SECURED_ROUTE_REFUSALS.iter().map(|(status, _)| *status));
                }
                if operation.get("requestBody").is_some() {
                    expected.extend(BODY_REFUSALS.iter().map(|(status, _)| *status));
                }
                for status in expected {
                    assert_eq!(
                        documented[status]["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} documents {status}"
                    );
                }
            }
        }
        assert_eq!(operations, 5, "the five todo operations");
    }

    #[test]
    fn the_documented_patterns_state_the_rules_of_the_domain_types() {
        let document: Value = serde_json::from_slice(&DOCUMENT).unwrap();
        let anywhere = [CONTROLS, BIDI_CONTROLS].concat();
        let invisible = [&anywhere[..], WHITESPACE, DEFAULT_IGNORABLES].concat();
        let allowed = class(bmp(&anywhere));
        let title = format!("^[^{allowed}]*[^{}][^{allowed}]*$", class(bmp(&invisible)));
        let description_controls: Vec<(char, char)> = (0u8..=0x1F)
            .map(char::from)
            .chain((0x7Fu8..=0x9F).map(char::from))
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .map(|c| (c, c))
            .chain(BIDI_CONTROLS.iter().copied())
            .collect();
        let description = format!("^[^{}]*$", class(bmp(&description_controls)));

        for schema in ["CreateTodoRequest", "UpdateTodoRequest"] {
            assert_eq!(
                property_pattern(&document, schema, "title"),
                title,
                "{schema}"
            );
            assert_eq!(
                property_pattern(&document, schema, "description"),
                description,
                "{schema}"
            );
        }
    }
}
