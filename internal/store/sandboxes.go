package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
)

// Sandboxes. Env and AccessToken are sealed at rest; Metadata stays plain
// JSON so ListSandboxes can filter on it in SQL.

const sandboxCols = `id, team_id, template_id, status, host, vcpus, memory_mb, disk_size_mb, metadata, env, access_token,
timeout_s, end_at, auto_pause, auto_resume, allow_internet, egress, error, created_at, updated_at`

func (db *DB) scanSandbox(r interface{ Scan(...any) error }) (Sandbox, error) {
	var (
		s                     Sandbox
		status, meta, egr     string
		env, token            []byte
		endAt, created, updAt timeCol
	)
	err := r.Scan(&s.ID, &s.TeamID, &s.TemplateID, &status, &s.Host, &s.VCPUs, &s.MemoryMB, &s.DiskSizeMB,
		&meta, &env, &token, &s.TimeoutS, &endAt, &s.AutoPause, &s.AutoResume, &s.AllowInternet, &egr, &s.Error,
		&created, &updAt)
	if err != nil {
		return Sandbox{}, err
	}
	s.Status, s.EndAt, s.CreatedAt, s.UpdatedAt = sandbox.State(status), endAt.t, created.t, updAt.t
	if err := json.Unmarshal([]byte(meta), &s.Metadata); err != nil {
		return Sandbox{}, fmt.Errorf("sandbox %s metadata: %w", s.ID, err)
	}
	var rules egressRules
	if err := json.Unmarshal([]byte(egr), &rules); err != nil {
		return Sandbox{}, fmt.Errorf("sandbox %s egress: %w", s.ID, err)
	}
	s.AllowOut, s.DenyOut = rules.AllowOut, rules.DenyOut
	if env, err = db.unseal(env); err != nil {
		return Sandbox{}, fmt.Errorf("sandbox %s env: %w", s.ID, err)
	}
	if len(env) > 0 {
		if err := json.Unmarshal(env, &s.Env); err != nil {
			return Sandbox{}, fmt.Errorf("sandbox %s env: %w", s.ID, err)
		}
	}
	if token, err = db.unseal(token); err != nil {
		return Sandbox{}, fmt.Errorf("sandbox %s access token: %w", s.ID, err)
	}
	s.AccessToken = string(token)
	return normMaps(s), nil
}

// normMaps makes nil maps empty, so a sandbox reads back as it was written.
func normMaps(s Sandbox) Sandbox {
	if s.Metadata == nil {
		s.Metadata = map[string]string{}
	}
	if s.Env == nil {
		s.Env = map[string]string{}
	}
	return s
}

