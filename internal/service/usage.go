package service

import (
	"context"
	"fmt"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// TeamUsage is a team's sandbox usage now: hearth keeps no metric history,
// so every figure is computed from the sandbox table when asked.
type TeamUsage struct {
	At time.Time
	// Concurrent counts sandboxes that are starting, running or resuming.
	Concurrent int
	// StartedLastMinute counts sandboxes created in the minute before At.
	StartedLastMinute int
}

// usageWindow is the span StartedLastMinute counts over.
const usageWindow = time.Minute

// GetTeam returns the caller's own team; any other team is NotFound, as is
// a team that does not exist.
func (s *Service) GetTeam(ctx context.Context, p Principal, teamID string) (store.Team, error) {
	if teamID != p.TeamID {
		return store.Team{}, NotFound("team")
	}
	t, err := s.store.GetTeam(ctx, teamID)
	if err != nil {
		return store.Team{}, fromStore(err, "team", "")
	}
	return t, nil
}

// TeamUsage computes the caller's team's usage now (teamID must be the
// caller's team).
func (s *Service) TeamUsage(ctx context.Context, p Principal, teamID string) (TeamUsage, error) {
	if _, err := s.GetTeam(ctx, p, teamID); err != nil {
		return TeamUsage{}, err
	}
	u := TeamUsage{At: s.now()}
	active := []sandbox.State{sandbox.StateCreating, sandbox.StateRunning, sandbox.StateResuming}
	sbs, err := s.store.ListSandboxes(ctx, p.TeamID, store.SandboxFilter{Statuses: active})
	if err != nil {
		return TeamUsage{}, fmt.Errorf("team usage: %w", err)
	}
	u.Concurrent = len(sbs)
	all, err := s.store.ListSandboxes(ctx, p.TeamID, store.SandboxFilter{})
	if err != nil {
		return TeamUsage{}, fmt.Errorf("team usage: %w", err)
	}
	for _, sb := range all {
		if u.At.Sub(sb.CreatedAt) <= usageWindow {
			u.StartedLastMinute++
		}
	}
	return u, nil
}
