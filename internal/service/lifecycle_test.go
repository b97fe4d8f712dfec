package service_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// agentUnimplemented is how the agent's Connect client reports a host that
// cannot do an operation: KindUnimplemented with the RPC error as cause.
func agentUnimplemented(op string) error {
	cause := connect.NewError(connect.CodeUnimplemented, errors.New(op+": not implemented on this host"))
	return &service.Error{Kind: service.KindUnimplemented, Message: "host agent: " + op + ": " + cause.Message(), Err: cause}
}

// hostFailures are the ways a host call can fail, with what the sandbox
// must look like afterwards: back where it was when the host refused
// before touching the VM, error otherwise.
var hostFailures = []struct {
	name      string
	err       error // nil: the host lost the VM
	wantKind  service.Kind
	untouched bool
}{
	{"unimplemented", service.Unimplemented("no snapshotter", nil), service.KindUnimplemented, true},
	{"unimplemented from the agent client", agentUnimplemented("pause"), service.KindUnimplemented, true},
	{"invalid argument", service.InvalidArgument("sandbox_id", "malformed"), service.KindUnavailable, true},
	{"vmm failure midway", errors.New("qemu: migrate failed"), service.KindUnavailable, false},
	{"unreachable host", service.Unavailable("host agent: connection refused", nil), service.KindUnavailable, false},
	{"lost VM", nil, service.KindUnavailable, false},
}

func TestPauseHostFailures(t *testing.T) {
	for _, tc := range hostFailures {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			storetest.Run(t, func(t *testing.T, db *store.DB) {
				t.Parallel()
				ctx := context.Background()
				f := newFixture(t, db)
				sb, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base"})
				if err != nil {
					t.Fatal(err)
				}
				if tc.err == nil {
					if err := f.host.DestroySandbox(ctx, sb.ID); err != nil {
						t.Fatal(err)
					}
				} else {
					f.host.FailPauses(tc.err)
				}
				_, changed, err := f.svc.PauseSandbox(ctx, f.p, sb.ID)
				if service.KindOf(err) != tc.wantKind || changed {
					t.Fatalf("pause: changed %v, err %v (kind %v), want kind %v", changed, err, service.KindOf(err), tc.wantKind)
				}
				got, err := f.svc.GetSandbox(ctx, f.p, sb.ID)
				if err != nil {
					t.Fatal(err)
				}
				if tc.untouched {
					if got.Status != sandbox.StateRunning || got.Error != "" {
						t.Fatalf("after refused pause: %s %q, want running", got.Status, got.Error)
					}
					// Still usable: exec works and a later pause succeeds.
					if _, err := f.svc.Exec(ctx, f.p, sb.ID, service.ExecRequest{Cmd: "echo", Args: []string{"hi"}}); err != nil {
						t.Fatalf("exec after refused pause: %v", err)
					}
					f.host.FailPauses(nil)
					if _, changed, err := f.svc.PauseSandbox(ctx, f.p, sb.ID); err != nil || !changed {
						t.Fatalf("pause after the host recovered: %v %v", changed, err)
					}
				} else if got.Status != sandbox.StateError || got.Error == "" {
					t.Fatalf("after failed pause: %s %q, want error", got.Status, got.Error)
				}
				if err := f.svc.DestroySandbox(ctx, f.p, sb.ID); err != nil {
					t.Fatalf("destroy after pause failure: %v", err)
				}
			})
		})
	}
}

func TestResumeHostFailures(t *testing.T) {
	for _, tc := range hostFailures {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			storetest.Run(t, func(t *testing.T, db *store.DB) {
				t.Parallel()
				ctx := context.Background()
				f := newFixture(t, db)
				sb, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base"})
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := f.svc.PauseSandbox(ctx, f.p, sb.ID); err != nil {
					t.Fatal(err)
				}
				if tc.err == nil {
					if err := f.host.DestroySandbox(ctx, sb.ID); err != nil {
						t.Fatal(err)
					}
				} else {
					f.host.FailResumes(tc.err)
				}
				_, resumed, err := f.svc.ConnectSandbox(ctx, f.p, sb.ID, 0)
				if service.KindOf(err) != tc.wantKind || resumed {
					t.Fatalf("connect: resumed %v, err %v, want kind %v", resumed, err, tc.wantKind)
				}
				got, err := f.svc.GetSandbox(ctx, f.p, sb.ID)
				if err != nil {
					t.Fatal(err)
				}
				want := sandbox.StateError
				if tc.untouched {
					want = sandbox.StatePaused
				}
				if got.Status != want {
					t.Fatalf("after failed resume: %s %q, want %s", got.Status, got.Error, want)
				}
			})
		})
	}
}

