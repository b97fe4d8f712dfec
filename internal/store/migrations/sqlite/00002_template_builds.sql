-- +goose Up
-- Template builds (issue 13). Keep sqlite/ and postgres/ in step.

-- A built template's current version: artifact_id names its files on the
-- host ('' : the template ID itself, as for base and tiny); config is the
-- JSON of its env, user, workdir and start command; build_status is
-- 'building' until its first build succeeds.
ALTER TABLE templates ADD COLUMN artifact_id TEXT NOT NULL DEFAULT '';
ALTER TABLE templates ADD COLUMN config TEXT NOT NULL DEFAULT '';
ALTER TABLE templates ADD COLUMN build_status TEXT NOT NULL DEFAULT 'ready';

CREATE TABLE template_builds (
    id           TEXT PRIMARY KEY,
    template_id  TEXT NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    team_id      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('waiting', 'building', 'ready', 'error', 'cancelled')),
    spec         TEXT NOT NULL,
    error        TEXT NOT NULL DEFAULT '',
    host         TEXT NOT NULL DEFAULT '',
    kind         TEXT NOT NULL DEFAULT '',
    vcpus        INTEGER NOT NULL,
    memory_mb    INTEGER NOT NULL,
    disk_size_mb INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    finished_at  TEXT
);
CREATE INDEX template_builds_template ON template_builds (template_id, created_at);
-- One build of a template at a time: a second one is refused (409).
CREATE UNIQUE INDEX template_builds_active ON template_builds (template_id) WHERE status IN ('waiting', 'building');

CREATE TABLE template_build_logs (
    build_id TEXT NOT NULL REFERENCES template_builds (id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    ts       TEXT NOT NULL,
    level    TEXT NOT NULL,
    step     INTEGER NOT NULL,
    message  TEXT NOT NULL,
    PRIMARY KEY (build_id, seq)
);

-- name:tag → the build it names.
CREATE TABLE template_tags (
    template_id TEXT NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    tag         TEXT NOT NULL,
    build_id    TEXT NOT NULL REFERENCES template_builds (id) ON DELETE CASCADE,
    PRIMARY KEY (template_id, tag)
);

-- +goose Down
DROP TABLE template_tags;
DROP TABLE template_build_logs;
DROP TABLE template_builds;
ALTER TABLE templates DROP COLUMN build_status;
ALTER TABLE templates DROP COLUMN config;
ALTER TABLE templates DROP COLUMN artifact_id;
