package store

import (
	"context"
	"time"
)

// Team API keys. Only the SHA-256 of a key is stored.

const apiKeyCols = `id, team_id, name, prefix, key_hash, created_by, created_at, last_used_at`

func scanAPIKey(r interface{ Scan(...any) error }) (APIKey, error) {
	var (
		k         APIKey
		createdBy *string
		at, used  timeCol
	)
	err := r.Scan(&k.ID, &k.TeamID, &k.Name, &k.Prefix, &k.Hash, &createdBy, &at, &used)
	if createdBy != nil {
		k.CreatedBy = *createdBy
	}
	k.CreatedAt, k.LastUsedAt = at.t, used.ptr()
	return k, err
}

// CreateAPIKey stores a key. Empty ID and CreatedAt are filled in; a hash
// that already exists is ErrConflict.
func (db *DB) CreateAPIKey(ctx context.Context, k APIKey) (APIKey, error) {
	if k.ID == "" {
		k.ID = newUUID()
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = now()
	}
	k.CreatedAt = normTime(k.CreatedAt)
	var lastUsed any
	if k.LastUsedAt != nil {
		t := normTime(*k.LastUsedAt)
		k.LastUsedAt, lastUsed = &t, db.ts(t)
	}
	var createdBy any
	if k.CreatedBy != "" {
		createdBy = k.CreatedBy
	}
	_, err := db.sql.ExecContext(ctx, db.q(`INSERT INTO team_api_keys (`+apiKeyCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		k.ID, k.TeamID, k.Name, k.Prefix, k.Hash, createdBy, db.ts(k.CreatedAt), lastUsed)
	if err != nil {
		return APIKey{}, wrap("create api key", err)
	}
	return k, nil
}

// ListAPIKeys returns the team's keys, oldest first.
func (db *DB) ListAPIKeys(ctx context.Context, teamID string) ([]APIKey, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(`SELECT `+apiKeyCols+` FROM team_api_keys WHERE team_id = ? ORDER BY created_at, id`), teamID)
	if err != nil {
		return nil, wrap("list api keys", err)
	}
	out, err := collect(rows, scanAPIKey)
	return out, wrap("list api keys", err)
}

// DeleteAPIKey deletes a key of teamID; another team's key is ErrNotFound.
func (db *DB) DeleteAPIKey(ctx context.Context, teamID, id string) error {
	res, err := db.sql.ExecContext(ctx, db.q(`DELETE FROM team_api_keys WHERE id = ? AND team_id = ?`), id, teamID)
	if err != nil {
		return wrap("delete api key", err)
	}
	return wrap("delete api key", affected(res))
}

// GetAPIKeyByHash finds the key whose SHA-256 (hex) is hash.
func (db *DB) GetAPIKeyByHash(ctx context.Context, hash string) (APIKey, error) {
	k, err := scanAPIKey(db.sql.QueryRowContext(ctx, db.q(`SELECT `+apiKeyCols+` FROM team_api_keys WHERE key_hash = ?`), hash))
	return k, wrap("get api key", err)
}

// TouchAPIKey records a use of the key. last_used_at only moves forward,
// so concurrent requests finishing out of order cannot move it back.
// Unknown ID: ErrNotFound.
func (db *DB) TouchAPIKey(ctx context.Context, id string, at time.Time) error {
	ts := db.ts(at)
	res, err := db.sql.ExecContext(ctx, db.q(`UPDATE team_api_keys SET last_used_at = ?
WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`), ts, id, ts)
	if err != nil {
		return wrap("touch api key", err)
	}
	if affected(res) == nil {
		return nil
	}
	// Nothing changed: either a later use is already recorded or the key
	// is gone.
	var one int
	err = db.sql.QueryRowContext(ctx, db.q(`SELECT 1 FROM team_api_keys WHERE id = ?`), id).Scan(&one)
	return wrap("touch api key", err)
}