func TestPauseReportsChange(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		sb, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base"})
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []bool{true, false, false} {
			got, changed, err := f.svc.PauseSandbox(ctx, f.p, sb.ID)
			if err != nil || changed != want || got.Status != sandbox.StatePaused {
				t.Fatalf("pause #%d: %s changed %v err %v, want paused changed %v", i, got.Status, changed, err, want)
			}
		}
		if f.host.Pauses() != 1 {
			t.Fatalf("host paused %d times", f.host.Pauses())
		}
		other := service.Principal{TeamID: "someoneelse"}
		if _, _, err := f.svc.PauseSandbox(ctx, other, sb.ID); service.KindOf(err) != service.KindNotFound {
			t.Fatalf("other team's pause: %v", err)
		}
	})
}

func TestConnectSandbox(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		sb, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base", TimeoutS: ptr(600)})
		if err != nil {
			t.Fatal(err)
		}
		end := sb.EndAt

		// Running: not resumed; a shorter timeout leaves the end alone, a
		// longer one extends it.
		got, resumed, err := f.svc.ConnectSandbox(ctx, f.p, sb.ID, 60)
		if err != nil || resumed || got.Status != sandbox.StateRunning || got.AccessToken != sb.AccessToken || !got.EndAt.Equal(end) {
			t.Fatalf("connect running, shorter timeout: %+v resumed %v err %v (end was %v)", got, resumed, err, end)
		}
		got, _, err = f.svc.ConnectSandbox(ctx, f.p, sb.ID, 3600)
		if want := f.clk.now().Add(time.Hour); err != nil || got.EndAt.Sub(want).Abs() > time.Microsecond {
			t.Fatalf("connect with a longer timeout: end %v err %v, want %v", got.EndAt, err, want)
		}
		if row, _ := f.svc.GetSandbox(ctx, f.p, sb.ID); !row.EndAt.Equal(got.EndAt) {
			t.Fatalf("stored end %v, returned %v", row.EndAt, got.EndAt)
		}

		// Paused: resumed, with its token; then running again.
		if _, _, err := f.svc.PauseSandbox(ctx, f.p, sb.ID); err != nil {
			t.Fatal(err)
		}
		got, resumed, err = f.svc.ConnectSandbox(ctx, f.p, sb.ID, 0)
		if err != nil || !resumed || got.Status != sandbox.StateRunning || got.AccessToken != sb.AccessToken || f.host.State(sb.ID) != "running" {
			t.Fatalf("connect paused: %s resumed %v err %v host %s", got.Status, resumed, err, f.host.State(sb.ID))
		}

		for _, tc := range []struct {
			name    string
			p       service.Principal
			id      string
			timeout int
			want    service.Kind
		}{
			{"other team", service.Principal{TeamID: "other"}, sb.ID, 0, service.KindNotFound},
			{"missing", f.p, "nosuchsandbox", 0, service.KindNotFound},
			{"negative timeout", f.p, sb.ID, -1, service.KindInvalidArgument},
			{"timeout too long", f.p, sb.ID, service.MaxTimeoutS + 1, service.KindInvalidArgument},
		} {
			if _, _, err := f.svc.ConnectSandbox(ctx, tc.p, tc.id, tc.timeout); service.KindOf(err) != tc.want {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
		}
		for _, st := range []sandbox.State{sandbox.StateError, sandbox.StateStopping} {
			row, err := db.CreateSandbox(ctx, store.Sandbox{TeamID: f.p.TeamID, TemplateID: "x", Status: st, Host: "h1", VCPUs: 1, MemoryMB: 256})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := f.svc.ConnectSandbox(ctx, f.p, row.ID, 0); service.KindOf(err) != service.KindConflict {
				t.Errorf("connect %s: %v, want conflict", st, err)
			}
		}
	})
}

