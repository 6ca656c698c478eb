//! Handlers of `/api/todos`: parse and validate the request, send one
//! message to the `DbExecutor`, map the result. Each is scoped to the caller's
//! owner; another owner's todo is indistinguishable from a missing one (404).

use actix_web::http::header;
use actix_web::web::{Data, Json, Path, Query, ReqData};
use actix_web::{HttpResponse, Responder};
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::body::BoundedJson;
use crate::actors::db::{CreateTodo, DbClient, DeleteTodo, GetTodo, ListTodos, UpdateTodo};
use crate::auth::Caller;
use crate::db::todos::{NewTodo, PageCursor, Todo, TodoChanges, TodoFilter};
use crate::domain::{TodoDescription, TodoTitle};
use crate::error::{ApiError, ErrorBody};

/// Page size when `limit` is not given.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest page a client may ask for.
pub const MAX_PAGE_SIZE: u32 = 100;

/// A todo as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TodoResponse {
    pub id: Uuid,
    /// 1 to 255 characters.
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    /// RFC 3339, UTC, with microseconds.
    #[serde(serialize_with = "serialize_timestamp")]
    pub created_at: DateTime<Utc>,
    /// RFC 3339, UTC, with microseconds; moves forward on every change.
    #[serde(serialize_with = "serialize_timestamp")]
    pub updated_at: DateTime<Utc>,
}

/// Writes a timestamp as RFC 3339 in UTC with microseconds (PostgreSQL's
/// precision), always the same width: `2026-11-26T14:06:35.906090Z`.
///
/// Digits are written straight into a buffer: chrono's own serializer goes
/// through `fmt` and took 4% of a GET's CPU for the two timestamps.
fn serialize_timestamp<S: Serializer>(
    at: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let (date, time) = (at.date_naive(), at.time());
    let year = date.year();
    // Years outside 0..=9999 need more digits or a sign; a leap second has
    // nanoseconds past 10^9. Neither comes from PostgreSQL's now().
    if !(0..=9999).contains(&year) || time.nanosecond() >= 1_000_000_000 {
        return serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true));
    }
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    write_digits(&mut text[0..4], year.unsigned_abs());
    write_digits(&mut text[5..7], date.month());
    write_digits(&mut text[8..10], date.day());
    write_digits(&mut text[11..13], time.hour());
    write_digits(&mut text[14..16], time.minute());
    write_digits(&mut text[17..19], time.second());
    write_digits(&mut text[20..26], time.nanosecond() / 1000);
    serializer.serialize_str(std::str::from_utf8(&text).expect("only ASCII digits were written"))
}

/// Writes `value` as decimal digits filling `out`, zero-padded on the left.
fn write_digits(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

impl From<Todo> for TodoResponse {
    fn from(todo: Todo) -> Self {
        TodoResponse {
            id: todo.id,
            title: todo.title,
            description: todo.description,
            completed: todo.completed,
            created_at: todo.created_at,
            updated_at: todo.updated_at,
        }
    }
}

// The `pattern`s below restate, for OpenAPI clients, the rules that
// `domain::TodoTitle` and `domain::TodoDescription` enforce, built from the
// character tables of `domain::todo` (a test rebuilds them from those tables
// and compares). A title needs a character that is not whitespace, not a
// control character and not default-ignorable (zero-width, format); neither
// field may hold control characters (the description allows tab and
// newlines) or bidirectional embedding, override and isolate controls. Every
// range is in the Basic Multilingual Plane, so the patterns mean the same
// read over UTF-16 (ECMA-262) or over code points (Python, Rust).
// utoipa takes only literals here.

/// The body of `POST /api/todos`. Unknown fields (including `id`, `owner`,
/// `created_at`) are rejected with 422.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTodoRequest {
    /// 1 to 255 characters once trimmed, at least one of them visible; no
    /// control characters, no bidirectional embedding, override or isolate
    /// characters (U+202A to U+202E, U+2066 to U+2069).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*[^\u0000-\u0020\u007F-\u00A0\u00AD\u034F\u061C\u115F-\u1160\u1680\u17B4-\u17B5\u180B-\u180F\u2000-\u200F\u2028-\u202F\u205F-\u206F\u3000\u3164\uFE00-\uFE0F\uFEFF\uFFA0\uFFF0-\uFFF8][^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$",
        example = "Buy milk"
    )]
    pub title: String,
    /// Up to 10,000 characters; no control characters but tab and newlines,
    /// no bidirectional embedding, override or isolate characters.
    #[schema(
        max_length = 10000,
        pattern = r"^[^\u0000-\u0008\u000B-\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$"
    )]
    pub description: Option<String>,
}

