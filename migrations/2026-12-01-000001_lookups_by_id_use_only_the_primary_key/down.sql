CREATE INDEX todos_owner_created_at_id_idx ON todos (owner, created_at DESC, id DESC);
CREATE INDEX todos_owner_completed_created_at_id_idx ON todos (owner, completed, created_at DESC, id DESC);
DROP INDEX todos_owner_created_at_idx;
DROP INDEX todos_owner_completed_created_at_idx;
