-- A template deleted with the last sandbox made from it: the capture a fork
-- makes internally (issue 17). Sandboxes reference a template by ID only.

-- +goose Up
ALTER TABLE templates ADD COLUMN auto_delete BOOLEAN NOT NULL DEFAULT FALSE;

-- +goose Down
ALTER TABLE templates DROP COLUMN auto_delete;
