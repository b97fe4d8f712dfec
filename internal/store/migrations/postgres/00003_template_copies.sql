-- +goose Up
-- Copies of a template's files on hosts other than templates.host (fleet
-- mode: a sandbox placed on a host that lacked them). Keep sqlite/ and
-- postgres/ in step.
CREATE TABLE template_copies (
    host_template_id TEXT NOT NULL,
    host_id          TEXT NOT NULL,
    template_id      TEXT NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    created_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (host_template_id, host_id)
);
CREATE INDEX template_copies_template ON template_copies (template_id);

-- +goose Down
DROP TABLE template_copies;
