package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Volume is a team's persistent directory on one host, mounted into
// sandboxes on that host (docs/volumes.md).
type Volume struct {
	ID        string
	TeamID    string
	Name      string // unique in the team
	Host      string // the host whose disk holds it
	Token     string // the content API's bearer token (sealed at rest)
	CreatedAt time.Time
}

// SandboxVolume is one mount of a volume in a sandbox.
type SandboxVolume struct {
	VolumeID string
	Name     string // the volume's name (read only)
	Path     string // absolute path in the guest
}

// ErrVolumeInUse: the volume is mounted by a sandbox that is not stopped.
var ErrVolumeInUse = errors.New("volume is mounted by a sandbox")

const volumeCols = `id, team_id, name, host, token, created_at`

func (db *DB) scanVolume(r interface{ Scan(...any) error }) (Volume, error) {
	var (
		v     Volume
		token []byte
		at    timeCol
	)
	if err := r.Scan(&v.ID, &v.TeamID, &v.Name, &v.Host, &token, &at); err != nil {
		return Volume{}, err
	}
	plain, err := db.unseal(token)
	if err != nil {
		return Volume{}, fmt.Errorf("volume %s token: %w", v.ID, err)
	}
	v.Token, v.CreatedAt = string(plain), at.t
	return v, nil
}

// CreateVolume stores a new volume. A name the team already uses:
// ErrConflict.
func (db *DB) CreateVolume(ctx context.Context, v Volume) (Volume, error) {
	if v.ID == "" {
		v.ID = NewShortID()
	}
	token, err := db.seal([]byte(v.Token))
	if err != nil {
		return Volume{}, fmt.Errorf("store: seal volume token: %w", err)
	}
	out, err := db.scanVolume(db.sql.QueryRowContext(ctx, db.q(`INSERT INTO volumes (id, team_id, name, host, token, created_at)
VALUES (?, ?, ?, ?, ?, ?) RETURNING `+volumeCols), v.ID, v.TeamID, v.Name, v.Host, token, db.ts(now())))
	return out, wrap("create volume", err)
}

// GetVolume finds a team's volume by ID or name (an ID wins).
func (db *DB) GetVolume(ctx context.Context, teamID, idOrName string) (Volume, error) {
	v, err := db.scanVolume(db.sql.QueryRowContext(ctx, db.q(`SELECT `+volumeCols+` FROM volumes
WHERE team_id = ? AND (id = ? OR name = ?) ORDER BY CASE WHEN id = ? THEN 0 ELSE 1 END LIMIT 1`),
		teamID, idOrName, idOrName, idOrName))
	return v, wrap("get volume", err)
}

// GetVolumeByID finds any team's volume: for the content API, whose
// caller proves itself with the volume's token, not a team key.
func (db *DB) GetVolumeByID(ctx context.Context, id string) (Volume, error) {
	v, err := db.scanVolume(db.sql.QueryRowContext(ctx, db.q(`SELECT `+volumeCols+` FROM volumes WHERE id = ?`), id))
	return v, wrap("get volume", err)
}

// ListVolumes returns the team's volumes by name.
func (db *DB) ListVolumes(ctx context.Context, teamID string) ([]Volume, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(`SELECT `+volumeCols+` FROM volumes WHERE team_id = ? ORDER BY name`), teamID)
	if err != nil {
		return nil, wrap("list volumes", err)
	}
	out, err := collect(rows, db.scanVolume)
	return out, wrap("list volumes", err)
}

// DeleteVolume removes a team's volume by ID, in one transaction with the
// check that no sandbox other than stopped ones mounts it
// (ErrVolumeInUse). Unknown: ErrNotFound.
func (db *DB) DeleteVolume(ctx context.Context, teamID, id string) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(*) FROM volumes WHERE team_id = ? AND id = ?`), teamID, id).Scan(&n); err != nil || n == 0 {
			return wrap("delete volume", cmp.Or(err, ErrNotFound))
		}
		err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(*) FROM sandbox_volumes sv JOIN sandboxes s ON s.id = sv.sandbox_id
WHERE sv.volume_id = ? AND s.status <> 'stopped'`), id).Scan(&n)
		if err != nil {
			return wrap("delete volume", err)
		}
		if n > 0 {
			return fmt.Errorf("store: delete volume: %w (%d sandboxes)", ErrVolumeInUse, n)
		}
		res, err := tx.ExecContext(ctx, db.q(`DELETE FROM volumes WHERE team_id = ? AND id = ?`), teamID, id)
		if err != nil {
			return wrap("delete volume", err)
		}
		return wrap("delete volume", affected(res))
	})
}

// AddSandboxVolumes records a sandbox's mounts. A volume deleted in the
// meantime fails the foreign key.
func (db *DB) AddSandboxVolumes(ctx context.Context, sandboxID string, mounts []SandboxVolume) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		for _, m := range mounts {
			if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO sandbox_volumes (sandbox_id, volume_id, path) VALUES (?, ?, ?)`),
				sandboxID, m.VolumeID, m.Path); err != nil {
				return wrap("add sandbox volume", err)
			}
		}
		return nil
	})
}

// ListSandboxVolumes returns a sandbox's mounts by path.
func (db *DB) ListSandboxVolumes(ctx context.Context, sandboxID string) ([]SandboxVolume, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(`SELECT sv.volume_id, v.name, sv.path FROM sandbox_volumes sv
JOIN volumes v ON v.id = sv.volume_id WHERE sv.sandbox_id = ? ORDER BY sv.path`), sandboxID)
	if err != nil {
		return nil, wrap("list sandbox volumes", err)
	}
	out, err := collect(rows, func(r interface{ Scan(...any) error }) (SandboxVolume, error) {
		var m SandboxVolume
		return m, r.Scan(&m.VolumeID, &m.Name, &m.Path)
	})
	return out, wrap("list sandbox volumes", err)
}

// ListTeamSandboxVolumes returns the mounts of a team's sandboxes by
// sandbox ID (for listings).
func (db *DB) ListTeamSandboxVolumes(ctx context.Context, teamID string) (map[string][]SandboxVolume, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(`SELECT sv.sandbox_id, sv.volume_id, v.name, sv.path FROM sandbox_volumes sv
JOIN volumes v ON v.id = sv.volume_id WHERE v.team_id = ? ORDER BY sv.sandbox_id, sv.path`), teamID)
	if err != nil {
		return nil, wrap("list team sandbox volumes", err)
	}
	defer rows.Close()
	out := map[string][]SandboxVolume{}
	for rows.Next() {
		var (
			id string
			m  SandboxVolume
		)
		if err := rows.Scan(&id, &m.VolumeID, &m.Name, &m.Path); err != nil {
			return nil, wrap("list team sandbox volumes", err)
		}
		out[id] = append(out[id], m)
	}
	return out, wrap("list team sandbox volumes", rows.Err())
}
