package vmmtest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// Adopt is the conformance check of a vmm.Adopter, as a restarted agent
// uses it: pid is a running machine started with cfg whose first handle's
// control connection is gone. Adopting it with a config that names another
// run dir is refused; adopting it with cfg yields the same pid, a machine
// that reports its guest running, pauses (reported not running) and
// continues. The caller stops the returned machine and checks it is gone.
func Adopt(ctx context.Context, t *testing.T, d vmm.Adopter, cfg vmm.Config, pid int) vmm.Snapshotter {
	t.Helper()
	other := cfg
	other.RunDir = filepath.Join(t.TempDir(), "elsewhere")
	if _, err := d.Adopt(ctx, other, pid); err == nil {
		t.Fatal("adopted a pid whose command line names another machine's control socket")
	}
	a, err := d.Adopt(ctx, cfg, pid)
	if err != nil {
		t.Fatal(err)
	}
	if a.PID() != pid {
		t.Fatalf("adopted pid %d, want %d", a.PID(), pid)
	}
	rs, ok := a.(vmm.RunStater)
	if !ok {
		t.Fatalf("adopted machine %T cannot report its run state", a)
	}
	if running, err := rs.GuestRunning(ctx); err != nil || !running {
		t.Fatalf("adopted guest running=%v (%v), want running", running, err)
	}
	if err := a.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if running, err := rs.GuestRunning(ctx); err != nil || running {
		t.Fatalf("after Pause running=%v (%v), want paused", running, err)
	}
	if err := a.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	return a
}
