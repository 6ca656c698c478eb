//! URL layout of both listeners, and how malformed requests are answered.

pub mod api_docs;
pub mod body;
pub mod health;
pub mod openapi;
pub mod todos;

use actix_web::error::{PathError, QueryPayloadError};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{Compress, from_fn};
use actix_web::{HttpRequest, HttpResponse, Route, guard, web};

use crate::auth::require_api_key;
use crate::error::ApiError;
use body::BodyLimits;

/// The methods of `/api/todos`, as `Allow` lists them.
const TODOS_METHODS: &str = "GET, HEAD, POST, OPTIONS";
/// The methods of `/api/todos/{id}`.
const TODO_METHODS: &str = "GET, HEAD, PATCH, DELETE, OPTIONS";
/// The methods of the public documents (`/api/openapi.json`, `/api/docs…`).
const DOCUMENT_METHODS: &str = "GET, HEAD, OPTIONS";

/// The public API: `/api/todos…` behind API keys, the OpenAPI document and
/// the API docs page (`/api/docs`, see [`api_docs`]).
///
/// Every resource answers `HEAD` as `GET` without the body (actix-http
/// leaves the body out of any answer to a `HEAD`), `OPTIONS` with `204` and
/// `Allow`, and any other method with a 405 in the error shape.
pub fn configure_api(cfg: &mut web::ServiceConfig, body_limits: BodyLimits) {
    cfg.service(
        web::resource("/api/openapi.json")
            .route(get_or_head().to(openapi::openapi_json))
            .route(options(DOCUMENT_METHODS))
            .default_service(web::to(|| method_not_allowed(DOCUMENT_METHODS))),
    )
    .service(
        web::scope("/api/docs")
            .wrap(Compress::default())
            .service(
                web::resource("")
                    .route(get_or_head().to(api_docs::page))
                    .route(options(DOCUMENT_METHODS))
                    .default_service(web::to(|| method_not_allowed(DOCUMENT_METHODS))),
            )
            .service(
                web::resource("/{file}")
                    .route(get_or_head().to(api_docs::asset))
                    .route(options(DOCUMENT_METHODS))
                    .default_service(web::to(|| method_not_allowed(DOCUMENT_METHODS))),
            ),
    )
    .service(
        web::scope("/api")
            .app_data(body_limits)
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .wrap(from_fn(require_api_key))
            .service(
                web::resource("/todos")
                    .route(web::post().to(todos::create_todo))
                    .route(get_or_head().to(todos::list_todos))
                    .route(options(TODOS_METHODS))
                    .default_service(web::to(|| method_not_allowed(TODOS_METHODS))),
            )
            .service(
                web::resource("/todos/{id}")
                    .route(get_or_head().to(todos::get_todo))
                    .route(web::patch().to(todos::update_todo))
                    .route(web::delete().to(todos::delete_todo))
                    .route(options(TODO_METHODS))
                    .default_service(web::to(|| method_not_allowed(TODO_METHODS))),
            ),
    );
}

/// The admin listener: health probes and metrics.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(health::metrics));
}

/// Answer for any path no route matches.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route"))
}

/// A route for `GET` and `HEAD` (RFC 9110: a resource that answers `GET`
/// answers `HEAD` the same way, without the body).
fn get_or_head() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// A route answering `OPTIONS` with `204` and the resource's `Allow`.
fn options(allowed: &'static str) -> Route {
    web::method(Method::OPTIONS).to(move || async move {
        HttpResponse::NoContent()
            .insert_header((header::ALLOW, HeaderValue::from_static(allowed)))
            .finish()
    })
}

async fn method_not_allowed(allowed: &'static str) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed { allowed })
}

fn query_error(error: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest {
        code: "invalid_query",
        message: format!("malformed query string: {error}"),
    }
    .into()
}

fn path_error(_error: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound("no such route").into()
}
