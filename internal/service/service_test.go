package service_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/service/servicetest"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newClock() *clock               { c := &clock{}; c.ns.Store(time.Now().UnixNano()); return c }

type fixture struct {
	svc  *service.Service
	db   *store.DB
	host *servicetest.FakeHost
	clk  *clock
	p    service.Principal
	deps service.Deps
}

// settleTimeout is short so waits on rows no host will ever move (made
// directly in the store) end quickly; waits on real operations end when
// those finish.
const settleTimeout = 100 * time.Millisecond

// with returns another service on the same host and clock over st (a
// wrapper of f.db).
func (f fixture) with(t *testing.T, st service.Store) *service.Service {
	t.Helper()
	d := f.deps
	d.Store = st
	svc, err := service.New(d)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func newFixture(t *testing.T, db *store.DB) fixture {
	t.Helper()
	ctx := context.Background()
	pw, err := auth.NewPasswords(bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	clk := newClock()
	// Tokens use the real clock: the fixture's clock runs ahead.
	tokens, err := auth.NewTokens(key, "hearth", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	host := servicetest.NewFakeHost("h1")
	deps := service.Deps{Store: db, Hosts: service.SingleHost{ID: "h1", Client: host}, Passwords: pw, Tokens: tokens, Now: clk.now, SettleTimeout: settleTimeout}
	svc, err := service.New(deps)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpsertPlatformTemplate(ctx, store.Template{Name: "base", Kind: sandbox.KindBase, VCPUs: 1, MemoryMB: 256}); err != nil {
		t.Fatal(err)
	}
	res, err := svc.Signup(ctx, "svc@example.com", "password123")
	if err != nil {
		t.Fatal(err)
	}
	return fixture{svc: svc, db: db, host: host, clk: clk, p: service.Principal{UserID: res.User.ID, TeamID: res.Team.ID}, deps: deps}
}

func ptr[T any](v T) *T { return &v }

func TestReaper(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		short, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base", TimeoutS: ptr(10)})
		if err != nil {
			t.Fatal(err)
		}
		pausing, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base", TimeoutS: ptr(10), AutoPause: true})
		if err != nil {
			t.Fatal(err)
		}
		long, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base", TimeoutS: ptr(3600)})
		if err != nil {
			t.Fatal(err)
		}
		r := f.svc.NewReaper(time.Hour)
		if n := r.ReapOnce(ctx); n != 0 {
			t.Fatalf("reaped %d before any timeout", n)
		}
		f.clk.add(11 * time.Second)
		if n := r.ReapOnce(ctx); n != 2 {
			t.Fatalf("reaped %d, want 2", n)
		}
		if _, err := f.svc.GetSandbox(ctx, f.p, short.ID); service.KindOf(err) != service.KindNotFound {
			t.Errorf("expired sandbox still there: %v", err)
		}
		if f.host.State(short.ID) != "" {
			t.Error("expired sandbox still on the host")
		}
		got, err := f.svc.GetSandbox(ctx, f.p, pausing.ID)
		if err != nil || got.Status != sandbox.StatePaused || f.host.State(pausing.ID) != "paused" {
			t.Errorf("auto-pause sandbox: %v %v host %q", got.Status, err, f.host.State(pausing.ID))
		}
		if got, err := f.svc.GetSandbox(ctx, f.p, long.ID); err != nil || got.Status != sandbox.StateRunning {
			t.Errorf("long sandbox: %v %v", got.Status, err)
		}
		// Paused sandboxes do not expire again; a second pass is a no-op.
		f.clk.add(time.Minute)
		if n := r.ReapOnce(ctx); n != 0 {
			t.Fatalf("second pass reaped %d", n)
		}
		// Run stops with its context.
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { r.Run(rctx); close(done) }()
		cancel()
		<-done
	})
}

func TestConcurrentPauseIsSafe(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		sb, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base"})
		if err != nil {
			t.Fatal(err)
		}
		// Exactly one caller pauses (one host call); the others wait for it
		// and learn that they changed nothing.
		var wg sync.WaitGroup
		errs := make([]error, 8)
		changed := make([]bool, 8)
		for i := range errs {
			wg.Go(func() { _, changed[i], errs[i] = f.svc.PauseSandbox(ctx, f.p, sb.ID) })
		}
		wg.Wait()
		n := 0
		for i, err := range errs {
			if err != nil {
				t.Errorf("concurrent pause: %v", err)
			}
			if changed[i] {
				n++
			}
		}
		if n != 1 || f.host.Pauses() != 1 {
			t.Errorf("%d callers changed the sandbox, host paused %d times; want 1 and 1", n, f.host.Pauses())
		}
		got, err := f.svc.GetSandbox(ctx, f.p, sb.ID)
		if err != nil || got.Status != sandbox.StatePaused {
			t.Fatalf("after concurrent pauses: %v %v", got.Status, err)
		}
	})
}

