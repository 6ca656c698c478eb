//! Queries on `api_keys`. Only the SHA-256 of a key's secret is ever stored
//! or read back; the token itself exists only in the `keys create` output.
//! The `keys` commands use a synchronous connection; the two queries of the
//! request path ([`find_active`], [`touch`]) run on a worker's pipelined one.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use super::DbError;
use crate::domain::Owner;
use crate::schema::api_keys;

/// A key as stored (no secret, only its hash).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys, check_for_backend(diesel::pg::Pg))]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub owner: String,
    pub secret_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    pub fn owner(&self) -> Owner {
        Owner::from_trusted(self.owner.clone())
    }
}

/// Stores a new key.
pub fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    owner: &Owner,
    secret_hash: &[u8; 32],
) -> Result<ApiKeyRecord, DbError> {
    Ok(diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(id),
            api_keys::owner.eq(owner.as_str()),
            api_keys::secret_hash.eq(secret_hash.as_slice()),
        ))
        .returning(ApiKeyRecord::as_returning())
        .get_result(conn)?)
}

/// The key with this id, if it exists and is not revoked.
pub async fn find_active(
    mut conn: &AsyncPgConnection,
    id: Uuid,
) -> Result<Option<ApiKeyRecord>, DbError> {
    // Named in full: this module's synchronous queries need diesel's own
    // `RunQueryDsl`, with methods of the same names.
    let query = api_keys::table
        .filter(api_keys::id.eq(id))
        .filter(api_keys::revoked_at.is_null())
        .select(ApiKeyRecord::as_select());
    Ok(diesel_async::RunQueryDsl::first(query, &mut conn)
        .await
        .optional()?)
}

/// Every key, revoked ones included, oldest first.
pub fn list(conn: &mut PgConnection) -> Result<Vec<ApiKeyRecord>, DbError> {
    Ok(api_keys::table
        .order((api_keys::created_at.asc(), api_keys::id.asc()))
        .select(ApiKeyRecord::as_select())
        .load(conn)?)
}

/// What [`revoke`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    AlreadyRevoked,
    NotFound,
}

/// Marks a key revoked; servers stop accepting it once their cache entry expires.
pub fn revoke(conn: &mut PgConnection, id: Uuid) -> Result<RevokeOutcome, DbError> {
    let updated = diesel::update(
        api_keys::table
            .filter(api_keys::id.eq(id))
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(diesel::dsl::now))
    .execute(conn)?;
    if updated == 1 {
        return Ok(RevokeOutcome::Revoked);
    }
    let exists: bool = diesel::select(diesel::dsl::exists(
        api_keys::table.filter(api_keys::id.eq(id)),
    ))
    .get_result(conn)?;
    Ok(if exists {
        RevokeOutcome::AlreadyRevoked
    } else {
        RevokeOutcome::NotFound
    })
}

/// Records that the key was used (called at most once per cache period).
pub async fn touch(mut conn: &AsyncPgConnection, id: Uuid) -> Result<(), DbError> {
    let query = diesel::update(api_keys::table.filter(api_keys::id.eq(id)))
        .set(api_keys::last_used_at.eq(diesel::dsl::now));
    diesel_async::RunQueryDsl::execute(query, &mut conn).await?;
    Ok(())
}
