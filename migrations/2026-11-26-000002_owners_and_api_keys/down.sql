DROP INDEX todos_owner_completed_created_at_id_idx;
DROP INDEX todos_owner_created_at_id_idx;
ALTER TABLE todos DROP COLUMN owner;
DROP TABLE api_keys;
