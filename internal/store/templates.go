package store

import (
	"context"
	"fmt"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
)

// Templates. Reads "by team" see the team's own templates and the platform
// team's (PlatformTeamID), which every team may use.

const templateCols = `id, team_id, name, kind, vcpus, memory_mb, disk_size_mb, host, source_sandbox_id, created_at, artifact_id, config, build_status, auto_delete`

func scanTemplate(r interface{ Scan(...any) error }) (Template, error) {
	var (
		t    Template
		kind string
		at   timeCol
	)
	err := r.Scan(&t.ID, &t.TeamID, &t.Name, &kind, &t.VCPUs, &t.MemoryMB, &t.DiskSizeMB, &t.Host, &t.SourceSandboxID, &at,
		&t.ArtifactID, &t.Config, &t.BuildStatus, &t.AutoDelete)
	t.Kind, t.CreatedAt = sandbox.TemplateKind(kind), at.t
	return t, err
}

func prepTemplate(t Template) Template {
	if t.ID == "" {
		t.ID = NewShortID()
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now()
	}
	if t.DiskSizeMB == 0 {
		t.DiskSizeMB = sandbox.DefaultDiskSizeMB
	}
	if t.BuildStatus == "" {
		t.BuildStatus = BuildStatusReady
	}
	t.CreatedAt = normTime(t.CreatedAt)
	return t
}

func (db *DB) templateArgs(t Template) []any {
	return []any{t.ID, t.TeamID, t.Name, string(t.Kind), t.VCPUs, t.MemoryMB, t.DiskSizeMB, t.Host, t.SourceSandboxID, db.ts(t.CreatedAt),
		t.ArtifactID, t.Config, t.BuildStatus, t.AutoDelete}
}

// CreateTemplate stores a template. Empty ID, CreatedAt and DiskSizeMB are
// filled in. A name already used by the team (or a used ID): ErrConflict.
func (db *DB) CreateTemplate(ctx context.Context, t Template) (Template, error) {
	t = prepTemplate(t)
	_, err := db.sql.ExecContext(ctx, db.q(`INSERT INTO templates (`+templateCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`), db.templateArgs(t)...)
	if err != nil {
		return Template{}, wrap("create template", err)
	}
	return t, nil
}

// UpsertPlatformTemplate creates or updates the platform template named
// t.Name. An existing row keeps its ID and created_at.
func (db *DB) UpsertPlatformTemplate(ctx context.Context, t Template) (Template, error) {
	t.TeamID = PlatformTeamID
	t = prepTemplate(t)
	out, err := scanTemplate(db.sql.QueryRowContext(ctx, db.q(`INSERT INTO templates (`+templateCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (team_id, name) DO UPDATE SET
  kind = excluded.kind, vcpus = excluded.vcpus, memory_mb = excluded.memory_mb,
  disk_size_mb = excluded.disk_size_mb, host = excluded.host, source_sandbox_id = excluded.source_sandbox_id,
  artifact_id = excluded.artifact_id, config = excluded.config, build_status = excluded.build_status
RETURNING `+templateCols), db.templateArgs(t)...))
	return out, wrap("upsert platform template", err)
}

// GetTemplateByTeam finds a template of the team or of the platform by ID
// or by name. The team's own template wins over a platform one; within
// one owner an ID match wins over a name match.
func (db *DB) GetTemplateByTeam(ctx context.Context, teamID, idOrName string) (Template, error) {
	t, err := scanTemplate(db.sql.QueryRowContext(ctx, db.q(`SELECT `+templateCols+` FROM templates
WHERE team_id IN (?, ?) AND (id = ? OR name = ?)
ORDER BY CASE WHEN team_id = ? THEN 0 ELSE 1 END, CASE WHEN id = ? THEN 0 ELSE 1 END
LIMIT 1`), teamID, PlatformTeamID, idOrName, idOrName, teamID, idOrName))
	return t, wrap("get template", err)
}

// GetTemplateByID is for internal callers (scheduler, agent sync): no team
// scoping.
func (db *DB) GetTemplateByID(ctx context.Context, id string) (Template, error) {
	t, err := scanTemplate(db.sql.QueryRowContext(ctx, db.q(`SELECT `+templateCols+` FROM templates WHERE id = ?`), id))
	return t, wrap("get template", err)
}

