package store

import (
	"context"
	"fmt"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
)

// Template builds, their logs and tags.

const buildCols = `id, template_id, team_id, status, spec, error, host, kind, vcpus, memory_mb, disk_size_mb, created_at, finished_at, reclaimed_at`

func scanBuild(r interface{ Scan(...any) error }) (Build, error) {
	var (
		b        Build
		kind     string
		at, done timeCol
		gone     timeCol
	)
	err := r.Scan(&b.ID, &b.TemplateID, &b.TeamID, &b.Status, &b.Spec, &b.Error, &b.Host, &kind, &b.VCPUs, &b.MemoryMB, &b.DiskSizeMB, &at, &done, &gone)
	b.Kind, b.CreatedAt, b.FinishedAt, b.ReclaimedAt = sandbox.TemplateKind(kind), at.t, done.t, gone.t
	return b, err
}

// CreateBuild stores a new build (ID and CreatedAt filled in when empty).
// A template with a build already waiting or running: ErrConflict.
func (db *DB) CreateBuild(ctx context.Context, b Build) (Build, error) {
	if b.ID == "" {
		b.ID = NewShortID()
	}
	if b.CreatedAt.IsZero() {
		b.CreatedAt = now()
	}
	if b.Status == "" {
		b.Status = BuildStatusWaiting
	}
	b.CreatedAt = normTime(b.CreatedAt)
	_, err := db.sql.ExecContext(ctx, db.q(`INSERT INTO template_builds (`+buildCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		b.ID, b.TemplateID, b.TeamID, b.Status, b.Spec, b.Error, b.Host, string(b.Kind), b.VCPUs, b.MemoryMB, b.DiskSizeMB,
		db.ts(b.CreatedAt), db.tsOrNull(b.FinishedAt), db.tsOrNull(b.ReclaimedAt))
	if err != nil {
		return Build{}, wrap("create build", err)
	}
	return b, nil
}

// MarkBuildReclaimed records that a build's files were removed from every
// host, and forgets the hosts that held copies of them.
func (db *DB) MarkBuildReclaimed(ctx context.Context, id string) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return wrap("mark build reclaimed", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, db.q(`UPDATE template_builds SET reclaimed_at = ? WHERE id = ?`), db.ts(now()), id); err != nil {
		return wrap("mark build reclaimed", err)
	}
	if _, err := tx.ExecContext(ctx, db.q(`DELETE FROM template_copies WHERE host_template_id = ?`), id); err != nil {
		return wrap("mark build reclaimed", err)
	}
	return wrap("mark build reclaimed", tx.Commit())
}

// GetBuild returns a build by ID (no team scoping: callers check TeamID).
func (db *DB) GetBuild(ctx context.Context, id string) (Build, error) {
	b, err := scanBuild(db.sql.QueryRowContext(ctx, db.q(`SELECT `+buildCols+` FROM template_builds WHERE id = ?`), id))
	return b, wrap("get build", err)
}

// ListBuilds returns a template's builds, newest first.
func (db *DB) ListBuilds(ctx context.Context, templateID string) ([]Build, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(`SELECT `+buildCols+` FROM template_builds WHERE template_id = ? ORDER BY created_at DESC, id`), templateID)
	if err != nil {
		return nil, wrap("list builds", err)
	}
	out, err := collect(rows, scanBuild)
	return out, wrap("list builds", err)
}

// ListBuildsByStatus returns every build in one of statuses (start-up
// recovery of builds a stopped server left behind).
func (db *DB) ListBuildsByStatus(ctx context.Context, statuses ...string) ([]Build, error) {
	ph, args := strArgs(statuses)
	rows, err := db.sql.QueryContext(ctx, db.q(`SELECT `+buildCols+` FROM template_builds WHERE status IN (`+ph+`) ORDER BY created_at`), args...)
	if err != nil {
		return nil, wrap("list builds", err)
	}
	out, err := collect(rows, scanBuild)
	return out, wrap("list builds", err)
}

func strArgs(vals []string) (string, []any) {
	args := make([]any, len(vals))
	for i, v := range vals {
		args[i] = v
	}
	return inList(len(vals)), args
}

