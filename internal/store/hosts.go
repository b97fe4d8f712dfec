package store

import (
	"context"
	"time"
)

// Hosts (agents) and their single-use registration tokens.

const hostCols = `id, name, address, status, vcpus, memory_mb, disk_mb, used_vcpus, used_memory_mb, used_disk_mb,
sandbox_count, last_heartbeat, created_at`

func scanHost(r interface{ Scan(...any) error }) (Host, error) {
	var (
		h         Host
		status    string
		hb, creat timeCol
	)
	err := r.Scan(&h.ID, &h.Name, &h.Address, &status, &h.VCPUs, &h.MemoryMB, &h.DiskMB, &h.UsedVCPUs,
		&h.UsedMemoryMB, &h.UsedDiskMB, &h.SandboxCount, &hb, &creat)
	h.Status, h.LastHeartbeat, h.CreatedAt = HostStatus(status), hb.t, creat.t
	return h, err
}

// UpsertHost inserts the host or updates every field but created_at.
// Empty Status is ready; zero CreatedAt is now.
func (db *DB) UpsertHost(ctx context.Context, h Host) (Host, error) {
	if h.ID == "" {
		h.ID = newUUID()
	}
	if h.Status == "" {
		h.Status = HostReady
	}
	if h.CreatedAt.IsZero() {
		h.CreatedAt = now()
	}
	out, err := scanHost(db.sql.QueryRowContext(ctx, db.q(`INSERT INTO hosts (`+hostCols+`)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
  name = excluded.name, address = excluded.address, status = excluded.status,
  vcpus = excluded.vcpus, memory_mb = excluded.memory_mb, disk_mb = excluded.disk_mb,
  used_vcpus = excluded.used_vcpus, used_memory_mb = excluded.used_memory_mb, used_disk_mb = excluded.used_disk_mb,
  sandbox_count = excluded.sandbox_count, last_heartbeat = excluded.last_heartbeat
RETURNING `+hostCols),
		h.ID, h.Name, h.Address, string(h.Status), h.VCPUs, h.MemoryMB, h.DiskMB, h.UsedVCPUs, h.UsedMemoryMB,
		h.UsedDiskMB, h.SandboxCount, db.tsOrNull(h.LastHeartbeat), db.ts(h.CreatedAt)))
	return out, wrap("upsert host", err)
}

func (db *DB) GetHost(ctx context.Context, id string) (Host, error) {
	h, err := scanHost(db.sql.QueryRowContext(ctx, db.q(`SELECT `+hostCols+` FROM hosts WHERE id = ?`), id))
	return h, wrap("get host", err)
}

// ListHosts returns every host, oldest first.
func (db *DB) ListHosts(ctx context.Context) ([]Host, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(`SELECT `+hostCols+` FROM hosts ORDER BY created_at, id`))
	if err != nil {
		return nil, wrap("list hosts", err)
	}
	out, err := collect(rows, scanHost)
	return out, wrap("list hosts", err)
}

// DeleteHost forgets a host. Unknown ID: ErrNotFound.
func (db *DB) DeleteHost(ctx context.Context, id string) error {
	res, err := db.sql.ExecContext(ctx, db.q(`DELETE FROM hosts WHERE id = ?`), id)
	if err != nil {
		return wrap("delete host", err)
	}
	return wrap("delete host", affected(res))
}

// CreateHostToken stores a registration token by its hex SHA-256 (the
// token itself is shown once to the operator). Duplicate: ErrConflict.
func (db *DB) CreateHostToken(ctx context.Context, hash string, expiresAt time.Time) error {
	_, err := db.sql.ExecContext(ctx, db.q(`INSERT INTO host_tokens (token_hash, expires_at, created_at) VALUES (?, ?, ?)`),
		hash, db.ts(expiresAt), db.ts(now()))
	return wrap("create host token", err)
}

// ConsumeHostToken marks the token used, in one UPDATE, so it admits
// exactly one host even under concurrent registrations. Unknown, expired
// and already used tokens are all ErrNotFound (a caller learns nothing
// about which).
func (db *DB) ConsumeHostToken(ctx context.Context, hash string) error {
	t := db.ts(now())
	res, err := db.sql.ExecContext(ctx, db.q(`UPDATE host_tokens SET used_at = ?
WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?`), t, hash, t)
	if err != nil {
		return wrap("consume host token", err)
	}
	return wrap("consume host token", affected(res))
}

// MarkHostUnreachable sets a ready host unreachable when its last heartbeat
// is older than olderThan (or it never sent one), in one UPDATE: a heartbeat
// that lands between a monitor's read and its write wins, instead of being
// overwritten by a stale "unreachable". It returns the updated row; a host
// that is unknown, not ready, or heard from since: ErrNotFound.
func (db *DB) MarkHostUnreachable(ctx context.Context, id string, olderThan time.Time) (Host, error) {
	h, err := scanHost(db.sql.QueryRowContext(ctx, db.q(`UPDATE hosts SET status = ?
WHERE id = ? AND status = ? AND (last_heartbeat IS NULL OR last_heartbeat < ?)
RETURNING `+hostCols), string(HostUnreachable), id, string(HostReady), db.ts(olderThan)))
	return h, wrap("mark host unreachable", err)
}
