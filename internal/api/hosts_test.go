package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/fleet"
	"github.com/hearth-sandbox/hearth/internal/hostreg"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

var _ HostAdmin = (*fleet.ControlPlaneSide)(nil)

func TestAdminHosts(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		fl, err := fleet.NewControlPlane(ctx, fleet.Options{DataDir: t.TempDir(), Store: db, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, db, envOpts{hosts: fl})
		user := e.signup("hosts-user@example.com")
		admin := e.signup("hosts-admin@example.com")
		if err := e.svc.PromoteAdmin(ctx, "hosts-admin@example.com"); err != nil {
			t.Fatal(err)
		}

		for _, path := range []string{"/v1/admin/hosts"} {
			e.want(e.do("POST", path, nil, bearer(user.token)), http.StatusForbidden, "token as non-admin")
			e.want(e.do("GET", path, nil, bearer(user.token)), http.StatusForbidden, "hosts as non-admin")
			e.want(e.do("POST", path, nil, apiKey(admin.key)), http.StatusUnauthorized, "token with api key")
			e.want(e.do("GET", path, nil, nil), http.StatusUnauthorized, "hosts anonymous")
		}
		e.want(e.do("POST", "/v1/admin/hosts", map[string]any{"ttl_s": -1}, bearer(admin.token)), http.StatusBadRequest, "negative ttl")
		e.want(e.do("POST", "/v1/admin/hosts", map[string]any{"ttl_s": 30 * 24 * 3600}, bearer(admin.token)), http.StatusBadRequest, "ttl too long")

		r := e.do("POST", "/v1/admin/hosts", map[string]any{"ttl_s": 600}, bearer(admin.token))
		e.want(r, http.StatusCreated, "create token")
		var tok apiwire.HostToken
		r.json(t, &tok)
		if !strings.HasPrefix(tok.Token, hostreg.TokenPrefix) || tok.CAFingerprint != fl.CAFingerprint() ||
			tok.ExpiresAt.Before(time.Now().Add(9*time.Minute)) || tok.ExpiresAt.After(time.Now().Add(11*time.Minute)) {
			t.Fatalf("token answer %+v", tok)
		}
		// The token is a real one: it is consumable exactly once.
		if err := db.ConsumeHostToken(ctx, hostreg.HashToken(tok.Token)); err != nil {
			t.Fatalf("consume the issued token: %v", err)
		}
		e.want(e.do("POST", "/v1/admin/hosts", nil, bearer(admin.token)), http.StatusCreated, "token with default ttl")

		// Two hosts, one with sandboxes in two states.
		hb := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
		for _, h := range []store.Host{
			{ID: "h-b", Name: "b", Address: "10.0.0.2:7070", VCPUs: 4, MemoryMB: 8192, DiskMB: 100000, UsedVCPUs: 2, UsedMemoryMB: 512, SandboxCount: 2, LastHeartbeat: hb},
			{ID: "h-a", Name: "a", Address: "10.0.0.1:7070", Status: store.HostUnreachable},
		} {
			if _, err := db.UpsertHost(ctx, h); err != nil {
				t.Fatal(err)
			}
		}
		tpl := e.baseTpl
		for i, st := range []sbx.State{sbx.StateRunning, sbx.StateRunning, sbx.StatePaused} {
			sb, err := db.CreateSandbox(ctx, store.Sandbox{TeamID: user.teamID, TemplateID: tpl.ID, Host: "h-b", Status: sbx.StateCreating, VCPUs: 1, MemoryMB: 256})
			if err != nil {
				t.Fatalf("sandbox %d: %v", i, err)
			}
			if _, err := db.UpdateSandboxStatus(ctx, sb.ID, []sbx.State{sbx.StateCreating}, st, ""); err != nil {
				t.Fatal(err)
			}
		}
		r = e.do("GET", "/v1/admin/hosts", nil, bearer(admin.token))
		e.want(r, http.StatusOK, "list hosts")
		var hosts []apiwire.Host
		r.json(t, &hosts)
		if len(hosts) != 2 || hosts[0].Name != "a" || hosts[1].Name != "b" {
			t.Fatalf("hosts %+v", hosts)
		}
		a, b := hosts[0], hosts[1]
		if a.Status != "unreachable" || a.LastHeartbeat != nil || len(a.Sandboxes) != 0 {
			t.Errorf("host a: %+v", a)
		}
		if b.Status != "ready" || b.Capacity != (apiwire.HostResources{VCPUs: 4, MemoryMB: 8192, DiskMB: 100000}) || b.Usage.VCPUs != 2 || b.Usage.MemoryMB != 512 ||
			b.SandboxCount != 2 || b.LastHeartbeat == nil || !b.LastHeartbeat.Equal(hb) ||
			b.Sandboxes["running"] != 2 || b.Sandboxes["paused"] != 1 || len(b.Sandboxes) != 2 {
			t.Errorf("host b: %+v", b)
		}
	})
}

func TestAdminHostsWithoutFleet(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		admin := e.signup("nofleet-admin@example.com")
		if err := e.svc.PromoteAdmin(context.Background(), "nofleet-admin@example.com"); err != nil {
			t.Fatal(err)
		}
		e.want(e.do("GET", "/v1/admin/hosts", nil, bearer(admin.token)), http.StatusServiceUnavailable, "no fleet")
		e.want(e.do("POST", "/v1/admin/hosts", nil, bearer(admin.token)), http.StatusServiceUnavailable, "no fleet")
	})
}