// UpdateBuildStatus moves a build to status when it is in one of from
// (compare-and-set; otherwise ErrStaleState). A final status records the
// finish time; errMsg replaces the error.
func (db *DB) UpdateBuildStatus(ctx context.Context, id string, from []string, to, host, errMsg string) (Build, error) {
	ph, args := strArgs(from)
	var finished any
	if to == BuildStatusReady || to == BuildStatusError || to == BuildStatusCancelled {
		finished = db.ts(now())
	}
	res, err := db.sql.ExecContext(ctx, db.q(`UPDATE template_builds SET status = ?, error = ?, host = CASE WHEN ? = '' THEN host ELSE ? END, finished_at = ?
WHERE id = ? AND status IN (`+ph+`)`), append([]any{to, errMsg, host, host, finished, id}, args...)...)
	if err != nil {
		return Build{}, wrap("update build", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return Build{}, wrap("update build", err)
	} else if n == 0 {
		if _, err := db.GetBuild(ctx, id); err != nil {
			return Build{}, err
		}
		return Build{}, fmt.Errorf("store: update build %s to %s: %w", id, to, ErrStaleState)
	}
	return db.GetBuild(ctx, id)
}

// FinishBuild marks a running build ready and makes it the template's
// current version, in one transaction.
func (db *DB) FinishBuild(ctx context.Context, b Build, config string) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return wrap("finish build", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, db.q(`UPDATE template_builds SET status = ?, kind = ?, host = ?, disk_size_mb = ?, finished_at = ? WHERE id = ? AND status = ?`),
		BuildStatusReady, string(b.Kind), b.Host, b.DiskSizeMB, db.ts(now()), b.ID, BuildStatusBuilding)
	if err != nil {
		return wrap("finish build", err)
	}
	if err := affected(res); err != nil {
		return fmt.Errorf("store: finish build %s: %w", b.ID, ErrStaleState)
	}
	res, err = tx.ExecContext(ctx, db.q(`UPDATE templates SET kind = ?, vcpus = ?, memory_mb = ?, disk_size_mb = ?, host = ?, artifact_id = ?, config = ?, build_status = ? WHERE id = ?`),
		string(b.Kind), b.VCPUs, b.MemoryMB, b.DiskSizeMB, b.Host, b.ID, config, BuildStatusReady, b.TemplateID)
	if err != nil {
		return wrap("finish build", err)
	}
	if err := affected(res); err != nil {
		return wrap("finish build", err)
	}
	return wrap("finish build", tx.Commit())
}

// SetTemplateBuildStatus sets a template's build status (e.g. error after
// its first build failed).
func (db *DB) SetTemplateBuildStatus(ctx context.Context, templateID, status string) error {
	res, err := db.sql.ExecContext(ctx, db.q(`UPDATE templates SET build_status = ? WHERE id = ?`), status, templateID)
	if err != nil {
		return wrap("set template build status", err)
	}
	return wrap("set template build status", affected(res))
}

// AppendBuildLogs stores log lines after the build's last one and returns
// the sequence number of the last stored.
func (db *DB) AppendBuildLogs(ctx context.Context, buildID string, lines []BuildLog) (int, error) {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return 0, wrap("append build logs", err)
	}
	defer tx.Rollback()
	var last int
	if err := tx.QueryRowContext(ctx, db.q(`SELECT COALESCE(MAX(seq), 0) FROM template_build_logs WHERE build_id = ?`), buildID).Scan(&last); err != nil {
		return 0, wrap("append build logs", err)
	}
	for _, l := range lines {
		last++
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO template_build_logs (build_id, seq, ts, level, step, message) VALUES (?, ?, ?, ?, ?, ?)`),
			buildID, last, db.ts(l.Time), l.Level, l.Step, l.Message); err != nil {
			return 0, wrap("append build logs", err)
		}
	}
	return last, wrap("append build logs", tx.Commit())
}

// ListBuildLogs returns up to limit lines with seq > after, in order.
func (db *DB) ListBuildLogs(ctx context.Context, buildID string, after, limit int) ([]BuildLog, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(`SELECT seq, ts, level, step, message FROM template_build_logs
WHERE build_id = ? AND seq > ? ORDER BY seq LIMIT ?`), buildID, after, limit)
	if err != nil {
		return nil, wrap("list build logs", err)
	}
	out, err := collect(rows, func(r interface{ Scan(...any) error }) (BuildLog, error) {
		var (
			l  BuildLog
			at timeCol
		)
		err := r.Scan(&l.Seq, &at, &l.Level, &l.Step, &l.Message)
		l.Time = at.t
		return l, err
	})
	return out, wrap("list build logs", err)
}

// SetTemplateTags points tags of a template at a build (replacing where
// they pointed before).
func (db *DB) SetTemplateTags(ctx context.Context, templateID, buildID string, tags []string) error {
	for _, tag := range tags {
		if _, err := db.sql.ExecContext(ctx, db.q(`INSERT INTO template_tags (template_id, tag, build_id) VALUES (?, ?, ?)
ON CONFLICT (template_id, tag) DO UPDATE SET build_id = excluded.build_id`), templateID, tag, buildID); err != nil {
			return wrap("set template tags", err)
		}
	}
	return nil
}

// DeleteTemplateTags removes tags of a template (missing ones are ignored).
func (db *DB) DeleteTemplateTags(ctx context.Context, templateID string, tags []string) error {
	for _, tag := range tags {
		if _, err := db.sql.ExecContext(ctx, db.q(`DELETE FROM template_tags WHERE template_id = ? AND tag = ?`), templateID, tag); err != nil {
			return wrap("delete template tags", err)
		}
	}
	return nil
}

// TemplateTag is a tag and the build it names.
type TemplateTag struct {
	Tag     string
	BuildID string
}

// ListTemplateTags returns a template's tags by name.
func (db *DB) ListTemplateTags(ctx context.Context, templateID string) ([]TemplateTag, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(`SELECT tag, build_id FROM template_tags WHERE template_id = ? ORDER BY tag`), templateID)
	if err != nil {
		return nil, wrap("list template tags", err)
	}
	out, err := collect(rows, func(r interface{ Scan(...any) error }) (TemplateTag, error) {
		var t TemplateTag
		return t, r.Scan(&t.Tag, &t.BuildID)
	})
	return out, wrap("list template tags", err)
}
