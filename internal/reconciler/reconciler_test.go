package reconciler_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/reconciler"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// fakeHost is an in-process agent: the unit under test is the
// reconciler's decision logic, not the RPC.
type fakeHost struct {
	service.HostClient // other methods are never called (nil: would panic)
	mu                 sync.Mutex
	running            []service.SandboxRuntime
	listErr            error
	onList             func() // runs before answering, to model races
	destroyed          []string
	destroyedC         chan string
}

func (f *fakeHost) ListSandboxes(context.Context) ([]service.SandboxRuntime, error) {
	if f.onList != nil {
		f.onList()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	return slices.Clone(f.running), nil
}

func (f *fakeHost) DestroySandbox(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.destroyed = append(f.destroyed, id)
	f.running = slices.DeleteFunc(f.running, func(r service.SandboxRuntime) bool { return r.SandboxID == id })
	if f.destroyedC != nil {
		f.destroyedC <- id
	}
	return nil
}

func (f *fakeHost) runs(ids ...string) {
	for _, id := range ids {
		f.running = append(f.running, service.SandboxRuntime{SandboxID: id, State: "running"})
	}
}

type hosts map[string]*fakeHost

func (h hosts) Get(_ context.Context, id string) (service.HostClient, error) {
	if f, ok := h[id]; ok {
		return f, nil
	}
	return nil, service.Unavailable("host "+id+" is not available", nil)
}

func TestReconcile(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		now := time.Now()
		for id, st := range map[string]store.HostStatus{"h1": store.HostReady, "h2": store.HostDraining, "h3": store.HostUnreachable, "h4": store.HostReady} {
			if _, err := db.UpsertHost(ctx, store.Host{ID: id, Name: id, Address: id + ":1", Status: st}); err != nil {
				t.Fatal(err)
			}
		}
		sb := func(id, host string, st sandbox.State, age time.Duration) {
			t.Helper()
			_, err := db.CreateSandbox(ctx, store.Sandbox{ID: id, TeamID: store.PlatformTeamID, TemplateID: "base",
				Status: st, Host: host, VCPUs: 1, MemoryMB: 512, CreatedAt: now.Add(-age), UpdatedAt: now.Add(-age)})
			if err != nil {
				t.Fatal(err)
			}
		}
		const old, young = 10 * time.Minute, 5 * time.Second
		sb("runok", "h1", sandbox.StateRunning, old)
		sb("runlost", "h1", sandbox.StateRunning, young) // running: no grace
		sb("paused", "h1", sandbox.StatePaused, old)
		sb("creatingyoung", "h1", sandbox.StateCreating, young)
		sb("creatingold", "h1", sandbox.StateCreating, old)
		sb("resumingyoung", "h1", sandbox.StateResuming, young)
		sb("pausingold", "h1", sandbox.StatePausing, old)
		sb("resumingold", "h1", sandbox.StateResuming, old)
		sb("stoppingold", "h1", sandbox.StateStopping, old)
		sb("errored", "h1", sandbox.StateError, old)
		sb("stopped", "h1", sandbox.StateStopped, old)   // but h1 still runs it
		sb("elsewhere", "h2", sandbox.StateRunning, old) // h1 runs a copy too
		sb("drainlost", "h2", sandbox.StateRunning, old) // draining hosts are reconciled
		sb("offline", "h3", sandbox.StateRunning, old)   // unreachable host: untouched
		sb("h4lost", "h4", sandbox.StateRunning, old)    // h4 cannot list: untouched

		h1, h2, h3, h4 := &fakeHost{}, &fakeHost{}, &fakeHost{}, &fakeHost{listErr: errors.New("connection refused")}
		h1.runs("runok", "ghost", "stopped", "elsewhere", "fresh")
		h1.running = append(h1.running, service.SandboxRuntime{SandboxID: "ghost2", State: "stopped"})
		h2.runs("elsewhere")
		// "fresh" is created (and placed on h1) after the reconciler read the
		// store but before it listed h1: it must survive.
		h1.onList = func() { sb("fresh", "h1", sandbox.StateCreating, 0) }

		r := &reconciler.Reconciler{Store: db, Hosts: hosts{"h1": h1, "h2": h2, "h3": h3, "h4": h4}, Grace: time.Minute}
		rep, err := r.Reconcile(ctx)
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("pass error %v; want h4's failure reported", err)
		}
		if rep.Hosts != 2 || !slices.Equal(rep.Skipped, []string{"h4"}) {
			t.Fatalf("hosts %d skipped %v", rep.Hosts, rep.Skipped)
		}

		slices.Sort(h1.destroyed)
		if want := []string{"elsewhere", "ghost", "stopped"}; !slices.Equal(h1.destroyed, want) {
			t.Errorf("destroyed on h1 %v, want %v", h1.destroyed, want)
		}
		if len(h2.destroyed)+len(h3.destroyed)+len(h4.destroyed) != 0 {
			t.Errorf("destroyed elsewhere: h2 %v h3 %v h4 %v", h2.destroyed, h3.destroyed, h4.destroyed)
		}
		want := map[string]sandbox.State{
			"runok": sandbox.StateRunning, "runlost": sandbox.StateStopped, "paused": sandbox.StatePaused,
			"creatingyoung": sandbox.StateCreating, "creatingold": sandbox.StateStopped,
			"resumingyoung": sandbox.StateResuming, "pausingold": sandbox.StateError, "resumingold": sandbox.StateError,
			"stoppingold": sandbox.StateStopped, "errored": sandbox.StateError, "stopped": sandbox.StateStopped,
			"elsewhere": sandbox.StateRunning, "drainlost": sandbox.StateStopped, "offline": sandbox.StateRunning,
			"h4lost": sandbox.StateRunning, "fresh": sandbox.StateCreating,
		}
		for id, st := range want {
			s, err := db.GetSandboxByID(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if s.Status != st {
				t.Errorf("%s: %s, want %s", id, s.Status, st)
			}
			if id == "runlost" && !strings.Contains(s.Error, "host h1 no longer runs") {
				t.Errorf("runlost: error %q does not say why", s.Error)
			}
		}

		// A second pass finds nothing more to do on reachable hosts.
		h1.onList = nil
		rep, _ = r.Reconcile(ctx)
		if len(rep.Actions) != 0 {
			t.Fatalf("second pass acted: %+v", rep.Actions)
		}
	})
}

