package cli

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
)

// Team members: /v1/teams/{team_id}/members (session token only).

func membersPath(teamID string) string { return "/v1/teams/" + url.PathEscape(teamID) + "/members" }

// ListTeamMembers lists a team's members (any member may).
func (c *Client) ListTeamMembers(ctx context.Context, teamID string) ([]apiwire.TeamMember, error) {
	var out []apiwire.TeamMember
	return out, c.do(ctx, http.MethodGet, membersPath(teamID), authUser, nil, &out)
}

// AddTeamMember adds the existing user with this email (role "" is member).
func (c *Client) AddTeamMember(ctx context.Context, teamID, email, role string) (apiwire.TeamMember, error) {
	var out apiwire.TeamMember
	return out, c.do(ctx, http.MethodPost, membersPath(teamID), authUser, apiwire.AddTeamMember{Email: email, Role: role}, &out)
}

// SetTeamMemberRole changes a member's role.
func (c *Client) SetTeamMemberRole(ctx context.Context, teamID, userID, role string) (apiwire.TeamMember, error) {
	var out apiwire.TeamMember
	return out, c.do(ctx, http.MethodPatch, membersPath(teamID)+"/"+url.PathEscape(userID), authUser, apiwire.SetRole{Role: role}, &out)
}

// RemoveTeamMember removes a member (or, for oneself, leaves the team).
func (c *Client) RemoveTeamMember(ctx context.Context, teamID, userID string) error {
	return c.do(ctx, http.MethodDelete, membersPath(teamID)+"/"+url.PathEscape(userID), authUser, nil, nil)
}

// DefaultTeam is the team the server acts for when a session names none:
// the first team the user owns, else their first.
func DefaultTeam(me apiwire.Me) (apiwire.Team, bool) {
	for _, t := range me.Teams {
		if t.Role == "owner" {
			return t, true
		}
	}
	if len(me.Teams) > 0 {
		return me.Teams[0], true
	}
	return apiwire.Team{}, false
}

// FindTeam finds one of me's teams by ID or (case-insensitive) name.
func FindTeam(me apiwire.Me, idOrName string) (apiwire.Team, bool) {
	for _, t := range me.Teams {
		if t.ID == idOrName {
			return t, true
		}
	}
	for _, t := range me.Teams {
		if strings.EqualFold(t.Name, idOrName) {
			return t, true
		}
	}
	return apiwire.Team{}, false
}
