package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/hearth-sandbox/hearth/internal/store"
)

// Team membership management.
//
// Who may do what, decided here and nowhere else:
//   - Any member may list the team's members.
//   - Owners and admins add members, change roles and remove members.
//   - Only owners grant the owner role or touch an owner's membership (an
//     admin cannot promote themselves to owner or remove the owner).
//   - Any member may leave (remove themselves).
//   - The team's last owner can be neither demoted nor removed.
//
// A caller who is not a member of the team learns nothing about it: every
// operation answers "team not found", exactly as for a team that does not
// exist. Members lacking a permission get PermissionDenied: they already
// know the team exists.

// MembersStore is the persistence of team memberships; *store.DB
// implements it.
type MembersStore interface {
	ListTeamMembers(ctx context.Context, teamID string) ([]store.TeamMember, error)
	// AddTeamMember: unknown user or team → ErrNotFound; already a member →
	// ErrConflict.
	AddTeamMember(ctx context.Context, teamID, userID string, role store.Role) (store.TeamMember, error)
	// SetTeamMemberRole and RemoveTeamMember: not a member → ErrNotFound;
	// the only owner losing the role → ErrLastOwner (checked atomically).
	SetTeamMemberRole(ctx context.Context, teamID, userID string, role store.Role) (store.TeamMember, error)
	RemoveTeamMember(ctx context.Context, teamID, userID string) error
}

var _ MembersStore = (*store.DB)(nil)

// errLastOwner is what a client sees when a change would leave the team
// without an owner.
var errLastOwner = Conflict("the team's last owner cannot be removed or demoted: make another member an owner first")

// parseRole validates a role from a request; empty is def (empty def: the
// field is required).
func parseRole(raw string, def store.Role) (store.Role, error) {
	switch r := store.Role(raw); r {
	case store.RoleOwner, store.RoleAdmin, store.RoleMember:
		return r, nil
	case "":
		if def != "" {
			return def, nil
		}
	}
	return "", InvalidArgument("role", "must be owner, admin or member")
}

// callerRole is the caller's role in teamID; not a member (or not a
// person): NotFound("team").
func (s *Service) callerRole(ctx context.Context, p Principal, teamID string) (store.Role, error) {
	if p.UserID == "" || teamID == "" {
		return "", NotFound("team")
	}
	m, err := s.store.GetMembership(ctx, teamID, p.UserID)
	if err != nil {
		return "", fromStore(err, "team", "")
	}
	return m.Role, nil
}

func canManage(r store.Role) bool { return r == store.RoleOwner || r == store.RoleAdmin }

var errNotManager = PermissionDenied("only the team's owners and admins can manage its members")

// ListTeamMembers lists teamID's members for one of them.
func (s *Service) ListTeamMembers(ctx context.Context, p Principal, teamID string) ([]store.TeamMember, error) {
	if _, err := s.callerRole(ctx, p, teamID); err != nil {
		return nil, err
	}
	ms, err := s.store.ListTeamMembers(ctx, teamID)
	if err != nil {
		return nil, fmt.Errorf("list team members: %w", err)
	}
	return ms, nil
}

// AddTeamMember adds the existing user with this email to teamID with role
// (empty: member). No invitation is sent: the user sees the team in
// GET /v1/me at their next request.
func (s *Service) AddTeamMember(ctx context.Context, p Principal, teamID, email, role string) (store.TeamMember, error) {
	mine, err := s.callerRole(ctx, p, teamID)
	if err != nil {
		return store.TeamMember{}, err
	}
	r, err := parseRole(role, store.RoleMember)
	if err != nil {
		return store.TeamMember{}, err
	}
	e, err := normEmail(email)
	if err != nil {
		return store.TeamMember{}, err
	}
	switch {
	case !canManage(mine):
		return store.TeamMember{}, errNotManager
	case r == store.RoleOwner && mine != store.RoleOwner:
		return store.TeamMember{}, PermissionDenied("only the team's owners can make someone an owner")
	}
	u, err := s.store.GetUserByEmail(ctx, e)
	if err != nil {
		return store.TeamMember{}, fromStore(err, "user", "")
	}
	m, err := s.store.AddTeamMember(ctx, teamID, u.ID, r)
	if err != nil {
		return store.TeamMember{}, fromStore(err, "user", "this user is already a member of the team")
	}
	s.log.InfoContext(ctx, "team member added", "team_id", teamID, "user_id", u.ID, "role", r, "by", p.UserID)
	return m, nil
}

// target checks that the caller may change userID's membership of teamID
// (see the rules at the top) and returns the target's current role.
func (s *Service) target(ctx context.Context, p Principal, teamID, userID string) (store.Role, error) {
	mine, err := s.callerRole(ctx, p, teamID)
	if err != nil {
		return "", err
	}
	if !canManage(mine) && userID != p.UserID {
		return "", errNotManager
	}
	m, err := s.store.GetMembership(ctx, teamID, userID)
	if err != nil {
		return "", fromStore(err, "member", "")
	}
	if m.Role == store.RoleOwner && mine != store.RoleOwner {
		return "", PermissionDenied("only the team's owners can change an owner's membership")
	}
	return m.Role, nil
}

// SetTeamMemberRole changes userID's role in teamID.
func (s *Service) SetTeamMemberRole(ctx context.Context, p Principal, teamID, userID, role string) (store.TeamMember, error) {
	r, err := parseRole(role, "")
	if err != nil {
		return store.TeamMember{}, err
	}
	mine, err := s.callerRole(ctx, p, teamID)
	if err != nil {
		return store.TeamMember{}, err
	}
	if !canManage(mine) {
		// Not even for oneself: a member cannot promote themselves.
		return store.TeamMember{}, errNotManager
	}
	if r == store.RoleOwner && mine != store.RoleOwner {
		return store.TeamMember{}, PermissionDenied("only the team's owners can make someone an owner")
	}
	if _, err := s.target(ctx, p, teamID, userID); err != nil {
		return store.TeamMember{}, err
	}
	m, err := s.store.SetTeamMemberRole(ctx, teamID, userID, r)
	if errors.Is(err, store.ErrLastOwner) {
		return store.TeamMember{}, errLastOwner
	}
	if err != nil {
		return store.TeamMember{}, fromStore(err, "member", "")
	}
	s.log.InfoContext(ctx, "team member role changed", "team_id", teamID, "user_id", userID, "role", r, "by", p.UserID)
	return m, nil
}

// RemoveTeamMember removes userID from teamID (a member may remove
// themselves: leaving). The team's sandboxes, templates and API keys stay
// with the team.
func (s *Service) RemoveTeamMember(ctx context.Context, p Principal, teamID, userID string) error {
	if _, err := s.target(ctx, p, teamID, userID); err != nil {
		return err
	}
	err := s.store.RemoveTeamMember(ctx, teamID, userID)
	if errors.Is(err, store.ErrLastOwner) {
		return errLastOwner
	}
	if err != nil {
		return fromStore(err, "member", "")
	}
	s.log.InfoContext(ctx, "team member removed", "team_id", teamID, "user_id", userID, "by", p.UserID)
	return nil
}