// TestSettleAgainstHost: sandboxes the host has in a settled state the
// store disagrees with take the host's state (transitional rows only past
// Grace, or at once in a start-up Settle pass); a stopping row is destroyed
// again; rows in error and host-side transitional states are left alone.
func TestSettleAgainstHost(t *testing.T) {
	for _, tc := range []struct {
		name   string
		store  sandbox.State
		host   sandbox.State
		young  bool // row changed within Grace
		settle bool // a start-up Settle pass instead of Reconcile
		want   sandbox.State
		gone   bool // destroyed on the host
	}{
		{name: "pausing committed", store: sandbox.StatePausing, host: sandbox.StatePaused, want: sandbox.StatePaused},
		{name: "pausing rolled back", store: sandbox.StatePausing, host: sandbox.StateRunning, want: sandbox.StateRunning},
		{name: "resuming completed", store: sandbox.StateResuming, host: sandbox.StateRunning, want: sandbox.StateRunning},
		{name: "resuming rolled back", store: sandbox.StateResuming, host: sandbox.StatePaused, want: sandbox.StatePaused},
		{name: "creating done", store: sandbox.StateCreating, host: sandbox.StateRunning, want: sandbox.StateRunning},
		{name: "young pausing waits", store: sandbox.StatePausing, host: sandbox.StatePaused, young: true, want: sandbox.StatePausing},
		{name: "young pausing at start-up", store: sandbox.StatePausing, host: sandbox.StatePaused, young: true, settle: true, want: sandbox.StatePaused},
		{name: "running paused by host", store: sandbox.StateRunning, host: sandbox.StatePaused, young: true, want: sandbox.StatePaused},
		{name: "running died on host", store: sandbox.StateRunning, host: sandbox.StateError, young: true, want: sandbox.StateError},
		{name: "paused resumed by host", store: sandbox.StatePaused, host: sandbox.StateRunning, young: true, want: sandbox.StateRunning},
		{name: "host busy", store: sandbox.StateRunning, host: sandbox.StatePausing, want: sandbox.StateRunning},
		{name: "error stays", store: sandbox.StateError, host: sandbox.StateRunning, want: sandbox.StateError},
		{name: "stopping destroyed again", store: sandbox.StateStopping, host: sandbox.StateRunning, want: sandbox.StateStopping, gone: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := storetest.Open(t, storetest.SQLite)
			ctx := context.Background()
			if _, err := db.UpsertHost(ctx, store.Host{ID: "h1", Name: "h1", Address: "h1:1", Status: store.HostReady}); err != nil {
				t.Fatal(err)
			}
			age := 10 * time.Minute
			if tc.young {
				age = time.Second
			}
			now := time.Now()
			if _, err := db.CreateSandbox(ctx, store.Sandbox{ID: "s1", TeamID: store.PlatformTeamID, TemplateID: "base",
				Status: tc.store, Host: "h1", VCPUs: 1, MemoryMB: 512, CreatedAt: now.Add(-age), UpdatedAt: now.Add(-age)}); err != nil {
				t.Fatal(err)
			}
			h1 := &fakeHost{running: []service.SandboxRuntime{{SandboxID: "s1", State: string(tc.host)}}}
			r := &reconciler.Reconciler{Store: db, Hosts: hosts{"h1": h1}, Grace: time.Minute}
			pass := r.Reconcile
			if tc.settle {
				pass = r.Settle
			}
			if _, err := pass(ctx); err != nil {
				t.Fatal(err)
			}
			s, err := db.GetSandboxByID(ctx, "s1")
			if err != nil {
				t.Fatal(err)
			}
			if s.Status != tc.want {
				t.Errorf("store %s, host %s: now %s, want %s", tc.store, tc.host, s.Status, tc.want)
			}
			if gone := slices.Contains(h1.destroyed, "s1"); gone != tc.gone {
				t.Errorf("destroyed on host: %v, want %v", gone, tc.gone)
			}
			if tc.want == sandbox.StateError && tc.store != sandbox.StateError && !strings.Contains(s.Error, "reports the sandbox in error") {
				t.Errorf("error %q does not say why", s.Error)
			}
		})
	}
}

