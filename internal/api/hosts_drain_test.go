package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/fleet"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

func TestAdminHostDrainAndRemove(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		fl, err := fleet.NewControlPlane(ctx, fleet.Options{DataDir: t.TempDir(), Store: db, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, db, envOpts{hosts: fl})
		user := e.signup("drain-user@example.com")
		admin := e.signup("drain-admin@example.com")
		if err := e.svc.PromoteAdmin(ctx, admin.email); err != nil {
			t.Fatal(err)
		}
		if _, err := db.UpsertHost(ctx, store.Host{ID: "h-1", Name: "one", Address: "10.0.0.1:7070", VCPUs: 4, MemoryMB: 8192,
			LastHeartbeat: time.Now()}); err != nil {
			t.Fatal(err)
		}
		sb, err := db.CreateSandbox(ctx, store.Sandbox{TeamID: user.teamID, TemplateID: e.baseTpl.ID, Host: "h-1", Status: sbx.StateRunning, VCPUs: 1, MemoryMB: 256})
		if err != nil {
			t.Fatal(err)
		}

		for _, c := range []struct{ method, path string }{
			{"POST", "/v1/admin/hosts/h-1/drain"}, {"POST", "/v1/admin/hosts/h-1/ready"}, {"DELETE", "/v1/admin/hosts/h-1"},
		} {
			e.want(e.do(c.method, c.path, nil, bearer(user.token)), http.StatusForbidden, c.method+" "+c.path+" as non-admin")
			e.want(e.do(c.method, c.path, nil, apiKey(admin.key)), http.StatusUnauthorized, c.method+" "+c.path+" with an api key")
			e.want(e.do(c.method, strings.Replace(c.path, "h-1", "nope", 1), nil, bearer(admin.token)), http.StatusNotFound, c.method+" unknown host")
		}

		r := e.do("POST", "/v1/admin/hosts/h-1/drain", nil, bearer(admin.token))
		e.want(r, http.StatusOK, "drain")
		var h apiwire.Host
		r.json(t, &h)
		if h.ID != "h-1" || h.Status != "draining" || h.Sandboxes["running"] != 1 {
			t.Fatalf("drained host %+v", h)
		}
		// Its sandbox keeps running and answering.
		e.want(e.do("GET", "/v1/sandboxes/"+sb.ID, nil, apiKey(user.key)), http.StatusOK, "sandbox on a draining host")

		r = e.do("DELETE", "/v1/admin/hosts/h-1", nil, bearer(admin.token))
		e.want(r, http.StatusConflict, "remove a host with a running sandbox")
		var eb apiwire.Error
		r.json(t, &eb)
		if !strings.Contains(eb.Message, "1 running") {
			t.Errorf("conflict message %q", eb.Message)
		}

		r = e.do("POST", "/v1/admin/hosts/h-1/ready", nil, bearer(admin.token))
		e.want(r, http.StatusOK, "undrain")
		r.json(t, &h)
		if h.Status != "ready" {
			t.Fatalf("undrained host %+v", h)
		}

		if _, err := db.UpdateSandboxStatus(ctx, sb.ID, []sbx.State{sbx.StateRunning}, sbx.StateStopped, ""); err != nil {
			t.Fatal(err)
		}
		e.want(e.do("DELETE", "/v1/admin/hosts/h-1", nil, bearer(admin.token)), http.StatusNoContent, "remove")
		e.want(e.do("DELETE", "/v1/admin/hosts/h-1", nil, bearer(admin.token)), http.StatusNotFound, "remove twice")
		r = e.do("GET", "/v1/admin/hosts", nil, bearer(admin.token))
		var hosts []apiwire.Host
		r.json(t, &hosts)
		if len(hosts) != 0 {
			t.Fatalf("hosts after removal %+v", hosts)
		}
	})
}

func TestAdminHostDrainWithoutFleet(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		admin := e.signup("nofleet-drain@example.com")
		if err := e.svc.PromoteAdmin(context.Background(), admin.email); err != nil {
			t.Fatal(err)
		}
		e.want(e.do("POST", "/v1/admin/hosts/h-1/drain", nil, bearer(admin.token)), http.StatusServiceUnavailable, "drain")
		e.want(e.do("POST", "/v1/admin/hosts/h-1/ready", nil, bearer(admin.token)), http.StatusServiceUnavailable, "ready")
		e.want(e.do("DELETE", "/v1/admin/hosts/h-1", nil, bearer(admin.token)), http.StatusServiceUnavailable, "remove")
	})
}
