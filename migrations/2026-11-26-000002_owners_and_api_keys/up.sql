-- API keys: only a SHA-256 hash of each key's secret is stored. Keys are
-- revoked, never deleted, so `keys list` keeps the audit trail.
CREATE TABLE api_keys (
    id           UUID PRIMARY KEY,
    owner        VARCHAR(255) NOT NULL CHECK (char_length(owner) > 0),
    secret_hash  BYTEA NOT NULL CHECK (octet_length(secret_hash) = 32),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

CREATE INDEX api_keys_owner_idx ON api_keys (owner);

-- Every todo belongs to the owner of the key that created it. Rows that predate
-- owners (the seed's data) are given to 'legacy', which no key owns until an
-- operator creates one for it.
ALTER TABLE todos ADD COLUMN owner VARCHAR(255) NOT NULL DEFAULT 'legacy';
ALTER TABLE todos ALTER COLUMN owner DROP DEFAULT;

-- The owner-scoped queries: keyset pagination, newest first, optionally
-- filtered on `completed`; and lookups by id (served by the primary key).
CREATE INDEX todos_owner_created_at_id_idx ON todos (owner, created_at DESC, id DESC);
CREATE INDEX todos_owner_completed_created_at_id_idx ON todos (owner, completed, created_at DESC, id DESC);
