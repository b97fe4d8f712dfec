package qemu_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/qemu"
	"github.com/hearth-sandbox/hearth/internal/vmm/vmmtest"
)

// TestAdoptRunningMachine plays an agent restart: a counter guest runs, the
// first driver's QMP connection goes away (the agent died), and a new
// driver adopts the QEMU process by pid. The guest keeps counting with the
// same secret, the adopted machine pauses, continues and reports its run
// state, and Stop ends the process. A pid that is not the machine's QEMU is
// refused.
func TestAdoptRunningMachine(t *testing.T) {
	d := newTCG(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m0, cfg := startCounter(ctx, t, d, dir, "adopt", 2)
	console := vmm.ConsoleLog(cfg.RunDir)
	pid := m0.PID()
	m0.(*qemu.Machine).QMP().Close() // the old agent's connection dies with it

	d2 := qemu.New(qemu.Options{Accel: qemu.AccelTCG})
	other := cfg
	other.RunDir = filepath.Join(dir, "elsewhere")
	if _, err := d2.Adopt(ctx, other, pid); err == nil {
		t.Fatal("adopted a pid whose command line names another machine's QMP socket")
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
		t.Fatalf("adopted guest running=%v (%v), want running", running, err)
	}
	before, _ := os.ReadFile(console)
	last, secret := lastTick(before)
	want := fmt.Sprintf("hearth-test: tick %d %s", last+2, secret)
	if log, err := vmmtest.WaitForConsole(ctx, console, int64(len(before)), want, waitExit(a)); err != nil {
		t.Fatalf("guest did not go on counting after adoption: %v\n%s", err, tail(log))
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
	select {
	case <-waitExit(m0):
	case <-ctx.Done():
		t.Fatal("the adopted QEMU did not exit on Stop")
	}
	assertGone(t, pid)
}
