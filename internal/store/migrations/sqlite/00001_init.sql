-- hearth control-plane schema, SQLite flavour. Keep in step with
-- ../postgres/00001_init.sql: same tables, columns and constraints.
-- Timestamps are TEXT in the fixed-width form 2006-01-02T15:04:05.000000Z
-- (UTC), so comparisons and ORDER BY are chronological.

-- +goose Up
CREATE TABLE teams (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL CHECK (name <> ''),
    created_at TEXT NOT NULL
);

-- The platform team owns the templates every team can use.
INSERT INTO teams (id, name, created_at)
VALUES ('00000000-0000-0000-0000-000000000000', 'platform', strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'));

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TEXT NOT NULL
);

CREATE TABLE users_teams (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    team_id    TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at TEXT NOT NULL,
    PRIMARY KEY (user_id, team_id)
);
CREATE INDEX users_teams_team ON users_teams (team_id);

CREATE TABLE team_api_keys (
    id           TEXT PRIMARY KEY,
    team_id      TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE, -- hex SHA-256 of the whole key
    created_by   TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT
);
CREATE INDEX team_api_keys_team ON team_api_keys (team_id, created_at);

CREATE TABLE templates (
    id                TEXT PRIMARY KEY,
    team_id           TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('base', 'snapshot')),
    vcpus             INTEGER NOT NULL,
    memory_mb         INTEGER NOT NULL,
    disk_size_mb      INTEGER NOT NULL DEFAULT 20480,
    host              TEXT NOT NULL DEFAULT '',
    source_sandbox_id TEXT NOT NULL DEFAULT '',
    created_at        TEXT NOT NULL,
    UNIQUE (team_id, name)
);
CREATE INDEX templates_name ON templates (name);

-- template_id has no foreign key: stopped sandboxes keep naming a template
-- that may since have been deleted (the service refuses to delete one that
-- live sandboxes use).
CREATE TABLE sandboxes (
    id             TEXT PRIMARY KEY,
    team_id        TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    template_id    TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('creating', 'running', 'pausing', 'paused', 'resuming', 'stopping', 'stopped', 'error')),
    host           TEXT NOT NULL DEFAULT '',
    vcpus          INTEGER NOT NULL,
    memory_mb      INTEGER NOT NULL,
    disk_size_mb   INTEGER NOT NULL DEFAULT 20480,
    metadata       TEXT NOT NULL DEFAULT '{}', -- JSON object of strings
    env            BLOB,                       -- sealed JSON object
    access_token   BLOB,                       -- sealed
    timeout_s      INTEGER NOT NULL DEFAULT 0,
    end_at         TEXT,
    auto_pause     BOOLEAN NOT NULL DEFAULT FALSE,
    auto_resume    BOOLEAN NOT NULL DEFAULT FALSE,
    allow_internet BOOLEAN NOT NULL DEFAULT TRUE,
    error          TEXT NOT NULL DEFAULT '',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX sandboxes_team_created ON sandboxes (team_id, created_at, id);
CREATE INDEX sandboxes_host ON sandboxes (host);
CREATE INDEX sandboxes_status_end ON sandboxes (status, end_at);
CREATE INDEX sandboxes_template ON sandboxes (template_id);

CREATE TABLE hosts (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    address        TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('ready', 'unreachable', 'draining')),
    vcpus          INTEGER NOT NULL DEFAULT 0,
    memory_mb      INTEGER NOT NULL DEFAULT 0,
    disk_mb        INTEGER NOT NULL DEFAULT 0,
    used_vcpus     INTEGER NOT NULL DEFAULT 0,
    used_memory_mb INTEGER NOT NULL DEFAULT 0,
    used_disk_mb   INTEGER NOT NULL DEFAULT 0,
    sandbox_count  INTEGER NOT NULL DEFAULT 0,
    last_heartbeat TEXT,
    created_at     TEXT NOT NULL
);

-- Single-use host registration tokens; only their SHA-256 is stored.
CREATE TABLE host_tokens (
    token_hash TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL,
    used_at    TEXT,
    created_at TEXT NOT NULL
);

-- +goose Down
DROP TABLE host_tokens;
DROP TABLE hosts;
DROP TABLE sandboxes;
DROP TABLE templates;
DROP TABLE team_api_keys;
DROP TABLE users_teams;
DROP TABLE users;
DROP TABLE teams;
