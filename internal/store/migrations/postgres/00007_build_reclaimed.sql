-- A superseded build's files were removed from every host (issue 13: disk
-- reclamation); the build stays for its log. Keep sqlite/ and postgres/ in step.

-- +goose Up
ALTER TABLE template_builds ADD COLUMN reclaimed_at TIMESTAMPTZ;

-- +goose Down
ALTER TABLE template_builds DROP COLUMN reclaimed_at;
