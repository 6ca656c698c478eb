//! Queries on `todos`. Every function takes the owner and filters on it, so
//! no code path can read or change another owner's row. They run on a
//! shared `&AsyncPgConnection`: queries sent concurrently on one connection
//! are pipelined (see `crate::actors::db`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::DbError;
use super::sql_text::Prebuilt;
use crate::domain::{Owner, TodoDescription, TodoTitle};
use crate::schema::todos;

/// A todo as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = todos, check_for_backend(diesel::pg::Pg))]
pub struct Todo {
    pub id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a client may set when creating a todo.
#[derive(Debug, Clone)]
pub struct NewTodo {
    pub title: TodoTitle,
    pub description: Option<TodoDescription>,
}

/// What a client may change; `None` leaves a field as it is, and
/// `description: Some(None)` clears the description.
#[derive(Debug, Clone, Default)]
pub struct TodoChanges {
    pub title: Option<TodoTitle>,
    pub description: Option<Option<TodoDescription>>,
    pub completed: Option<bool>,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone)]
pub struct TodoPage {
    pub items: Vec<Todo>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<PageCursor>,
}

/// Which todos a listing wants.
#[derive(Debug, Clone)]
pub struct TodoFilter {
    pub completed: Option<bool>,
    /// 1..=100, checked by the caller.
    pub limit: u32,
    pub after: Option<PageCursor>,
}

/// The position after the last todo of a page: keyset pagination on
/// `(created_at, id)`, both descending, so pages stay stable while rows are
/// inserted (new rows sort before the cursor) or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl PageCursor {
    /// Length of [`PageCursor::encode`]'s text: 16 hex digits of the
    /// timestamp, 32 of the id.
    pub const ENCODED_LEN: usize = 48;

    /// The opaque form clients pass back: `created_at` in microseconds since
    /// the epoch (as the 16 hex digits of its two's complement), then the
    /// id's 32 hex digits, all lowercase. Every string of that shape decodes,
    /// so the OpenAPI pattern `^[0-9a-f]{48}$` is exactly what is accepted.
    pub fn encode(&self) -> String {
        format!(
            "{:016x}{}",
            self.created_at.timestamp_micros() as u64,
            self.id.simple()
        )
    }

    /// Parses a cursor from [`PageCursor::encode`] (or the base64url
    /// `v1:` form of earlier versions, so clients paginating through a
    /// rolling update keep their place); `None` when it is neither.
    pub fn decode(opaque: &str) -> Option<PageCursor> {
        if opaque.len() != Self::ENCODED_LEN {
            return Self::decode_v1(opaque);
        }
        let is_lower_hex =
            |text: &str| text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !is_lower_hex(opaque) {
            return None;
        }
        let (micros, id) = opaque.split_at(16);
        let micros = u64::from_str_radix(micros, 16).ok()? as i64;
        Some(PageCursor {
            created_at: clamp_to_stored_range(micros),
            id: Uuid::try_parse(id).ok()?,
        })
    }

    /// The cursor format before 48 hex digits: base64url of
    /// `v1:<microseconds>:<uuid>`.
    fn decode_v1(opaque: &str) -> Option<PageCursor> {
        if opaque.len() > 128 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(opaque).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let mut parts = text.split(':');
        if parts.next()? != "v1" {
            return None;
        }
        let micros: i64 = parts.next()?.parse().ok()?;
        let id = Uuid::try_parse(parts.next()?).ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(PageCursor {
            created_at: DateTime::from_timestamp_micros(micros)?,
            id,
        })
    }
}

/// A cursor's timestamp brought into years 1 to 9999, which PostgreSQL
/// stores and every todo's `created_at` (set by the database's clock) lies
/// in: a position before or after all of them lists the same todos, and the
/// query never sees a timestamp PostgreSQL would refuse.
fn clamp_to_stored_range(micros: i64) -> DateTime<Utc> {
    const FIRST: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00:00Z
    const LAST: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
    DateTime::from_timestamp_micros(micros.clamp(FIRST, LAST))
        .expect("years 1 to 9999 are representable")
}

#[derive(AsChangeset)]
#[diesel(table_name = todos)]
struct TodoChangeset {
    title: Option<String>,
    description: Option<Option<String>>,
    completed: Option<bool>,
}

