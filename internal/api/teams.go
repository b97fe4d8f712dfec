package api

import (
	"net/http"
	"time"

	"github.com/hearth-sandbox/hearth/internal/store"
)

// Team members: /v1/teams/{team_id}/members. People only (Bearer); the team
// is the one in the path, whatever X-Team-ID says. Who may do what is the
// service's decision (internal/service/teams.go).

type memberJSON struct {
	UserID   string    `json:"user_id"`
	Email    string    `json:"email"`
	Role     string    `json:"role"`
	JoinedAt time.Time `json:"joined_at"`
}

func memberView(m store.TeamMember) memberJSON {
	return memberJSON{UserID: m.UserID, Email: m.Email, Role: string(m.Role), JoinedAt: m.JoinedAt.UTC()}
}

func (s *server) listTeamMembers(w http.ResponseWriter, r *http.Request) error {
	ms, err := s.svc.ListTeamMembers(r.Context(), principalFrom(r.Context()), r.PathValue("team_id"))
	if err != nil {
		return err
	}
	out := make([]memberJSON, len(ms))
	for i, m := range ms {
		out[i] = memberView(m)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) addTeamMember(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email string `json:"email"`
		Role  string `json:"role"`
	}
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
	var in struct {
		Role string `json:"role"`
	}
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