// CreateSandbox stores a new sandbox. Empty ID (a NewShortID), Status
// (creating), DiskSizeMB (sandbox.DefaultDiskSizeMB) and times are filled in.
// An existing ID is ErrConflict.
func (db *DB) CreateSandbox(ctx context.Context, s Sandbox) (Sandbox, error) {
	if s.ID == "" {
		s.ID = NewShortID()
	}
	if s.Status == "" {
		s.Status = sandbox.StateCreating
	}
	if s.DiskSizeMB == 0 {
		s.DiskSizeMB = sandbox.DefaultDiskSizeMB
	}
	if s.CreatedAt.IsZero() {
		s.CreatedAt = now()
	}
	s.CreatedAt = normTime(s.CreatedAt)
	if s.UpdatedAt.IsZero() {
		s.UpdatedAt = s.CreatedAt
	}
	s.UpdatedAt = normTime(s.UpdatedAt)
	if !s.EndAt.IsZero() {
		s.EndAt = normTime(s.EndAt)
	}
	s = normMaps(s)

	meta, err := json.Marshal(s.Metadata)
	if err != nil {
		return Sandbox{}, fmt.Errorf("store: sandbox metadata: %w", err)
	}
	egr, err := json.Marshal(egressRules{AllowOut: s.AllowOut, DenyOut: s.DenyOut})
	if err != nil {
		return Sandbox{}, fmt.Errorf("store: sandbox egress: %w", err)
	}
	envJSON, err := json.Marshal(s.Env)
	if err != nil {
		return Sandbox{}, fmt.Errorf("store: sandbox env: %w", err)
	}
	env, err := db.seal(envJSON)
	if err != nil {
		return Sandbox{}, fmt.Errorf("store: seal env: %w", err)
	}
	token, err := db.seal([]byte(s.AccessToken))
	if err != nil {
		return Sandbox{}, fmt.Errorf("store: seal access token: %w", err)
	}
	_, err = db.sql.ExecContext(ctx, db.q(`INSERT INTO sandboxes (`+sandboxCols+`)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		s.ID, s.TeamID, s.TemplateID, string(s.Status), s.Host, s.VCPUs, s.MemoryMB, s.DiskSizeMB,
		string(meta), env, token, s.TimeoutS, db.tsOrNull(s.EndAt), s.AutoPause, s.AutoResume, s.AllowInternet, string(egr), s.Error,
		db.ts(s.CreatedAt), db.ts(s.UpdatedAt))
	if err != nil {
		return Sandbox{}, wrap("create sandbox", err)
	}
	return s, nil
}

// GetSandbox returns the team's sandbox; another team's is ErrNotFound.
func (db *DB) GetSandbox(ctx context.Context, teamID, id string) (Sandbox, error) {
	s, err := db.scanSandbox(db.sql.QueryRowContext(ctx, db.q(`SELECT `+sandboxCols+` FROM sandboxes WHERE id = ? AND team_id = ?`), id, teamID))
	return s, wrap("get sandbox", err)
}

// GetSandboxByID is for internal callers (proxy, reconciler, timers).
func (db *DB) GetSandboxByID(ctx context.Context, id string) (Sandbox, error) {
	s, err := db.scanSandbox(db.sql.QueryRowContext(ctx, db.q(`SELECT `+sandboxCols+` FROM sandboxes WHERE id = ?`), id))
	return s, wrap("get sandbox", err)
}

// SandboxCursor returns a paging cursor for SandboxFilter.After that points
// just past s. Unlike a bare sandbox ID, it stays valid after s is deleted.
func SandboxCursor(s Sandbox) string {
	return cursorPrefix + strconv.FormatInt(normTime(s.CreatedAt).UnixMicro(), 10) + "." + s.ID
}

const cursorPrefix = "c1."

func parseCursor(c string) (time.Time, string, bool) {
	rest, ok := strings.CutPrefix(c, cursorPrefix)
	if !ok {
		return time.Time{}, "", false
	}
	micros, id, ok := strings.Cut(rest, ".")
	if !ok {
		return time.Time{}, "", false
	}
	us, err := strconv.ParseInt(micros, 10, 64)
	if err != nil {
		return time.Time{}, "", false
	}
	return time.UnixMicro(us).UTC(), id, true
}

// ListSandboxes returns the team's sandboxes ordered by (created_at, id),
// filtered in SQL so Limit and After page correctly. After is either a
// SandboxCursor or the ID of a sandbox of this team (if that sandbox no
// longer exists the page is empty: prefer cursors).
func (db *DB) ListSandboxes(ctx context.Context, teamID string, f SandboxFilter) ([]Sandbox, error) {
	var (
		b    strings.Builder
		args = []any{teamID}
	)
	b.WriteString(`SELECT ` + sandboxCols + ` FROM sandboxes WHERE team_id = ?`)
	if len(f.Statuses) > 0 {
		b.WriteString(` AND status IN (` + inList(len(f.Statuses)) + `)`)
		for _, s := range f.Statuses {
			args = append(args, string(s))
		}
	}
	if len(f.Metadata) > 0 {
		if db.driver == DriverPostgres {
			// jsonb containment: every pair of the filter is in metadata.
			want, err := json.Marshal(f.Metadata)
			if err != nil {
				return nil, fmt.Errorf("store: metadata filter: %w", err)
			}
			b.WriteString(` AND metadata @> CAST(? AS jsonb)`)
			args = append(args, string(want))
		} else {
			// json_each compares keys literally (no JSON-path parsing of
			// keys that contain dots or quotes).
			for k, v := range f.Metadata {
				b.WriteString(` AND EXISTS (SELECT 1 FROM json_each(sandboxes.metadata) AS m WHERE m.key = ? AND m.type = 'text' AND m.value = ?)`)
				args = append(args, k, v)
			}
		}
	}
	if f.After != "" {
		if at, id, ok := parseCursor(f.After); ok {
			b.WriteString(` AND (created_at, id) > (?, ?)`)
			args = append(args, db.ts(at), id)
		} else {
			b.WriteString(` AND (created_at, id) > (SELECT c.created_at, c.id FROM sandboxes AS c WHERE c.id = ? AND c.team_id = ?)`)
			args = append(args, f.After, teamID)
		}
	}
	b.WriteString(` ORDER BY created_at, id`)
	if f.Limit > 0 {
		b.WriteString(` LIMIT ?`)
		args = append(args, f.Limit)
	}
	return db.listSandboxes(ctx, "list sandboxes", b.String(), args...)
}

// ListSandboxesByHost returns every sandbox placed on the host.
func (db *DB) ListSandboxesByHost(ctx context.Context, hostID string) ([]Sandbox, error) {
	return db.listSandboxes(ctx, "list sandboxes by host",
		`SELECT `+sandboxCols+` FROM sandboxes WHERE host = ? ORDER BY created_at, id`, hostID)
}

// ListExpiredSandboxes returns running sandboxes whose EndAt is at or
// before now.
func (db *DB) ListExpiredSandboxes(ctx context.Context, now time.Time) ([]Sandbox, error) {
	return db.listSandboxes(ctx, "list expired sandboxes",
		`SELECT `+sandboxCols+` FROM sandboxes WHERE status = ? AND end_at IS NOT NULL AND end_at <= ? ORDER BY end_at, id`,
		string(sandbox.StateRunning), db.ts(now))
}

func (db *DB) listSandboxes(ctx context.Context, op, query string, args ...any) ([]Sandbox, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(query), args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	out, err := collect(rows, db.scanSandbox)
	return out, wrap(op, err)
}

// UpdateSandboxStatus moves a sandbox to `to` only when its current status
// is one of `from`, in one UPDATE, so concurrent transitions have exactly
// one winner. The row's error column is set to errMsg (cleared when
// empty). Status not in from: ErrStaleState; no such sandbox: ErrNotFound.
func (db *DB) UpdateSandboxStatus(ctx context.Context, id string, from []sandbox.State, to sandbox.State, errMsg string) (Sandbox, error) {
	if len(from) == 0 {
		return Sandbox{}, errors.New("store: update sandbox status: no from statuses")
	}
	args := []any{string(to), errMsg, db.ts(now()), id}
	for _, s := range from {
		args = append(args, string(s))
	}
	s, err := db.scanSandbox(db.sql.QueryRowContext(ctx, db.q(`UPDATE sandboxes SET status = ?, error = ?, updated_at = ?
WHERE id = ? AND status IN (`+inList(len(from))+`) RETURNING `+sandboxCols), args...))
	if err == nil {
		return s, nil
	}
	if err = mapErr(err); !errors.Is(err, ErrNotFound) {
		return Sandbox{}, wrap("update sandbox status", err)
	}
	// Nothing matched: tell a lost race from a missing row.
	var cur string
	err = db.sql.QueryRowContext(ctx, db.q(`SELECT status FROM sandboxes WHERE id = ?`), id).Scan(&cur)
	if err != nil {
		return Sandbox{}, wrap("update sandbox status", err)
	}
	return Sandbox{}, fmt.Errorf("store: sandbox %s is %s, not %v: %w", id, cur, from, ErrStaleState)
}

// SetSandboxHost records where the sandbox was placed.
func (db *DB) SetSandboxHost(ctx context.Context, id, hostID string) error {
	return db.updateSandbox(ctx, "set sandbox host", `host = ?`, id, hostID)
}

// SetSandboxEndAt sets the timeout and when it fires.
func (db *DB) SetSandboxEndAt(ctx context.Context, id string, endAt time.Time, timeoutS int) error {
	return db.updateSandbox(ctx, "set sandbox end", `end_at = ?, timeout_s = ?`, id, db.tsOrNull(endAt), timeoutS)
}

// egressRules is the JSON of the egress column.
type egressRules struct {
	AllowOut []string `json:"allowOut,omitempty"`
	DenyOut  []string `json:"denyOut,omitempty"`
}

// SetSandboxNetwork replaces a sandbox's egress policy.
func (db *DB) SetSandboxNetwork(ctx context.Context, id string, allowInternet bool, allowOut, denyOut []string) error {
	egr, err := json.Marshal(egressRules{AllowOut: allowOut, DenyOut: denyOut})
	if err != nil {
		return fmt.Errorf("store: sandbox egress: %w", err)
	}
	return db.updateSandbox(ctx, "set sandbox network", `allow_internet = ?, egress = ?`, id, allowInternet, string(egr))
}

func (db *DB) updateSandbox(ctx context.Context, op, set, id string, args ...any) error {
	args = append(args, db.ts(now()), id)
	res, err := db.sql.ExecContext(ctx, db.q(`UPDATE sandboxes SET `+set+`, updated_at = ? WHERE id = ?`), args...)
	if err != nil {
		return wrap(op, err)
	}
	return wrap(op, affected(res))
}

// DeleteSandbox removes the row (after the VM is gone).
func (db *DB) DeleteSandbox(ctx context.Context, id string) error {
	res, err := db.sql.ExecContext(ctx, db.q(`DELETE FROM sandboxes WHERE id = ?`), id)
	if err != nil {
		return wrap("delete sandbox", err)
	}
	return wrap("delete sandbox", affected(res))
}

// CountSandboxesByStatus counts every team's sandboxes by status (for
// metrics and the admin view).
func (db *DB) CountSandboxesByStatus(ctx context.Context) (map[sandbox.State]int, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT status, COUNT(*) FROM sandboxes GROUP BY status`)
	if err != nil {
		return nil, wrap("count sandboxes by status", err)
	}
	defer rows.Close()
	out := map[sandbox.State]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, wrap("count sandboxes by status", err)
		}
		out[sandbox.State(st)] = n
	}
	return out, wrap("count sandboxes by status", rows.Err())
}
