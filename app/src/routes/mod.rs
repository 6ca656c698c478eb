//! URL layout of both listeners, and how malformed requests are answered.

pub mod health;
pub mod openapi;
pub mod todos;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::middleware::from_fn;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::require_api_key;
use crate::error::ApiError;

/// The public API: `/api/todos…` behind API keys, and the OpenAPI document.
pub fn configure_api(cfg: &mut web::ServiceConfig, json_body_limit_bytes: usize) {
    cfg.service(web::resource("/api/openapi.json").route(web::get().to(openapi::openapi_json)))
        .service(
            web::scope("/api")
                .app_data(json_config(json_body_limit_bytes))
                .app_data(web::QueryConfig::default().error_handler(query_error))
                .app_data(web::PathConfig::default().error_handler(path_error))
                .wrap(from_fn(require_api_key))
                .service(
                    web::resource("/todos")
                        .route(web::post().to(todos::create_todo))
                        .route(web::get().to(todos::list_todos))
                        .default_service(web::to(|| method_not_allowed("GET, POST"))),
                )
                .service(
                    web::resource("/todos/{id}")
                        .route(web::get().to(todos::get_todo))
                        .route(web::patch().to(todos::update_todo))
                        .route(web::delete().to(todos::delete_todo))
                        .default_service(web::to(|| method_not_allowed("GET, PATCH, DELETE"))),
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

async fn method_not_allowed(allowed: &'static str) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed { allowed })
}

fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |error, _req| json_error(error, limit).into())
}

/// Malformed JSON is a 400; JSON of the wrong shape (missing, unknown or
/// mistyped fields) is a 422; too large a body is a 413; another content type 415.
fn json_error(error: JsonPayloadError, limit: usize) -> ApiError {
    match error {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge { limit }
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(error) if error.is_data() => {
            ApiError::Validation(error.to_string())
        }
        JsonPayloadError::Deserialize(error) => ApiError::BadRequest {
            code: "malformed_json",
            message: format!("the body is not valid JSON: {error}"),
        },
        other => ApiError::BadRequest {
            code: "malformed_body",
            message: format!("the body could not be read: {other}"),
        },
    }
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
