package controlplane_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/controlplane"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/service/servicetest"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// TestSettleBeforeWork: the start-up reconcile treats every transitional
// row as stale, so once Settle has run (hearth dev runs it before its
// code-interpreter bake creates a sandbox), Serve must not run it again
// over work started since: a brand-new "creating" row the host does not
// list yet stays creating.
func TestSettleBeforeWork(t *testing.T) {
	ctx := context.Background()
	host := servicetest.NewFakeHost("local")
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cp, err := controlplane.New(ctx, controlplane.Options{
		Config: cfg,
		Hosts:  service.SingleHost{ID: "local", Client: host},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	controlplane.RegisterHost(ctx, cp.Store, "local", "fake", host, slog.New(slog.DiscardHandler))
	cp.Settle(ctx)

	_, team, err := cp.Store.CreateUserWithTeam(ctx, store.User{Email: "a@example.com"}, "a")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := cp.Store.CreateSandbox(ctx, store.Sandbox{
		ID: "settlecreating1", TeamID: team.ID, TemplateID: "base", Status: sandbox.StateCreating,
		Host: "local", VCPUs: 1, MemoryMB: 256, DiskSizeMB: sandbox.DefaultDiskSizeMB,
	})
	if err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cp.Serve(sctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	// Serve settles before it answers: once it answers, that is past.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + ln.Addr().String() + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the control plane never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	got, err := cp.Store.GetSandboxByID(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != sandbox.StateCreating {
		t.Fatalf("a sandbox created after the start-up reconcile is %s (%s), want creating", got.Status, got.Error)
	}
}
