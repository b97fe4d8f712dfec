package firecracker

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// TestAdoptRunningMachine plays an agent restart against the fake: a
// booted machine's client goes away, a new driver adopts the process by
// pid through its API socket, reports and changes its run state and stops
// it. A pid whose command line names another machine's socket is refused.
func TestAdoptRunningMachine(t *testing.T) {
	d, _ := fakeEnv(t)
	dir := t.TempDir()
	cfg := testConfig(dir)
	disk(t, dir, "sbx1.ext4", "disk-A")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m0, err := d.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m0.Start(ctx); err != nil {
		skipIfNoMountNS(t, err)
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m0.Stop(context.Background()) })
	pid := m0.PID()
	m0.(*Machine).api.Close() // the old agent's connections die with it

	d2 := New(d.opts)
	other := cfg
	other.RunDir = filepath.Join(dir, "elsewhere")
	if _, err := d2.Adopt(ctx, other, pid); err == nil {
		t.Fatal("adopted a pid whose command line names another machine's API socket")
	}
	a, err := d2.Adopt(ctx, cfg, pid)
	if err != nil {
		t.Fatal(err)
	}
	if a.PID() != pid {
		t.Fatalf("adopted pid %d, want %d", a.PID(), pid)
	}
	rs := a.(vmm.RunStater)
	if running, err := rs.GuestRunning(ctx); err != nil || !running {
		t.Fatalf("adopted machine running=%v (%v), want running", running, err)
	}
	if err := a.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if running, err := rs.GuestRunning(ctx); err != nil || running {
		t.Fatalf("after Pause running=%v (%v)", running, err)
	}
	if err := a.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	_ = m0.Wait(ctx) // the test is the process's parent: its reaper collects it
	if ctx.Err() != nil {
		t.Fatal("the adopted firecracker did not exit on Stop")
	}
	assertGone(t, pid)
}