/// The body of `PATCH /api/todos/{id}`: every field optional; `description:
/// null` clears the description. Unknown fields are rejected with 422.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTodoRequest {
    /// A new title; `null` is rejected (a todo always has one).
    #[schema(value_type = Option<String>, nullable = false, min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*[^\u0000-\u0020\u007F-\u00A0\u00AD\u034F\u061C\u115F-\u1160\u1680\u17B4-\u17B5\u180B-\u180F\u2000-\u200F\u2028-\u202F\u205F-\u206F\u3000\u3164\uFE00-\uFE0F\uFEFF\uFFA0\uFFF0-\uFFF8][^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$")]
    #[serde(default, deserialize_with = "present")]
    pub title: Option<Option<String>>,
    /// A new description; `null` clears it.
    #[schema(value_type = Option<String>, nullable = true, max_length = 10000, pattern = r"^[^\u0000-\u0008\u000B-\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$")]
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    /// Whether the todo is done; `null` is rejected.
    #[schema(value_type = Option<bool>, nullable = false)]
    #[serde(default, deserialize_with = "present")]
    pub completed: Option<Option<bool>>,
}

/// Tells an absent field (`None`, via `default`) from an explicit `null` (`Some(None)`).
fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Query parameters of `GET /api/todos`; unknown parameters are a 400.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListTodosQuery {
    /// Only completed (`true`) or open (`false`) todos.
    pub completed: Option<bool>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page, passed back unchanged: 48
    /// lowercase hexadecimal digits. Any such value is a position in the
    /// list (one the API did not return simply starts the page there);
    /// anything else is a 400 `invalid_cursor`.
    #[param(pattern = r"^[0-9a-f]{48}$", min_length = 48, max_length = 48)]
    pub cursor: Option<String>,
}

/// One page of todos, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TodoList {
    pub items: Vec<TodoResponse>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(pattern = r"^[0-9a-f]{48}$", min_length = 48, max_length = 48)]
    pub next_cursor: Option<String>,
}

