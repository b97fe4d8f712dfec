package service_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// The status gate lets through exactly the moves of the table it is given
// and leaves the row alone otherwise.
func TestSetStatusGate(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		for _, tc := range []struct {
			name     string
			table    sandbox.Table
			from, to sandbox.State
			ok       bool
		}{
			{"use case pauses", sandbox.ControlPlane(), sandbox.StateRunning, sandbox.StatePausing, true},
			{"use case may not stop a running sandbox", sandbox.ControlPlane(), sandbox.StateRunning, sandbox.StateStopped, false},
			{"reconciler stops a lost running sandbox", sandbox.Reconciler(), sandbox.StateRunning, sandbox.StateStopped, true},
			{"reconciler leaves paused alone", sandbox.Reconciler(), sandbox.StatePaused, sandbox.StateStopped, false},
			{"nobody leaves stopped", sandbox.ControlPlane(), sandbox.StateStopped, sandbox.StateRunning, false},
		} {
			sb, err := db.CreateSandbox(ctx, store.Sandbox{TeamID: store.PlatformTeamID, TemplateID: "base", Status: tc.from, VCPUs: 1, MemoryMB: 128})
			if err != nil {
				t.Fatal(err)
			}
			got, err := service.SetStatus(ctx, db, tc.table, sb.ID, []sandbox.State{tc.from}, tc.to, "")
			var te *sandbox.ErrTransition
			switch {
			case tc.ok && (err != nil || got.Status != tc.to):
				t.Errorf("%s: %v, status %s", tc.name, err, got.Status)
			case !tc.ok && !errors.As(err, &te):
				t.Errorf("%s: %v, want *sandbox.ErrTransition", tc.name, err)
			}
			if cur, err := db.GetSandboxByID(ctx, sb.ID); err != nil || (!tc.ok && cur.Status != tc.from) {
				t.Errorf("%s: row now %s (%v)", tc.name, cur.Status, err)
			}
		}
	})
}