// ListTemplatesByTeam returns the team's and the platform's templates,
// by name (the team's first on a tie).
func (db *DB) ListTemplatesByTeam(ctx context.Context, teamID string) ([]Template, error) {
	return db.listTemplates(ctx, "list templates", `WHERE team_id IN (?, ?)
ORDER BY name, CASE WHEN team_id = ? THEN 0 ELSE 1 END, id`, teamID, PlatformTeamID, teamID)
}

// ListTemplatesByTeamAndKind is ListTemplatesByTeam restricted to one kind.
func (db *DB) ListTemplatesByTeamAndKind(ctx context.Context, teamID string, kind sandbox.TemplateKind) ([]Template, error) {
	return db.listTemplates(ctx, "list templates", `WHERE team_id IN (?, ?) AND kind = ?
ORDER BY name, CASE WHEN team_id = ? THEN 0 ELSE 1 END, id`, teamID, PlatformTeamID, string(kind), teamID)
}

// ListAllTemplates returns every team's templates (platform admins).
func (db *DB) ListAllTemplates(ctx context.Context) ([]Template, error) {
	return db.listTemplates(ctx, "list all templates", `ORDER BY team_id, name, id`)
}

func (db *DB) listTemplates(ctx context.Context, op, where string, args ...any) ([]Template, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(`SELECT `+templateCols+` FROM templates `+where), args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	out, err := collect(rows, scanTemplate)
	return out, wrap(op, err)
}

// DeleteTemplate deletes a template owned by teamID. Platform templates are
// deletable only with teamID == PlatformTeamID; anything else is
// ErrNotFound.
func (db *DB) DeleteTemplate(ctx context.Context, teamID, id string) error {
	res, err := db.sql.ExecContext(ctx, db.q(`DELETE FROM templates WHERE id = ? AND team_id = ?`), id, teamID)
	if err != nil {
		return wrap("delete template", err)
	}
	return wrap("delete template", affected(res))
}

// CountSandboxesUsingTemplate counts sandboxes created from the template
// whose status is one of statuses; with no statuses, every sandbox that is
// not stopped.
func (db *DB) CountSandboxesUsingTemplate(ctx context.Context, templateID string, statuses ...sandbox.State) (int, error) {
	query := `SELECT COUNT(*) FROM sandboxes WHERE template_id = ?`
	args := []any{templateID}
	if len(statuses) == 0 {
		query += ` AND status <> ?`
		args = append(args, string(sandbox.StateStopped))
	} else {
		query += fmt.Sprintf(` AND status IN (%s)`, inList(len(statuses)))
		for _, s := range statuses {
			args = append(args, string(s))
		}
	}
	var n int
	err := db.sql.QueryRowContext(ctx, db.q(query), args...).Scan(&n)
	return n, wrap("count sandboxes", err)
}

// AddTemplateCopy records that hostID holds a copy of templateID's files
// (named hostTemplateID on hosts); recording it twice is fine.
func (db *DB) AddTemplateCopy(ctx context.Context, templateID, hostTemplateID, hostID string) error {
	_, err := db.sql.ExecContext(ctx, db.q(`INSERT INTO template_copies (host_template_id, host_id, template_id, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT (host_template_id, host_id) DO NOTHING`), hostTemplateID, hostID, templateID, db.ts(now()))
	return wrap("add template copy", err)
}

// TemplateCopyHosts lists the hosts holding a copy of hostTemplateID, in
// the order they got it.
func (db *DB) TemplateCopyHosts(ctx context.Context, hostTemplateID string) ([]string, error) {
	rows, err := db.sql.QueryContext(ctx, db.q(`SELECT host_id FROM template_copies WHERE host_template_id = ? ORDER BY created_at, host_id`), hostTemplateID)
	if err != nil {
		return nil, wrap("list template copies", err)
	}
	defer rows.Close()
	var hosts []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, wrap("list template copies", err)
		}
		hosts = append(hosts, h)
	}
	return hosts, wrap("list template copies", rows.Err())
}
