package fleet_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/fleet"
	"github.com/hearth-sandbox/hearth/internal/hostreg"
	"github.com/hearth-sandbox/hearth/internal/pki"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// TestDrainAndRemove drives drain, undrain and removal through the real
// registration server (heartbeats over HTTP with agent certificates) and
// the real placement pool, on both engines.
func TestDrainAndRemove(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		cp, err := fleet.NewControlPlane(ctx, fleet.Options{
			DataDir: t.TempDir(), Store: db, Logger: testLogger(t), HeartbeatInterval: time.Minute,
		})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(cp.Handler())
		defer srv.Close()

		// Two registered agents; "big" would win every placement.
		join := func(name string) (string, *hostreg.Client) {
			t.Helper()
			tok, _, err := cp.CreateToken(ctx, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			side, err := fleet.JoinAgent(ctx, fleet.AgentOptions{
				IdentityDir: dir, ControlPlaneURL: srv.URL, RegisterToken: tok, CAFingerprint: cp.CAFingerprint(),
				Name: name, Address: "127.0.0.1:1", Logger: testLogger(t),
			})
			if err != nil {
				t.Fatalf("join %s: %v", name, err)
			}
			id, err := pki.LoadIdentity(dir)
			if err != nil {
				t.Fatal(err)
			}
			return side.HostID(), hostreg.NewClient(srv.URL, nil, pki.NewKeeper(id.Cert), dir)
		}
		big, bigAgent := join("big")
		small, smallAgent := join("small")
		beat := func(c *hostreg.Client, vcpus int) string {
			t.Helper()
			res, err := c.Heartbeat(ctx, hostreg.Heartbeat{Capacity: hostreg.Capacity{VCPUs: vcpus, MemoryMB: vcpus * 4096, DiskMB: 1 << 20}})
			if err != nil {
				t.Fatalf("heartbeat: %v", err)
			}
			return res.Status
		}
		beat(bigAgent, 64)
		beat(smallAgent, 8)
		pick := func() string {
			t.Helper()
			id, _, err := cp.Pool().Pick(ctx, service.PlacementRequest{VCPUs: 1, MemoryMB: 128, DiskSizeMB: 1024})
			if err != nil {
				t.Fatalf("pick: %v", err)
			}
			return id
		}
		status := func(id string) store.HostStatus {
			t.Helper()
			h, err := db.GetHost(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return h.Status
		}
		if got := pick(); got != big {
			t.Fatalf("before draining, picked %s, want big %s", got, big)
		}

		h, err := cp.DrainHost(ctx, big)
		if err != nil || h.Status != store.HostDraining {
			t.Fatalf("drain: %+v %v", h, err)
		}
		if h, err = cp.DrainHost(ctx, big); err != nil || h.Status != store.HostDraining {
			t.Fatalf("drain again: %+v %v", h, err)
		}
		for range 5 {
			if got := pick(); got != small {
				t.Fatalf("while big drains, picked %s", got)
			}
		}
		// Its heartbeats keep it draining (and still update its usage).
		if st := beat(bigAgent, 32); st != string(store.HostDraining) {
			t.Fatalf("heartbeat answered %q", st)
		}
		if h, _ := db.GetHost(ctx, big); h.Status != store.HostDraining || h.VCPUs != 32 {
			t.Fatalf("after heartbeat: %+v", h)
		}
		// A draining host still serves its sandboxes: the pool hands out its client.
		if _, err := cp.Pool().Get(ctx, big); err != nil {
			t.Fatalf("client of a draining host: %v", err)
		}

		if h, err = cp.UndrainHost(ctx, big); err != nil || h.Status != store.HostReady {
			t.Fatalf("undrain: %+v %v", h, err)
		}
		if h, err = cp.UndrainHost(ctx, big); err != nil || h.Status != store.HostReady {
			t.Fatalf("undrain a ready host: %+v %v", h, err)
		}
		if got := pick(); got != big {
			t.Fatalf("after undrain, picked %s", got)
		}

		// Undraining a silent host makes it unreachable, not ready; an
		// unreachable host cannot be undrained, only drained.
		if _, err := db.UpsertHost(ctx, store.Host{ID: "silent", Name: "silent", Address: "127.0.0.1:2", Status: store.HostDraining,
			VCPUs: 64, MemoryMB: 1 << 20, DiskMB: 1 << 20, LastHeartbeat: time.Now().Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if h, err = cp.UndrainHost(ctx, "silent"); err != nil || h.Status != store.HostUnreachable {
			t.Fatalf("undrain a silent host: %+v %v", h, err)
		}
		if _, err := cp.UndrainHost(ctx, "silent"); service.KindOf(err) != service.KindConflict {
			t.Fatalf("undrain an unreachable host: %v", err)
		}
		if h, err = cp.DrainHost(ctx, "silent"); err != nil || h.Status != store.HostDraining {
			t.Fatalf("drain an unreachable host: %+v %v", h, err)
		}
		for _, f := range []func() error{
			func() error { _, err := cp.DrainHost(ctx, "nope"); return err },
			func() error { _, err := cp.UndrainHost(ctx, "nope"); return err },
			func() error { return cp.RemoveHost(ctx, "nope") },
		} {
			if err := f(); service.KindOf(err) != service.KindNotFound {
				t.Fatalf("unknown host: %v", err)
			}
		}

		// Removal waits for every sandbox that needs the host.
		tpl, err := db.UpsertPlatformTemplate(ctx, store.Template{Name: "base", Kind: sandbox.KindBase, VCPUs: 1, MemoryMB: 128})
		if err != nil {
			t.Fatal(err)
		}
		var sbs []store.Sandbox
		for _, st := range []sandbox.State{sandbox.StateRunning, sandbox.StatePaused, sandbox.StateStopped} {
			sb, err := db.CreateSandbox(ctx, store.Sandbox{TeamID: store.PlatformTeamID, TemplateID: tpl.ID, Host: small,
				Status: sandbox.StateCreating, VCPUs: 1, MemoryMB: 128})
			if err != nil {
				t.Fatal(err)
			}
			if sb, err = db.UpdateSandboxStatus(ctx, sb.ID, []sandbox.State{sandbox.StateCreating}, st, ""); err != nil {
				t.Fatal(err)
			}
			sbs = append(sbs, sb)
		}
		err = cp.RemoveHost(ctx, small)
		var se *service.Error
		if !errors.As(err, &se) || se.Kind != service.KindConflict || !strings.Contains(se.Message, "1 running, 1 paused") {
			t.Fatalf("remove a host with sandboxes: %v", err)
		}
		if _, err := db.UpdateSandboxStatus(ctx, sbs[0].ID, []sandbox.State{sandbox.StateRunning}, sandbox.StateStopped, ""); err != nil {
			t.Fatal(err)
		}
		if err := cp.RemoveHost(ctx, small); service.KindOf(err) != service.KindConflict {
			t.Fatalf("remove a host with a paused sandbox: %v", err)
		}
		if err := db.DeleteSandbox(ctx, sbs[1].ID); err != nil {
			t.Fatal(err)
		}
		if err := cp.RemoveHost(ctx, small); err != nil {
			t.Fatalf("remove a host with only stopped sandboxes: %v", err)
		}
		if _, err := db.GetHost(ctx, small); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("host row after removal: %v", err)
		}
		if _, err := cp.Pool().Get(ctx, small); service.KindOf(err) != service.KindUnavailable {
			t.Fatalf("client of a removed host: %v", err)
		}
		var hse *hostreg.StatusError
		if _, err := smallAgent.Heartbeat(ctx, hostreg.Heartbeat{}); !errors.As(err, &hse) || hse.Status != http.StatusNotFound {
			t.Fatalf("heartbeat of a removed host: %v", err)
		}
		if _, err := db.GetHost(ctx, small); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a refused heartbeat brought the host back: %v", err)
		}
		if got := pick(); got != big {
			t.Fatalf("after removal, picked %s", got)
		}
		if status(big) != store.HostReady {
			t.Fatal("big changed status")
		}
	})
}
