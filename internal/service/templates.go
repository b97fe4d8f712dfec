package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
)

func secs(n int) time.Duration { return time.Duration(n) * time.Second }

// ListTemplates returns the team's templates and the platform's.
func (s *Service) ListTemplates(ctx context.Context, p Principal) ([]store.Template, error) {
	ts, err := s.store.ListTemplatesByTeam(ctx, p.TeamID)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	return ts, nil
}

// ListAllTemplates is every template of every team: platform admins only.
func (s *Service) ListAllTemplates(ctx context.Context, p Principal) ([]store.Template, error) {
	if !p.IsAdmin {
		return nil, PermissionDenied("platform admins only")
	}
	ts, err := s.store.ListAllTemplates(ctx)
	if err != nil {
		return nil, fmt.Errorf("list all templates: %w", err)
	}
	return ts, nil
}

// CreateSnapshot freezes a sandbox into a named snapshot template of p's
// team. The template row is written first so the name is reserved before
// the host spends time on files; a host failure removes it again.
func (s *Service) CreateSnapshot(ctx context.Context, p Principal, sandboxID, name string) (store.Template, error) {
	return s.createSnapshot(ctx, p, sandboxID, name, false)
}

// createSnapshot is CreateSnapshot; autoDelete marks the template for
// deletion with the last sandbox made from it (a fork's capture).
func (s *Service) createSnapshot(ctx context.Context, p Principal, sandboxID, name string, autoDelete bool) (store.Template, error) {
	if sandboxID == "" {
		return store.Template{}, InvalidArgument("sandbox_id", "is required")
	}
	if err := validName("name", name); err != nil {
		return store.Template{}, err
	}
	sb, err := s.GetSandbox(ctx, p, sandboxID)
	if err != nil {
		return store.Template{}, err
	}
	if sb.Status != sandbox.StateRunning && sb.Status != sandbox.StatePaused {
		return store.Template{}, Conflict("sandbox %s is %s; snapshot a running or paused sandbox", sb.ID, sb.Status)
	}
	hc, err := s.hosts.Get(ctx, sb.Host)
	if err != nil {
		return store.Template{}, err
	}
	tpl, err := s.store.CreateTemplate(ctx, store.Template{
		ID: store.NewShortID(), TeamID: p.TeamID, Name: name, Kind: sandbox.KindSnapshot,
		VCPUs: sb.VCPUs, MemoryMB: sb.MemoryMB, DiskSizeMB: sb.DiskSizeMB,
		Host: sb.Host, SourceSandboxID: sb.ID, AutoDelete: autoDelete,
	})
	if err != nil {
		return store.Template{}, fromStore(err, "template", fmt.Sprintf("a template named %q already exists", name))
	}
	info, err := hc.CreateSnapshot(ctx, sb.ID, tpl.ID)
	if err != nil {
		if derr := s.store.DeleteTemplate(context.WithoutCancel(ctx), p.TeamID, tpl.ID); derr != nil {
			s.log.ErrorContext(ctx, "drop failed snapshot template", "template_id", tpl.ID, "err", derr)
		}
		return store.Template{}, hostErrFor("snapshot the sandbox", err)
	}
	if info.VCPUs != 0 && (info.VCPUs != tpl.VCPUs || info.MemoryMB != tpl.MemoryMB) {
		// The host is the authority on what it froze; the row follows it.
		s.log.WarnContext(ctx, "snapshot shape differs from sandbox row", "template_id", tpl.ID,
			"vcpus", info.VCPUs, "memory_mb", info.MemoryMB)
	}
	s.log.InfoContext(ctx, "snapshot created", "template_id", tpl.ID, "name", name, "sandbox_id", sb.ID, "host", sb.Host)
	return tpl, nil
}

// ListSnapshots returns the team's (and platform) snapshot templates.
func (s *Service) ListSnapshots(ctx context.Context, p Principal) ([]store.Template, error) {
	ts, err := s.store.ListTemplatesByTeamAndKind(ctx, p.TeamID, sandbox.KindSnapshot)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	// Built templates frozen after their start command are snapshots too,
	// but they belong to their builds (hearth template ...).
	out := ts[:0]
	for _, t := range ts {
		if t.SourceSandboxID != "" {
			out = append(out, t)
		}
	}
	return out, nil
}

// DeleteSnapshot removes a team's snapshot template by name (or ID), unless
// sandboxes still depend on it.
func (s *Service) DeleteSnapshot(ctx context.Context, p Principal, name string) error {
	tpl, err := s.store.GetTemplateByTeam(ctx, p.TeamID, name)
	if err != nil {
		return fromStore(err, "snapshot", "")
	}
	// Platform templates are visible, not deletable; base templates are not
	// snapshots. Both look missing, like any other template not yours.
	if tpl.TeamID != p.TeamID || tpl.Kind != sandbox.KindSnapshot || tpl.SourceSandboxID == "" {
		return NotFound("snapshot")
	}
	n, err := s.store.CountSandboxesUsingTemplate(ctx, tpl.ID)
	if err != nil {
		return fmt.Errorf("count dependent sandboxes: %w", err)
	}
	if n > 0 {
		return Conflict("snapshot %s is used by %d sandbox(es); destroy them first", tpl.Name, n)
	}
	if err := s.deleteSnapshotTemplate(ctx, tpl); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "snapshot deleted", "template_id", tpl.ID, "name", tpl.Name)
	return nil
}

// deleteSnapshotTemplate removes a snapshot template's files from every
// host holding them, then its row.
func (s *Service) deleteSnapshotTemplate(ctx context.Context, tpl store.Template) error {
	clients, err := s.holderClients(ctx, tpl.Host, tpl.HostTemplateID())
	if err != nil {
		return err
	}
	for _, hc := range clients { // the first host and every copy
		if err := hc.DeleteSnapshot(ctx, tpl.ID); err != nil {
			return hostErrFor("delete the snapshot", err)
		}
	}
	if err := s.store.DeleteTemplate(ctx, tpl.TeamID, tpl.ID); err != nil {
		return fromStore(err, "snapshot", "")
	}
	return nil
}

// releaseAutoTemplate deletes template id when it is an auto-delete
// template (a fork's capture) that no sandbox uses any more and no fork is
// still spawning from. Called after a sandbox row is deleted; failures are
// logged (the next release, or DELETE /templates, retries).
func (s *Service) releaseAutoTemplate(ctx context.Context, teamID, id string) {
	if id == "" || s.forks.spawning(id) {
		return
	}
	ctx = context.WithoutCancel(ctx)
	tpl, err := s.store.GetTemplateByTeam(ctx, teamID, id)
	if err != nil || !tpl.AutoDelete || tpl.ID != id || tpl.TeamID != teamID {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.WarnContext(ctx, "release fork template", "template_id", id, "err", err)
		}
		return
	}
	n, err := s.store.CountSandboxesUsingTemplate(ctx, id)
	if err != nil || n > 0 {
		if err != nil {
			s.log.WarnContext(ctx, "release fork template", "template_id", id, "err", err)
		}
		return
	}
	if err := s.deleteSnapshotTemplate(ctx, tpl); err != nil && KindOf(err) != KindNotFound {
		s.log.WarnContext(ctx, "delete fork template", "template_id", id, "err", err)
		return
	}
	s.log.InfoContext(ctx, "fork template deleted with its last sandbox", "template_id", id, "name", tpl.Name)
}
