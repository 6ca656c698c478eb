-- A lookup by id (GET, PATCH, DELETE of /api/todos/{id}) must only ever be
-- one probe of the primary key. With `id` a key column of the listing
-- indexes, the planner could serve `id = $1 AND owner = $2` from one of them
-- at the same estimated cost while the table had no statistics or small
-- ones, and the connection kept that cached plan as the table grew: every
-- lookup then walked the owner's whole range. Without `id` in them, the
-- listing indexes cannot take an `id` condition at all; the lookups write
-- their owner check in a form no index serves (see `db::todos`), and the
-- request connections never plan sequential scans (`db::PgConnectionManager`).
-- The listings still read in order: `created_at` comes from the index and
-- the rare ties on it are sorted by `id` (an incremental sort).
CREATE INDEX todos_owner_created_at_idx ON todos (owner, created_at DESC);
CREATE INDEX todos_owner_completed_created_at_idx ON todos (owner, completed, created_at DESC);
DROP INDEX todos_owner_created_at_id_idx;
DROP INDEX todos_owner_completed_created_at_id_idx;
