package qemu_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/qemu"
	"github.com/hearth-sandbox/hearth/internal/vmm/vmmtest"
)

// TestAdoptRunningMachine plays an agent restart: a counter guest runs, the
// first driver's QMP connection goes away (the agent died), and a new
// driver adopts the QEMU process by pid (vmmtest.Adopt: run state, pause,
// continue, a pid of another machine refused). The guest keeps counting
// with the same secret, and Stop ends the process.
func TestAdoptRunningMachine(t *testing.T) {
	d := newTCG(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m0, cfg := startCounter(ctx, t, d, dir, "adopt", 2)
	console := vmm.ConsoleLog(cfg.RunDir)
	pid := m0.PID()
	m0.(*qemu.Machine).QMP().Close() // the old agent's connection dies with it

	a := vmmtest.Adopt(ctx, t, qemu.New(qemu.Options{Accel: qemu.AccelTCG}), cfg, pid)
	before, _ := os.ReadFile(console)
	last, secret := lastTick(before)
	want := fmt.Sprintf("hearth-test: tick %d %s", last+2, secret)
	if log, err := vmmtest.WaitForConsole(ctx, console, int64(len(before)), want, waitExit(a)); err != nil {
		t.Fatalf("guest did not go on counting after adoption: %v\n%s", err, tail(log))
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
