package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Secret is a team's named secret. Value is write-only: it is sealed on the
// way in and never read back by these methods (nothing in hearth reads it
// yet; host-side injection would be its first reader).
type Secret struct {
	ID        string // "sec_" + short ID
	TeamID    string
	Name      string // lower case, unique in the team
	Version   int64  // 1 on creation, +1 per update
	Value     string // input only
	Metadata  map[string]string
	CreatedAt time.Time
	UpdatedAt time.Time
}

const secretCols = `id, team_id, name, version, metadata, created_at, updated_at`

func scanSecret(r interface{ Scan(...any) error }) (Secret, error) {
	var (
		s        Secret
		meta     string
		cat, uat timeCol
	)
	if err := r.Scan(&s.ID, &s.TeamID, &s.Name, &s.Version, &meta, &cat, &uat); err != nil {
		return Secret{}, err
	}
	s.CreatedAt, s.UpdatedAt = cat.t, uat.t
	if err := json.Unmarshal([]byte(meta), &s.Metadata); err != nil {
		return Secret{}, fmt.Errorf("secret %s metadata: %w", s.ID, err)
	}
	if s.Metadata == nil {
		s.Metadata = map[string]string{}
	}
	return s, nil
}

// CreateSecret stores a new secret at version 1 with its value sealed. A
// name the team already uses: ErrConflict.
func (db *DB) CreateSecret(ctx context.Context, s Secret) (Secret, error) {
	if s.ID == "" {
		s.ID = "sec_" + NewShortID()
	}
	if s.Metadata == nil {
		s.Metadata = map[string]string{}
	}
	meta, err := json.Marshal(s.Metadata)
	if err != nil {
		return Secret{}, err
	}
	sealed, err := db.seal([]byte(s.Value))
	if err != nil {
		return Secret{}, fmt.Errorf("seal secret: %w", err)
	}
	at := now()
	out, err := scanSecret(db.sql.QueryRowContext(ctx, db.q(`INSERT INTO secrets (id, team_id, name, version, value, metadata, created_at, updated_at)
VALUES (?, ?, ?, 1, ?, ?, ?, ?) RETURNING `+secretCols), s.ID, s.TeamID, s.Name, sealed, string(meta), db.ts(at), db.ts(at)))
	return out, wrap("create secret", err)
}

// GetSecret finds a team's secret by ID or name.
func (db *DB) GetSecret(ctx context.Context, teamID, idOrName string) (Secret, error) {
	s, err := scanSecret(db.sql.QueryRowContext(ctx, db.q(`SELECT `+secretCols+` FROM secrets
WHERE team_id = ? AND (id = ? OR name = ?) ORDER BY CASE WHEN id = ? THEN 0 ELSE 1 END LIMIT 1`),
		teamID, idOrName, idOrName, idOrName))
	return s, wrap("get secret", err)
}

// ListSecrets returns up to limit of the team's secrets by name, after the
// name afterName ("" from the start); limit 0: all.
func (db *DB) ListSecrets(ctx context.Context, teamID, afterName string, limit int) ([]Secret, error) {
	query := `SELECT ` + secretCols + ` FROM secrets WHERE team_id = ? AND name > ? ORDER BY name`
	args := []any{teamID, afterName}
	if limit > 0 {
		query += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := db.sql.QueryContext(ctx, db.q(query), args...)
	if err != nil {
		return nil, wrap("list secrets", err)
	}
	out, err := collect(rows, scanSecret)
	return out, wrap("list secrets", err)
}

// UpdateSecret stores value as the secret's next version (sealed) and,
// when metadata is not nil, replaces its metadata. Unknown: ErrNotFound.
func (db *DB) UpdateSecret(ctx context.Context, teamID, id, value string, metadata map[string]string) (Secret, error) {
	sealed, err := db.seal([]byte(value))
	if err != nil {
		return Secret{}, fmt.Errorf("seal secret: %w", err)
	}
	set, args := `version = version + 1, value = ?, updated_at = ?`, []any{sealed, db.ts(now())}
	if metadata != nil {
		meta, err := json.Marshal(metadata)
		if err != nil {
			return Secret{}, err
		}
		set += `, metadata = ?`
		args = append(args, string(meta))
	}
	args = append(args, teamID, id)
	s, err := scanSecret(db.sql.QueryRowContext(ctx, db.q(`UPDATE secrets SET `+set+` WHERE team_id = ? AND id = ? RETURNING `+secretCols), args...))
	return s, wrap("update secret", err)
}

// DeleteSecret removes a team's secret by ID. Unknown: ErrNotFound.
func (db *DB) DeleteSecret(ctx context.Context, teamID, id string) error {
	res, err := db.sql.ExecContext(ctx, db.q(`DELETE FROM secrets WHERE team_id = ? AND id = ?`), teamID, id)
	if err != nil {
		return wrap("delete secret", err)
	}
	return wrap("delete secret", affected(res))
}

// SecretValue returns the unsealed value of a team's secret by name: only
// for filling egress rules at sandbox create, which hand it to the
// sandbox's host and never to a client. Unknown: ErrNotFound.
func (db *DB) SecretValue(ctx context.Context, teamID, name string) (string, error) {
	var sealed []byte
	err := db.sql.QueryRowContext(ctx, db.q(`SELECT value FROM secrets WHERE team_id = ? AND name = ?`), teamID, name).Scan(&sealed)
	if err != nil {
		return "", wrap("get secret value", err)
	}
	v, err := db.unseal(sealed)
	if err != nil {
		return "", fmt.Errorf("unseal secret: %w", err)
	}
	return string(v), nil
}
