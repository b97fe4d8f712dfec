package e2bapi_test

import (
	"net/http"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// The log routes' own answers; the lines themselves come from a real agent
// (tests/e2b: logs).
func TestLogsErrors(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		c := e.create(e.key, sdkCreate(nil))
		for _, tc := range []struct {
			name, path, key string
			want            int
		}{
			// The fake host has no console log reader.
			{"host without logs", "/sandboxes/" + c.SandboxID + "/logs", e.key, http.StatusNotImplemented},
			{"other team", "/sandboxes/" + c.SandboxID + "/logs", e.keyB, http.StatusNotFound},
			{"other team v2", "/v2/sandboxes/" + c.SandboxID + "/logs", e.keyB, http.StatusNotFound},
			{"limit too big", "/v2/sandboxes/" + c.SandboxID + "/logs?limit=1001", e.key, http.StatusBadRequest},
			{"bad cursor", "/v2/sandboxes/" + c.SandboxID + "/logs?cursor=-1", e.key, http.StatusBadRequest},
			{"bad direction", "/v2/sandboxes/" + c.SandboxID + "/logs?direction=up", e.key, http.StatusBadRequest},
			{"bad level", "/v2/sandboxes/" + c.SandboxID + "/logs?level=loud", e.key, http.StatusBadRequest},
			{"bad start", "/sandboxes/" + c.SandboxID + "/logs?start=x", e.key, http.StatusBadRequest},
		} {
			if r := e.do(http.MethodGet, tc.path, tc.key, nil); r.status != tc.want {
				t.Errorf("%s: %d %s, want %d", tc.name, r.status, r.body, tc.want)
			}
		}
	})
}