// Operations other than destroy refuse a sandbox in a transitional state;
// destroy overtakes it (a crash may have left it there for good): the row
// goes, and the host is asked to destroy the sandbox.
func TestTransitionalStatesRefuseOperations(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		for _, st := range []sandbox.State{sandbox.StateCreating, sandbox.StatePausing, sandbox.StateResuming} {
			sb, err := db.CreateSandbox(ctx, store.Sandbox{TeamID: f.p.TeamID, TemplateID: "x", Status: st, Host: "h1", VCPUs: 1, MemoryMB: 256})
			if err != nil {
				t.Fatal(err)
			}
			// Pause waits for the transition to settle; these never do.
			if _, _, err := f.svc.PauseSandbox(ctx, f.p, sb.ID); service.KindOf(err) != service.KindConflict {
				t.Errorf("pause %s: %v, want conflict", st, err)
			}
			if _, err := f.svc.Exec(ctx, f.p, sb.ID, service.ExecRequest{Cmd: "echo"}); service.KindOf(err) != service.KindConflict {
				t.Errorf("exec %s: %v, want conflict", st, err)
			}
			if err := f.svc.DestroySandbox(ctx, f.p, sb.ID); err != nil {
				t.Errorf("destroy %s: %v, want it to overtake the operation", st, err)
			}
			if _, err := f.svc.GetSandbox(ctx, f.p, sb.ID); service.KindOf(err) != service.KindNotFound {
				t.Errorf("after destroying a %s sandbox: %v, want not found", st, err)
			}
		}
	})
}

func TestLoginTimingPathsAgree(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		_, _, e1 := f.svc.Login(ctx, "svc@example.com", "wrong-password")
		_, _, e2 := f.svc.Login(ctx, "nobody@example.com", "wrong-password")
		if e1 == nil || e2 == nil || e1.Error() != e2.Error() || service.KindOf(e1) != service.KindUnauthenticated {
			t.Fatalf("login errors differ: %v / %v", e1, e2)
		}
		var se *service.Error
		if !errors.As(e1, &se) {
			t.Fatal("not a service error")
		}
	})
}

func TestSingleHostPool(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if _, _, err := (service.SingleHost{}).Pick(ctx, service.PlacementRequest{}); service.KindOf(err) != service.KindUnavailable || err.Error() != "no hosts available" {
		t.Fatalf("empty pool: %v", err)
	}
	p := service.SingleHost{ID: "h1", Client: servicetest.NewFakeHost("h1")}
	if id, c, err := p.Pick(ctx, service.PlacementRequest{}); err != nil || id != "h1" || c == nil {
		t.Fatalf("pick: %q %v", id, err)
	}
	if _, _, err := p.Pick(ctx, service.PlacementRequest{TemplateHosts: []string{"h2"}}); service.KindOf(err) != service.KindUnavailable {
		t.Fatalf("pick for a template on another host: %v", err)
	}
	if _, err := p.Get(ctx, "h2"); service.KindOf(err) != service.KindUnavailable {
		t.Fatalf("get unknown host: %v", err)
	}
}
