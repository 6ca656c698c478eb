-- The seed's todos table, unchanged in shape.
CREATE TABLE todos (
    id          UUID PRIMARY KEY,
    title       VARCHAR(255) NOT NULL,
    description TEXT,
    completed   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX todos_created_at_idx ON todos (created_at DESC);
CREATE INDEX todos_completed_idx ON todos (completed);