func TestConcurrentConnectResumesOnce(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		sb, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base"})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.svc.PauseSandbox(ctx, f.p, sb.ID); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		resumed := make([]bool, 8)
		errs := make([]error, 8)
		for i := range resumed {
			wg.Go(func() {
				var got store.Sandbox
				got, resumed[i], errs[i] = f.svc.ConnectSandbox(ctx, f.p, sb.ID, 120)
				if errs[i] == nil && (got.Status != sandbox.StateRunning || got.AccessToken != sb.AccessToken) {
					errs[i] = fmt.Errorf("returned %s, token %q", got.Status, got.AccessToken)
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Errorf("concurrent connect: %v", err)
			}
		}
		if n := len(slices.DeleteFunc(resumed, func(b bool) bool { return !b })); n != 1 || f.host.Resumes() != 1 {
			t.Fatalf("%d connects resumed, host resumed %d times; want 1 and 1", n, f.host.Resumes())
		}
	})
}

// statusWatch is the real store, telling the test when a team read
// returns a sandbox in a given status: the moment a waiting caller has
// seen the transition in flight.
type statusWatch struct {
	*store.DB
	status sandbox.State
	saw    chan string
}

func (w statusWatch) GetSandbox(ctx context.Context, teamID, id string) (store.Sandbox, error) {
	sb, err := w.DB.GetSandbox(ctx, teamID, id)
	if err == nil && sb.Status == w.status {
		select {
		case w.saw <- sb.ID:
		default:
		}
	}
	return sb, err
}

// TestConnectWaitsForPause: a connect arriving while a pause is in flight
// waits for it and then resumes, instead of failing with a conflict.
func TestConnectWaitsForPause(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		sb, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base"})
		if err != nil {
			t.Fatal(err)
		}
		watch := statusWatch{DB: db, status: sandbox.StatePausing, saw: make(chan string, 1)}
		// Real operations take as long as they take; the bound is for
		// hosts that never answer.
		f.deps.SettleTimeout = time.Hour
		waiter := f.with(t, watch)

		entered, release := f.host.HoldPauses()
		defer release()
		type pauseRes struct {
			changed bool
			err     error
		}
		paused := make(chan pauseRes, 1)
		go func() {
			_, changed, err := f.svc.PauseSandbox(ctx, f.p, sb.ID)
			paused <- pauseRes{changed, err}
		}()
		<-entered // the row says pausing; the host is mid-pause

		type connRes struct {
			sb      store.Sandbox
			resumed bool
			err     error
		}
		connected := make(chan connRes, 1)
		go func() {
			got, resumed, err := waiter.ConnectSandbox(ctx, f.p, sb.ID, 0)
			connected <- connRes{got, resumed, err}
		}()
		<-watch.saw // connect has seen the pause in flight
		release()

		if r := <-paused; r.err != nil || !r.changed {
			t.Fatalf("pause: changed %v err %v", r.changed, r.err)
		}
		r := <-connected
		if r.err != nil || !r.resumed || r.sb.Status != sandbox.StateRunning || r.sb.AccessToken != sb.AccessToken {
			t.Fatalf("connect during pause: %s resumed %v err %v", r.sb.Status, r.resumed, r.err)
		}
		if f.host.Pauses() != 1 || f.host.Resumes() != 1 || f.host.State(sb.ID) != "running" {
			t.Fatalf("host: %d pauses, %d resumes, state %s", f.host.Pauses(), f.host.Resumes(), f.host.State(sb.ID))
		}
	})
}

// TestSettleIsBounded: waiting on a sandbox that never leaves a transient
// state ends with a conflict at the settle bound, or with the caller's
// context.
func TestSettleIsBounded(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		stuck, err := db.CreateSandbox(ctx, store.Sandbox{TeamID: f.p.TeamID, TemplateID: "x", Status: sandbox.StateResuming, Host: "h1", VCPUs: 1, MemoryMB: 256})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.svc.ConnectSandbox(ctx, f.p, stuck.ID, 0); service.KindOf(err) != service.KindConflict {
			t.Fatalf("connect to a stuck sandbox: %v, want conflict", err)
		}
		f.deps.SettleTimeout = time.Hour
		patient := f.with(t, db)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := patient.ConnectSandbox(cctx, f.p, stuck.ID, 0); !errors.Is(err, context.Canceled) {
			t.Fatalf("connect with a cancelled context: %v", err)
		}
	})
}

