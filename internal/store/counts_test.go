package store_test

import (
	"maps"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
)

func TestCountSandboxesByStatus(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		_, a := mustUser(t, db, "a@example.com")
		_, b := mustUser(t, db, "b@example.com")
		got, err := db.CountSandboxesByStatus(ctx(t))
		want(t, err, nil)
		if len(got) != 0 {
			t.Fatalf("empty store: %v", got)
		}
		for i, s := range []struct {
			team   string
			status sandbox.State
		}{{a.ID, sandbox.StateRunning}, {b.ID, sandbox.StateRunning}, {a.ID, sandbox.StatePaused}, {b.ID, sandbox.StateError}} {
			_, err := db.CreateSandbox(ctx(t), store.Sandbox{ID: "cnt" + string(rune('a'+i)), TeamID: s.team, TemplateID: "base", Status: s.status})
			want(t, err, nil)
		}
		got, err = db.CountSandboxesByStatus(ctx(t))
		want(t, err, nil)
		exp := map[sandbox.State]int{sandbox.StateRunning: 2, sandbox.StatePaused: 1, sandbox.StateError: 1}
		if !maps.Equal(got, exp) {
			t.Fatalf("counts %v, want %v (across teams)", got, exp)
		}
	})
}
