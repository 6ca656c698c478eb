//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]`
//! annotations and served at `/api/openapi.json`.

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
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
    modifiers(&BearerAuth),
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

/// `GET /api/openapi.json`: public, no API key needed.
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