/// One row of [`InsertTodos`]: a todo to create, with its id made here.
#[derive(Debug, Clone)]
pub struct TodoRow {
    pub id: Uuid,
    pub owner: Owner,
    pub todo: NewTodo,
}

impl TodoRow {
    /// A row for `owner` with a fresh id. UUIDv7: time-ordered ids keep the
    /// primary-key index append-mostly; made here, not by the database, so
    /// each row of a batch is matched back to its request by id.
    pub fn new(owner: Owner, todo: NewTodo) -> TodoRow {
        TodoRow {
            id: Uuid::now_v7(),
            owner,
            todo,
        }
    }
}

/// `INSERT INTO todos … SELECT * FROM unnest($1, $2, $3, $4) RETURNING …`:
/// any number of todos (of any owners) in one statement, so one commit and
/// one WAL flush serve a whole batch. PostgreSQL runs the statements of one
/// connection one after the other and each commit waits for its flush
/// (about 115 µs here), so one insert per statement caps a connection at a
/// few thousand creates per second. The SQL text is the same for every
/// batch size (four array parameters), so the statement is prepared once
/// per connection; diesel would not cache an `Insertable` insert or a
/// `sql_query`.
#[derive(Debug, Default)]
pub struct InsertTodos {
    ids: Vec<Uuid>,
    owners: Vec<String>,
    titles: Vec<String>,
    descriptions: Vec<Option<String>>,
}

impl InsertTodos {
    /// The statement for `rows`, in their order.
    pub fn new<'a>(rows: impl IntoIterator<Item = &'a TodoRow>) -> InsertTodos {
        let mut insert = InsertTodos::default();
        for row in rows {
            insert.ids.push(row.id);
            insert.owners.push(row.owner.as_str().to_string());
            insert.titles.push(row.todo.title.as_str().to_string());
            insert.descriptions.push(
                row.todo
                    .description
                    .clone()
                    .map(TodoDescription::into_inner),
            );
        }
        insert
    }

    /// Inserts the rows and returns them as stored, in no particular order
    /// (match them by id).
    pub async fn execute(self, mut conn: &AsyncPgConnection) -> Result<Vec<Todo>, DbError> {
        Ok(self.load::<Todo>(&mut conn).await?)
    }
}

impl QueryId for InsertTodos {
    type QueryId = InsertTodos;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for InsertTodos {
    /// `Todo`'s fields, in its order.
    type SqlType = (
        sql_types::Uuid,
        sql_types::Text,
        sql_types::Nullable<sql_types::Text>,
        sql_types::Bool,
        sql_types::Timestamptz,
        sql_types::Timestamptz,
    );
}

impl QueryFragment<Pg> for InsertTodos {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        use sql_types::{Array, Nullable, Text};
        out.push_sql("INSERT INTO todos (id, owner, title, description) SELECT * FROM unnest(");
        out.push_bind_param::<Array<sql_types::Uuid>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.owners)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.titles)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.descriptions)?;
        out.push_sql(") RETURNING id, title, description, completed, created_at, updated_at");
        Ok(())
    }
}

/// `owner = $n` written so that no index can serve it: a lookup by id must
/// only ever probe the primary key. Written plainly, the planner may serve
/// it from a listing index (owner first) at the same estimated cost while
/// the table has no or small statistics, and the connection keeps that
/// cached plan as the table grows: each lookup then walks the owner's whole
/// range. `(owner = $n) IS NOT DISTINCT FROM true` is the same test for a
/// non-null column, but not an index condition, so it stays a filter on the
/// one row the primary key finds.
fn owned_by(
    owner: &Owner,
) -> diesel::dsl::IsNotDistinctFrom<diesel::dsl::Eq<todos::owner, &str>, bool> {
    todos::owner.eq(owner.as_str()).is_not_distinct_from(true)
}

/// The owner's todo with this id, or [`DbError::NotFound`].
pub async fn find(mut conn: &AsyncPgConnection, owner: &Owner, id: Uuid) -> Result<Todo, DbError> {
    let query = todos::table
        .filter(todos::id.eq(id))
        .filter(owned_by(owner))
        .select(Todo::as_select())
        .limit(1);
    Ok(Prebuilt::new(query).get_result(&mut conn).await?)
}

