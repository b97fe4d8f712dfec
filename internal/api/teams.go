package api

import (
	"net/http"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Team members: /v1/teams/{team_id}/members. People only (Bearer); the team
// is the one in the path, whatever X-Team-ID says. Who may do what is the
// service's decision (internal/service/teams.go).

func memberView(m store.TeamMember) apiwire.TeamMember {
	return apiwire.TeamMember{UserID: m.UserID, Email: m.Email, Role: string(m.Role), JoinedAt: m.JoinedAt.UTC()}
}

func (s *server) listTeamMembers(w http.ResponseWriter, r *http.Request) error {
	ms, err := s.svc.ListTeamMembers(r.Context(), principalFrom(r.Context()), r.PathValue("team_id"))
	if err != nil {
		return err
	}
	out := make([]apiwire.TeamMember, len(ms))
	for i, m := range ms {
		out[i] = memberView(m)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) addTeamMember(w http.ResponseWriter, r *http.Request) error {
	var in apiwire.AddTeamMember
	if err := decode(r, &in); err != nil {
		return err
	}
	m, err := s.svc.AddTeamMember(r.Context(), principalFrom(r.Context()), r.PathValue("team_id"), in.Email, in.Role)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, memberView(m))
	return nil
}

func (s *server) setTeamMemberRole(w http.ResponseWriter, r *http.Request) error {
	var in apiwire.SetRole
	if err := decode(r, &in); err != nil {
		return err
	}
	m, err := s.svc.SetTeamMemberRole(r.Context(), principalFrom(r.Context()), r.PathValue("team_id"), r.PathValue("user_id"), in.Role)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, memberView(m))
	return nil
}

func (s *server) removeTeamMember(w http.ResponseWriter, r *http.Request) error {
	if err := s.svc.RemoveTeamMember(r.Context(), principalFrom(r.Context()), r.PathValue("team_id"), r.PathValue("user_id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