func TestAutoResumeSandbox(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		mk := func(autoResume, pause bool) store.Sandbox {
			sb, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base", AutoResume: autoResume})
			if err != nil {
				t.Fatal(err)
			}
			if pause {
				if sb, _, err = f.svc.PauseSandbox(ctx, f.p, sb.ID); err != nil {
					t.Fatal(err)
				}
			}
			return sb
		}
		for _, tc := range []struct {
			name string
			sb   store.Sandbox
			want sandbox.State
		}{
			{"paused with auto-resume", mk(true, true), sandbox.StateRunning},
			{"paused without auto-resume", mk(false, true), sandbox.StatePaused},
			{"running with auto-resume", mk(true, false), sandbox.StateRunning},
		} {
			got, err := f.svc.AutoResumeSandbox(ctx, tc.sb.ID)
			if err != nil || got.Status != tc.want || f.host.State(tc.sb.ID) != string(tc.want) {
				t.Errorf("%s: %s err %v host %s, want %s", tc.name, got.Status, err, f.host.State(tc.sb.ID), tc.want)
			}
		}
		if f.host.Resumes() != 1 {
			t.Errorf("host resumed %d times, want 1", f.host.Resumes())
		}
		if _, err := f.svc.AutoResumeSandbox(ctx, "nosuchsandbox"); service.KindOf(err) != service.KindNotFound {
			t.Errorf("missing sandbox: %v", err)
		}
	})
}

func TestGetSandboxInternal(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		sb, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base"})
		if err != nil {
			t.Fatal(err)
		}
		// Any team's sandbox, with its token: for trusted callers only.
		got, err := f.svc.GetSandboxInternal(ctx, sb.ID)
		if err != nil || got.ID != sb.ID || got.TeamID != f.p.TeamID || got.AccessToken != sb.AccessToken {
			t.Fatalf("internal get: %+v %v", got, err)
		}
		if _, err := f.svc.GetSandboxInternal(ctx, "nosuchsandbox"); service.KindOf(err) != service.KindNotFound {
			t.Fatalf("internal get of a missing sandbox: %v", err)
		}
	})
}

func TestListSandboxesPaging(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		for _, n := range []int{0, 1, 4, 5} {
			_, team, err := db.CreateUserWithTeam(ctx, store.User{Email: fmt.Sprintf("page%d@example.com", n), PasswordHash: "x"}, "t")
			if err != nil {
				t.Fatal(err)
			}
			p := service.Principal{TeamID: team.ID}
			var want []string
			for range n {
				sb, err := db.CreateSandbox(ctx, store.Sandbox{TeamID: team.ID, TemplateID: "x", Status: sandbox.StateRunning, Host: "h1", VCPUs: 1, MemoryMB: 256})
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, sb.ID)
			}
			all, next, err := f.svc.ListSandboxes(ctx, p, store.SandboxFilter{})
			if err != nil || next != "" || len(all) != n {
				t.Fatalf("n=%d unlimited: %d rows, next %q, err %v", n, len(all), next, err)
			}
			var got []string
			pages, after := 0, ""
			for {
				page, next, err := f.svc.ListSandboxes(ctx, p, store.SandboxFilter{Limit: 2, After: after})
				if err != nil {
					t.Fatal(err)
				}
				pages++
				for _, sb := range page {
					got = append(got, sb.ID)
				}
				if next == "" {
					break
				}
				if len(page) != 2 {
					t.Fatalf("n=%d: short page of %d with a next token", n, len(page))
				}
				// The cursor survives deleting the row it points past.
				if err := db.DeleteSandbox(ctx, page[1].ID); err != nil {
					t.Fatal(err)
				}
				want = slices.DeleteFunc(want, func(id string) bool { return id == page[1].ID })
				got = got[:len(got)-1]
				after = next
			}
			if !slices.Equal(got, want) {
				t.Fatalf("n=%d: paged %v, want %v", n, got, want)
			}
			if wantPages := max(1, (n+1)/2); pages != wantPages {
				t.Fatalf("n=%d: %d pages, want %d (no empty trailing page)", n, pages, wantPages)
			}
		}
	})
}

// TestReaperCannotPause: an auto-pause sandbox whose host cannot pause is
// destroyed at its timeout rather than left running past it.
func TestReaperCannotPause(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		sb, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base", TimeoutS: ptr(10), AutoPause: true})
		if err != nil {
			t.Fatal(err)
		}
		f.host.FailPauses(agentUnimplemented("pause"))
		f.clk.add(11 * time.Second)
		if n := f.svc.NewReaper(time.Hour).ReapOnce(ctx); n != 1 {
			t.Fatalf("reaped %d, want 1", n)
		}
		if _, err := f.svc.GetSandbox(ctx, f.p, sb.ID); service.KindOf(err) != service.KindNotFound || f.host.State(sb.ID) != "" {
			t.Fatalf("sandbox after timeout on a host that cannot pause: %v, host %q", err, f.host.State(sb.ID))
		}
	})
}
