package store_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/store"
)

func TestTeamMembers(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		owner, team := mustUser(t, db, "owner@example.com")
		bob, bobTeam := mustUser(t, db, "bob@example.com")
		carol, _ := mustUser(t, db, "carol@example.com")

		ms, err := db.ListTeamMembers(ctx(t), team.ID)
		want(t, err, nil)
		if len(ms) != 1 || ms[0].UserID != owner.ID || ms[0].Email != "owner@example.com" || ms[0].Role != store.RoleOwner || ms[0].JoinedAt.IsZero() {
			t.Fatalf("members after signup = %+v", ms)
		}

		m, err := db.AddTeamMember(ctx(t), team.ID, bob.ID, store.RoleMember)
		want(t, err, nil)
		if m.UserID != bob.ID || m.Email != bob.Email || m.Role != store.RoleMember {
			t.Fatalf("added = %+v", m)
		}
		_, err = db.AddTeamMember(ctx(t), team.ID, bob.ID, store.RoleAdmin)
		want(t, err, store.ErrConflict)
		_, err = db.AddTeamMember(ctx(t), team.ID, "no-such-user", store.RoleMember)
		want(t, err, store.ErrNotFound)
		_, err = db.AddTeamMember(ctx(t), "no-such-team", carol.ID, store.RoleMember)
		want(t, err, store.ErrNotFound)

		// Bob now sees both teams; his own first (oldest membership).
		teams, err := db.ListTeamsForUser(ctx(t), bob.ID)
		want(t, err, nil)
		if len(teams) != 2 || teams[0].ID != bobTeam.ID || teams[1].ID != team.ID || teams[1].Role != store.RoleMember {
			t.Fatalf("bob's teams = %+v", teams)
		}

		ms, err = db.ListTeamMembers(ctx(t), team.ID)
		want(t, err, nil)
		if len(ms) != 2 || ms[0].UserID != owner.ID || ms[1].UserID != bob.ID {
			t.Fatalf("members = %+v", ms)
		}

		m, err = db.SetTeamMemberRole(ctx(t), team.ID, bob.ID, store.RoleAdmin)
		want(t, err, nil)
		if m.Role != store.RoleAdmin {
			t.Fatalf("role = %s", m.Role)
		}
		_, err = db.SetTeamMemberRole(ctx(t), team.ID, carol.ID, store.RoleAdmin)
		want(t, err, store.ErrNotFound)

		// The only owner can be neither demoted nor removed.
		_, err = db.SetTeamMemberRole(ctx(t), team.ID, owner.ID, store.RoleAdmin)
		want(t, err, store.ErrLastOwner)
		want(t, db.RemoveTeamMember(ctx(t), team.ID, owner.ID), store.ErrLastOwner)
		// Re-asserting owner on the only owner is fine.
		_, err = db.SetTeamMemberRole(ctx(t), team.ID, owner.ID, store.RoleOwner)
		want(t, err, nil)

		// With a second owner, the first may step down.
		_, err = db.SetTeamMemberRole(ctx(t), team.ID, bob.ID, store.RoleOwner)
		want(t, err, nil)
		_, err = db.SetTeamMemberRole(ctx(t), team.ID, owner.ID, store.RoleMember)
		want(t, err, nil)
		want(t, db.RemoveTeamMember(ctx(t), team.ID, bob.ID), store.ErrLastOwner)
		want(t, db.RemoveTeamMember(ctx(t), team.ID, owner.ID), nil)
		want(t, db.RemoveTeamMember(ctx(t), team.ID, owner.ID), store.ErrNotFound)
		_, err = db.GetMembership(ctx(t), team.ID, owner.ID)
		want(t, err, store.ErrNotFound)

		ms, err = db.ListTeamMembers(ctx(t), team.ID)
		want(t, err, nil)
		if len(ms) != 1 || ms[0].UserID != bob.ID || ms[0].Role != store.RoleOwner {
			t.Fatalf("members at the end = %+v", ms)
		}
		ms, err = db.ListTeamMembers(ctx(t), "no-such-team")
		if err != nil || len(ms) != 0 {
			t.Fatalf("unknown team: %+v, %v", ms, err)
		}
	})
}

// TestLastOwnerRace: two owners demoting (or removing) each other at the
// same moment must not both succeed; the team always keeps an owner.
func TestLastOwnerRace(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		for i := range 10 {
			a, team := mustUser(t, db, "race-a"+string(rune('0'+i))+"@example.com")
			b, _ := mustUser(t, db, "race-b"+string(rune('0'+i))+"@example.com")
			_, err := db.AddTeamMember(ctx(t), team.ID, b.ID, store.RoleOwner)
			want(t, err, nil)

			var wg sync.WaitGroup
			errs := make([]error, 2)
			for j, id := range []string{a.ID, b.ID} {
				wg.Go(func() {
					if i%2 == 0 {
						_, errs[j] = db.SetTeamMemberRole(ctx(t), team.ID, id, store.RoleMember)
					} else {
						errs[j] = db.RemoveTeamMember(ctx(t), team.ID, id)
					}
				})
			}
			wg.Wait()
			ok := 0
			for _, err := range errs {
				switch {
				case err == nil:
					ok++
				case !errors.Is(err, store.ErrLastOwner):
					t.Fatalf("round %d: unexpected error %v", i, err)
				}
			}
			if ok != 1 {
				t.Fatalf("round %d: %d of 2 succeeded (%v), want exactly 1", i, ok, errs)
			}
			ms, err := db.ListTeamMembers(ctx(t), team.ID)
			want(t, err, nil)
			owners := 0
			for _, m := range ms {
				if m.Role == store.RoleOwner {
					owners++
				}
			}
			if owners != 1 {
				t.Fatalf("round %d: %d owners left: %+v", i, owners, ms)
			}
		}
	})
}

// TestRemovedMemberLosesKeys: removing a member deletes the API keys they
// created for that team, and only those.
func TestRemovedMemberLosesKeys(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		owner, team := mustUser(t, db, "owner@example.com")
		bob, bobTeam := mustUser(t, db, "bob@example.com")
		_, err := db.AddTeamMember(ctx(t), team.ID, bob.ID, store.RoleAdmin)
		want(t, err, nil)
		key := func(teamID, by, name string) store.APIKey {
			k, err := db.CreateAPIKey(ctx(t), store.APIKey{TeamID: teamID, Name: name, Prefix: name, Hash: name + "-hash", CreatedBy: by})
			want(t, err, nil)
			return k
		}
		key(team.ID, bob.ID, "bob-in-team")
		key(team.ID, owner.ID, "owner-in-team")
		key(bobTeam.ID, bob.ID, "bob-own")

		want(t, db.RemoveTeamMember(ctx(t), team.ID, bob.ID), nil)
		names := func(teamID string) (out []string) {
			ks, err := db.ListAPIKeys(ctx(t), teamID)
			want(t, err, nil)
			for _, k := range ks {
				out = append(out, k.Name)
			}
			return out
		}
		if got := names(team.ID); len(got) != 1 || got[0] != "owner-in-team" {
			t.Fatalf("team keys after bob left: %v", got)
		}
		if got := names(bobTeam.ID); len(got) != 1 || got[0] != "bob-own" {
			t.Fatalf("bob's own team keys: %v", got)
		}
		_, err = db.GetAPIKeyByHash(ctx(t), "bob-in-team-hash")
		want(t, err, store.ErrNotFound)
	})
}