// TestReconcileLostCAS: a sandbox stopped by its use case between the
// store read and the CAS is not reported as reconciled.
func TestReconcileLostCAS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t, storetest.SQLite)
	db.UpsertHost(ctx, store.Host{ID: "h1", Name: "h1", Address: "h1:1"})
	if _, err := db.CreateSandbox(ctx, store.Sandbox{ID: "s1", TeamID: store.PlatformTeamID, TemplateID: "b", Status: sandbox.StateRunning, Host: "h1", VCPUs: 1, MemoryMB: 1}); err != nil {
		t.Fatal(err)
	}
	h1 := &fakeHost{onList: func() {
		// The user deletes it meanwhile.
		if _, err := db.UpdateSandboxStatus(ctx, "s1", []sandbox.State{sandbox.StateRunning}, sandbox.StateStopping, ""); err != nil {
			t.Error(err)
		}
	}}
	rep, err := (&reconciler.Reconciler{Store: db, Hosts: hosts{"h1": h1}}).Reconcile(ctx)
	if err != nil || len(rep.Actions) != 0 {
		t.Fatalf("actions %+v err %v", rep.Actions, err)
	}
	if s, _ := db.GetSandboxByID(ctx, "s1"); s.Status != sandbox.StateStopping {
		t.Fatalf("status %s, want stopping (the use case's)", s.Status)
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := storetest.Open(t, storetest.SQLite)
	db.UpsertHost(ctx, store.Host{ID: "h1", Name: "h1", Address: "h1:1"})
	h1 := &fakeHost{destroyedC: make(chan string, 10)}
	h1.runs("ghost")
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		(&reconciler.Reconciler{Store: db, Hosts: hosts{"h1": h1}}).Run(runCtx, time.Millisecond)
		close(done)
	}()
	select {
	case id := <-h1.destroyedC:
		if id != "ghost" {
			t.Fatalf("destroyed %s", id)
		}
	case <-ctx.Done():
		t.Fatal("Run never reconciled")
	}
	stop()
	<-done
}