/// Creates a todo.
#[utoipa::path(
    post,
    path = "/api/todos",
    tag = "todos",
    request_body = CreateTodoRequest,
    responses(
        (status = 201, description = "Created", body = TodoResponse,
            headers(("Location" = String, description = "URL of the new todo"))),
        (status = 400, description = "Malformed JSON, or a body that cannot be read", body = ErrorBody),
        (status = 422, description = "Validation failed or unknown field", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create_todo(
    caller: ReqData<Caller>,
    db: Data<DbClient>,
    body: BoundedJson<CreateTodoRequest>,
) -> Result<HttpResponse, ApiError> {
    let CreateTodoRequest { title, description } = body.into_inner();
    let todo = NewTodo {
        title: TodoTitle::parse(title)?,
        description: description.map(TodoDescription::parse).transpose()?,
    };
    let created = db
        .send(CreateTodo {
            owner: caller.owner.clone(),
            todo,
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/todos/{}", created.id)))
        .json(TodoResponse::from(created)))
}

/// Lists the caller's todos, newest first, one page at a time.
#[utoipa::path(
    get,
    path = "/api/todos",
    tag = "todos",
    params(ListTodosQuery),
    responses(
        (status = 200, description = "A page of todos", body = TodoList),
        (status = 400, description = "Malformed query, bad cursor or limit out of range", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list_todos(
    caller: ReqData<Caller>,
    db: Data<DbClient>,
    query: Query<ListTodosQuery>,
) -> Result<Json<TodoList>, ApiError> {
    let ListTodosQuery {
        completed,
        limit,
        cursor,
    } = query.into_inner();
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("limit must be between 1 and {MAX_PAGE_SIZE}"),
        });
    }
    let after = match cursor {
        Some(cursor) => Some(PageCursor::decode(&cursor).ok_or(ApiError::BadRequest {
            code: "invalid_cursor",
            message: "cursor is not one this API returned".to_string(),
        })?),
        None => None,
    };
    let page = db
        .send(ListTodos {
            owner: caller.owner.clone(),
            filter: TodoFilter {
                completed,
                limit,
                after,
            },
        })
        .await?;
    Ok(Json(TodoList {
        items: page.items.into_iter().map(TodoResponse::from).collect(),
        next_cursor: page.next_cursor.map(|cursor| cursor.encode()),
    }))
}

/// Reads one todo.
#[utoipa::path(
    get,
    path = "/api/todos/{id}",
    tag = "todos",
    params(("id" = Uuid, Path, description = "The todo's id")),
    responses(
        (status = 200, description = "The todo", body = TodoResponse),
        (status = 404, description = "No such todo for this owner", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get_todo(
    caller: ReqData<Caller>,
    db: Data<DbClient>,
    id: Path<String>,
) -> Result<Json<TodoResponse>, ApiError> {
    let id = parse_todo_id(&id)?;
    let todo = db
        .send(GetTodo {
            owner: caller.owner.clone(),
            id,
        })
        .await?;
    Ok(Json(todo.into()))
}

/// Changes some fields of a todo and bumps `updated_at`.
#[utoipa::path(
    patch,
    path = "/api/todos/{id}",
    tag = "todos",
    params(("id" = Uuid, Path, description = "The todo's id")),
    request_body = UpdateTodoRequest,
    responses(
        (status = 200, description = "The updated todo", body = TodoResponse),
        (status = 400, description = "Malformed JSON, or a body that cannot be read", body = ErrorBody),
        (status = 404, description = "No such todo for this owner", body = ErrorBody),
        (status = 422, description = "Validation failed or unknown field", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn update_todo(
    caller: ReqData<Caller>,
    db: Data<DbClient>,
    id: Path<String>,
    body: BoundedJson<UpdateTodoRequest>,
) -> Result<Json<TodoResponse>, ApiError> {
    let id = parse_todo_id(&id)?;
    let UpdateTodoRequest {
        title,
        description,
        completed,
    } = body.into_inner();
    let changes = TodoChanges {
        title: match title {
            None => None,
            Some(None) => return Err(ApiError::Validation("title must not be null".into())),
            Some(Some(title)) => Some(TodoTitle::parse(title)?),
        },
        description: description
            .map(|description| description.map(TodoDescription::parse).transpose())
            .transpose()?,
        completed: match completed {
            None => None,
            Some(None) => {
                return Err(ApiError::Validation("completed must not be null".into()));
            }
            Some(Some(completed)) => Some(completed),
        },
    };
    let todo = db
        .send(UpdateTodo {
            owner: caller.owner.clone(),
            id,
            changes,
        })
        .await?;
    Ok(Json(todo.into()))
}

/// Deletes a todo.
#[utoipa::path(
    delete,
    path = "/api/todos/{id}",
    tag = "todos",
    params(("id" = Uuid, Path, description = "The todo's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such todo for this owner", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn delete_todo(
    caller: ReqData<Caller>,
    db: Data<DbClient>,
    id: Path<String>,
) -> Result<impl Responder, ApiError> {
    let id = parse_todo_id(&id)?;
    db.send(DeleteTodo {
        owner: caller.owner.clone(),
        id,
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A path segment that is not a UUID names no todo: 404, like any unknown id.
fn parse_todo_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::todo_not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialized(at: DateTime<Utc>) -> String {
        let mut out = Vec::new();
        serialize_timestamp(&at, &mut serde_json::Serializer::new(&mut out)).unwrap();
        serde_json::from_slice::<String>(&out).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        for micros in [
            0,
            1,
            1_764_000_000_000_000,
            1_764_166_000_906_090,
            1_764_166_000_999_999,
            -62_135_596_800_000_000, // 0001-01-01
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
        ] {
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let text = serialized(at);
            assert_eq!(text, at.to_rfc3339_opts(SecondsFormat::Micros, true));
            assert_eq!(DateTime::parse_from_rfc3339(&text).unwrap(), at);
        }
    }

    #[test]
    fn years_beyond_four_digits_still_serialize() {
        let at = DateTime::from_timestamp_micros(253_402_300_800_000_000).unwrap(); // year 10000
        assert_eq!(
            serialized(at),
            at.to_rfc3339_opts(SecondsFormat::Micros, true)
        );
    }
}
