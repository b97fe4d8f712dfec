package service

import (
	"context"
	"fmt"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// StatusStore is the compare-and-set behind the status gate.
type StatusStore interface {
	UpdateSandboxStatus(ctx context.Context, id string, from []sandbox.State, to sandbox.State, errMsg string) (store.Sandbox, error)
}

// SetStatus is the control plane's one gate for a sandbox's status: every
// from → to must be an edge of table (sandbox.ControlPlane for the use
// cases, sandbox.Reconciler for the reconciler) before the store's
// compare-and-set runs. A move outside the table is a bug in the caller
// and returns *sandbox.ErrTransition without touching the row.
func SetStatus(ctx context.Context, st StatusStore, table sandbox.Table, id string, from []sandbox.State, to sandbox.State, errMsg string) (store.Sandbox, error) {
	for _, f := range from {
		if !table.Allows(f, to) {
			return store.Sandbox{}, fmt.Errorf("status gate: %w", &sandbox.ErrTransition{ID: id, From: f, To: to})
		}
	}
	return st.UpdateSandboxStatus(ctx, id, from, to, errMsg)
}