/// One page of the owner's todos, newest first.
pub async fn list(
    mut conn: &AsyncPgConnection,
    owner: &Owner,
    filter: &TodoFilter,
) -> Result<TodoPage, DbError> {
    let mut query = todos::table
        .filter(todos::owner.eq(owner.as_str()))
        .select(Todo::as_select())
        .into_boxed();
    if let Some(completed) = filter.completed {
        query = query.filter(todos::completed.eq(completed));
    }
    if let Some(after) = filter.after {
        query = query.filter(
            todos::created_at.lt(after.created_at).or(todos::created_at
                .eq(after.created_at)
                .and(todos::id.lt(after.id))),
        );
        // Implied by the condition above, but an index condition: the scan
        // starts at the cursor instead of reading every newer row first.
        query = query.filter(todos::created_at.le(after.created_at));
    }
    // One row more than asked tells whether another page exists.
    let mut items: Vec<Todo> = query
        .order((todos::created_at.desc(), todos::id.desc()))
        .limit(i64::from(filter.limit) + 1)
        .load(&mut conn)
        .await?;
    let next_cursor = if items.len() > filter.limit as usize {
        items.truncate(filter.limit as usize);
        items.last().map(|last| PageCursor {
            created_at: last.created_at,
            id: last.id,
        })
    } else {
        None
    };
    Ok(TodoPage { items, next_cursor })
}

/// Applies `changes` to the owner's todo, bumps `updated_at`, and returns the result.
pub async fn update(
    mut conn: &AsyncPgConnection,
    owner: &Owner,
    id: Uuid,
    changes: TodoChanges,
) -> Result<Todo, DbError> {
    let changeset = TodoChangeset {
        title: changes.title.map(TodoTitle::into_inner),
        description: changes
            .description
            .map(|description| description.map(TodoDescription::into_inner)),
        completed: changes.completed,
    };
    // `now()` is the transaction's start time; GREATEST keeps `updated_at`
    // moving forward even if two updates land in the same microsecond.
    let bumped_updated_at = diesel::dsl::sql::<diesel::sql_types::Timestamptz>(
        "GREATEST(now(), updated_at + interval '1 microsecond')",
    );
    let query = diesel::update(
        todos::table
            .filter(todos::id.eq(id))
            .filter(owned_by(owner)),
    )
    .set((changeset, todos::updated_at.eq(bumped_updated_at)))
    .returning(Todo::as_returning());
    Ok(Prebuilt::new(query).get_result(&mut conn).await?)
}

/// Deletes the owner's todo, or returns [`DbError::NotFound`].
pub async fn delete(mut conn: &AsyncPgConnection, owner: &Owner, id: Uuid) -> Result<(), DbError> {
    let query = diesel::delete(
        todos::table
            .filter(todos::id.eq(id))
            .filter(owned_by(owner)),
    );
    let deleted = Prebuilt::new(query).execute(&mut conn).await?;
    if deleted == 0 {
        Err(DbError::NotFound)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Datelike;

    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = PageCursor {
            created_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(PageCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(PageCursor::decode("not a cursor"), None);
        assert_eq!(PageCursor::decode(&URL_SAFE_NO_PAD.encode("v2:1:x")), None);
        assert_eq!(PageCursor::decode(&"A".repeat(1000)), None);
        assert_eq!(PageCursor::decode(&"0".repeat(47)), None);
        assert_eq!(PageCursor::decode(&"A".repeat(48)), None, "uppercase");
        assert_eq!(PageCursor::decode(&"g".repeat(48)), None);
    }

    #[test]
    fn every_cursor_of_the_documented_shape_decodes_into_the_stored_range() {
        for text in [
            "0".repeat(48),
            "f".repeat(48),
            format!("8{}", "0".repeat(47)),
        ] {
            let cursor = PageCursor::decode(&text).expect("48 lowercase hex digits decode");
            assert!((1..=9999).contains(&cursor.created_at.year()), "{text}");
        }
    }

    #[test]
    fn cursors_of_the_previous_format_still_decode() {
        let id = Uuid::now_v7();
        let v1 = URL_SAFE_NO_PAD.encode(format!("v1:1764000000123456:{}", id.simple()));
        let cursor = PageCursor::decode(&v1).expect("a v1 cursor decodes");
        assert_eq!(cursor.id, id);
        assert_eq!(cursor.created_at.timestamp_micros(), 1_764_000_000_123_456);
    }
}
