-- Egress rules of a sandbox (issue 15): JSON {"allowOut": [...], "denyOut": [...]}
-- of canonical CIDRs; allow_internet stays the internet verdict.

-- +goose Up
ALTER TABLE sandboxes ADD COLUMN egress TEXT NOT NULL DEFAULT '{}';

-- +goose Down
ALTER TABLE sandboxes DROP COLUMN egress;
