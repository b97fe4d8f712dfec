package api

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

func TestTeamMembers(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		alice := e.signup("alice@example.com")
		bob := e.signup("bob@example.com")
		carol := e.signup("carol@example.com")
		mallory := e.signup("mallory@example.com")
		team := "/v1/teams/" + alice.teamID + "/members"
		member := func(a account) string { return team + "/" + a.userID }

		list := func(a account) []apiwire.TeamMember {
			t.Helper()
			r := e.do("GET", team, nil, bearer(a.token))
			e.want(r, http.StatusOK, "list members as "+a.email)
			var ms []apiwire.TeamMember
			r.json(t, &ms)
			return ms
		}
		roles := func(ms []apiwire.TeamMember) string {
			var parts []string
			for _, m := range ms {
				parts = append(parts, strings.TrimSuffix(m.Email, "@example.com")+":"+m.Role)
			}
			return strings.Join(parts, ",")
		}
		if ms := list(alice); roles(ms) != "alice:owner" || ms[0].UserID != alice.userID || ms[0].JoinedAt.IsZero() {
			t.Fatalf("after signup: %+v", ms)
		}

		// Credentials: people only.
		e.want(e.do("GET", team, nil, nil), http.StatusUnauthorized, "anonymous")
		e.want(e.do("GET", team, nil, apiKey(alice.key)), http.StatusUnauthorized, "api key")

		// A non-member learns nothing: every route answers like a missing team.
		missing := e.do("GET", "/v1/teams/00000000-0000-0000-0000-000000000042/members", nil, bearer(mallory.token))
		e.want(missing, http.StatusNotFound, "unknown team")
		for _, c := range []struct {
			method, path string
			body         any
		}{
			{"GET", team, nil},
			{"POST", team, map[string]string{"email": "mallory@example.com"}},
			{"POST", team, map[string]string{"email": "bob@example.com", "role": "owner"}},
			{"PATCH", member(alice), map[string]string{"role": "member"}},
			{"DELETE", member(alice), nil},
			{"DELETE", member(mallory), nil},
		} {
			r := e.do(c.method, c.path, c.body, bearer(mallory.token))
			e.want(r, http.StatusNotFound, "non-member "+c.method+" "+c.path)
			if !bytes.Equal(r.body, missing.body) {
				t.Errorf("non-member %s %s: body %s differs from an unknown team's %s", c.method, c.path, r.body, missing.body)
			}
		}

		// Adding: by email, existing users only.
		r := e.do("POST", team, map[string]string{"email": "Bob@Example.com"}, bearer(alice.token))
		e.want(r, http.StatusCreated, "add bob")
		var added apiwire.TeamMember
		r.json(t, &added)
		if added.UserID != bob.userID || added.Email != "bob@example.com" || added.Role != "member" {
			t.Fatalf("added %+v", added)
		}
		e.want(e.do("POST", team, map[string]string{"email": "bob@example.com", "role": "admin"}, bearer(alice.token)), http.StatusConflict, "add twice")
		r = e.do("POST", team, map[string]string{"email": "nobody@example.com"}, bearer(alice.token))
		e.want(r, http.StatusNotFound, "unknown email")
		var eb apiwire.Error
		r.json(t, &eb)
		if eb.Message != "user not found" {
			t.Errorf("unknown email message %q", eb.Message)
		}
		e.want(e.do("POST", team, map[string]string{"email": "not an email"}, bearer(alice.token)), http.StatusBadRequest, "bad email")
		e.want(e.do("POST", team, map[string]string{"email": "carol@example.com", "role": "boss"}, bearer(alice.token)), http.StatusBadRequest, "bad role")
		e.want(e.do("POST", team, map[string]string{"email": "carol@example.com", "rank": "x"}, bearer(alice.token)), http.StatusBadRequest, "unknown field")

		// Bob sees the team in /v1/me and acts for it with X-Team-ID; his
		// own team stays his default.
		r = e.do("GET", "/v1/me", nil, bearer(bob.token))
		var me struct {
			Teams []apiwire.Team `json:"teams"`
		}
		r.json(t, &me)
		if len(me.Teams) != 2 || me.Teams[0].ID != bob.teamID || me.Teams[1].ID != alice.teamID || me.Teams[1].Role != "member" {
			t.Fatalf("bob's teams %+v", me.Teams)
		}
		sb := e.createSandbox(alice, nil)
		e.want(e.do("GET", "/v1/sandboxes/"+sb.ID, nil, append(bearer(bob.token), "X-Team-ID", alice.teamID)), http.StatusOK, "bob reads alice's team's sandbox")
		e.want(e.do("GET", "/v1/sandboxes/"+sb.ID, nil, bearer(bob.token)), http.StatusNotFound, "bob's default team is his own")

		// A plain member reads but does not manage.
		if got := roles(list(bob)); got != "alice:owner,bob:member" {
			t.Fatalf("members %s", got)
		}
		e.want(e.do("POST", team, map[string]string{"email": "carol@example.com"}, bearer(bob.token)), http.StatusForbidden, "member adds")
		e.want(e.do("PATCH", member(bob), map[string]string{"role": "admin"}, bearer(bob.token)), http.StatusForbidden, "member promotes self")
		e.want(e.do("DELETE", member(alice), nil, bearer(bob.token)), http.StatusForbidden, "member removes owner")

		// Keys: a member lists them but neither creates nor deletes them.
		asBob := append(bearer(bob.token), "X-Team-ID", alice.teamID)
		e.want(e.do("GET", "/v1/api-keys", nil, asBob), http.StatusOK, "member lists keys")
		e.want(e.do("POST", "/v1/api-keys", map[string]string{"name": "bob"}, asBob), http.StatusForbidden, "member creates a key")
		e.want(e.do("DELETE", "/v1/api-keys/"+alice.keyID, nil, asBob), http.StatusForbidden, "member deletes a key")
		e.want(e.do("GET", "/v1/sandboxes/"+sb.ID, nil, apiKey(alice.key)), http.StatusOK, "alice's key still there")

		// An admin manages members and admins, not owners.
		e.want(e.do("PATCH", member(bob), map[string]string{"role": "admin"}, bearer(alice.token)), http.StatusOK, "promote bob")
		// ... and the team's keys.
		r = e.do("POST", "/v1/api-keys", map[string]string{"name": "bob"}, asBob)
		e.want(r, http.StatusCreated, "admin creates a key")
		var bk apiwire.APIKey
		r.json(t, &bk)
		bobKey := bk.Key
		r = e.do("POST", "/v1/api-keys", map[string]string{"name": "tmp"}, asBob)
		e.want(r, http.StatusCreated, "admin creates another key")
		r.json(t, &bk)
		e.want(e.do("DELETE", "/v1/api-keys/"+bk.ID, nil, asBob), http.StatusNoContent, "admin deletes a key")
		e.want(e.do("POST", team, map[string]string{"email": "carol@example.com", "role": "owner"}, bearer(bob.token)), http.StatusForbidden, "admin adds owner")
		e.want(e.do("POST", team, map[string]string{"email": "carol@example.com", "role": "member"}, bearer(bob.token)), http.StatusCreated, "admin adds member")
		r = e.do("PATCH", member(carol), map[string]string{"role": "admin"}, bearer(bob.token))
		e.want(r, http.StatusOK, "admin promotes to admin")
		var changed apiwire.TeamMember
		r.json(t, &changed)
		if changed.UserID != carol.userID || changed.Role != "admin" {
			t.Fatalf("changed %+v", changed)
		}
		e.want(e.do("PATCH", member(carol), map[string]string{"role": "owner"}, bearer(bob.token)), http.StatusForbidden, "admin grants owner")
		e.want(e.do("PATCH", member(alice), map[string]string{"role": "member"}, bearer(bob.token)), http.StatusForbidden, "admin demotes owner")
		e.want(e.do("DELETE", member(alice), nil, bearer(bob.token)), http.StatusForbidden, "admin removes owner")
		e.want(e.do("PATCH", member(carol), map[string]string{}, bearer(alice.token)), http.StatusBadRequest, "no role")
		e.want(e.do("PATCH", member(mallory), map[string]string{"role": "member"}, bearer(alice.token)), http.StatusNotFound, "patch non-member")
		e.want(e.do("DELETE", member(mallory), nil, bearer(alice.token)), http.StatusNotFound, "remove non-member")

		// The last owner stays.
		for _, r := range []resp{
			e.do("PATCH", member(alice), map[string]string{"role": "admin"}, bearer(alice.token)),
			e.do("DELETE", member(alice), nil, bearer(alice.token)),
		} {
			e.want(r, http.StatusConflict, "last owner")
			r.json(t, &eb)
			if !strings.Contains(eb.Message, "last owner") {
				t.Errorf("last owner message %q", eb.Message)
			}
		}
		// With a second owner, the first may step down and then leave.
		e.want(e.do("PATCH", member(bob), map[string]string{"role": "owner"}, bearer(alice.token)), http.StatusOK, "bob owner")
		e.want(e.do("PATCH", member(alice), map[string]string{"role": "member"}, bearer(alice.token)), http.StatusOK, "alice steps down")
		e.want(e.do("DELETE", member(alice), nil, bearer(alice.token)), http.StatusNoContent, "alice leaves")
		e.want(e.do("GET", team, nil, bearer(alice.token)), http.StatusNotFound, "alice after leaving")
		e.want(e.do("GET", "/v1/sandboxes", nil, append(bearer(alice.token), "X-Team-ID", alice.teamID)), http.StatusNotFound, "alice's session for the team she left")
		// Team resources stay with the team, but not the keys she made: a
		// member who leaves (or is removed) takes them along. Bob's key
		// for the team keeps working.
		e.want(e.do("GET", "/v1/sandboxes/"+sb.ID, nil, apiKey(alice.key)), http.StatusUnauthorized, "team key after its creator left")
		e.want(e.do("GET", "/v1/sandboxes/"+sb.ID, nil, apiKey(bobKey)), http.StatusOK, "a remaining owner's key")

		e.want(e.do("DELETE", member(carol), nil, bearer(bob.token)), http.StatusNoContent, "remove carol")
		e.want(e.do("GET", "/v1/sandboxes", nil, append(bearer(carol.token), "X-Team-ID", alice.teamID)), http.StatusNotFound, "carol removed")
		if got := roles(list(bob)); got != "bob:owner" {
			t.Fatalf("members at the end %s", got)
		}
	})
}
