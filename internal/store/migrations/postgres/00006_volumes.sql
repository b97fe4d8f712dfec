-- +goose Up
-- Team volumes (issue 17). Keep sqlite/ and postgres/ in step. A volume is
-- a directory on one host (host): sandboxes mounting it are placed there.
-- token authenticates E2B's volume content API; it is returned by GET, so
-- it is sealed like sandbox access tokens, not hashed.
CREATE TABLE volumes (
    id         TEXT PRIMARY KEY,
    team_id    TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name       TEXT NOT NULL CHECK (name <> ''),
    host       TEXT NOT NULL DEFAULT '',
    token      BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (team_id, name)
);

-- The volumes a sandbox mounts; a sandbox's rows go with it.
CREATE TABLE sandbox_volumes (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    volume_id  TEXT NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
    path       TEXT NOT NULL CHECK (path <> ''),
    PRIMARY KEY (sandbox_id, path)
);
CREATE INDEX sandbox_volumes_volume ON sandbox_volumes (volume_id);

-- +goose Down
DROP TABLE sandbox_volumes;
DROP TABLE volumes;
