package firecracker

import (
	"context"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/vmm/vmmtest"
)

// TestAdoptRunningMachine plays an agent restart against the fake: a
// booted machine's client goes away and a new driver adopts the process by
// pid through its API socket (vmmtest.Adopt), then stops it.
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

	a := vmmtest.Adopt(ctx, t, New(d.opts), cfg, pid)
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	_ = m0.Wait(ctx) // the test is the process's parent: its reaper collects it
	if ctx.Err() != nil {
		t.Fatal("the adopted firecracker did not exit on Stop")
	}
	assertGone(t, pid)
}
