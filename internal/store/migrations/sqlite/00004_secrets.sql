-- +goose Up
-- E2B-compatible team secrets (issue 17). Keep sqlite/ and postgres/ in step.
-- value holds the current version only, sealed like sandbox env and tokens:
-- values are write-only, so older versions have no reader.
CREATE TABLE secrets (
    id         TEXT PRIMARY KEY,
    team_id    TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name       TEXT NOT NULL CHECK (name <> ''),
    version    INTEGER NOT NULL,
    value      BLOB NOT NULL,
    metadata   TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (team_id, name)
);

-- +goose Down
DROP TABLE secrets;
