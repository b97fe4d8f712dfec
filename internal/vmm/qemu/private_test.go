package qemu_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/qemu"
	"github.com/hearth-sandbox/hearth/internal/vmm/vmmtest"
)

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// pagesToFile returns a PageFunc writing guest pages into a new sparse
// file of size bytes (zero pages stay holes unless the page was written
// before: a live snapshot hands a page out again) and counts them.
func pagesToFile(t *testing.T, path string, size int64) (vmm.PageFunc, *os.File, *[2]int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	var n [2]int // data pages, zero pages
	written := map[int64]bool{}
	return func(off int64, data []byte) error {
		if data == nil {
			n[1]++
			if !written[off] {
				return nil
			}
			data = make([]byte, 4096)
		} else {
			n[0]++
		}
		written[off] = true
		_, err := f.WriteAt(data, off)
		return err
	}, f, &n
}

// TestPrivateRestoreSnapshotsWithoutRAMInStream restores a guest with its
// RAM file mapped copy-on-write (share=off), lets it run, and snapshots it
// with the pages taken out of the migration stream: the RAM file it was
// restored from stays byte for byte the same, the state file stays small,
// and a second private restore from the collected pages continues the
// same process (same secret, counter going on), three times over: the
// second time live (vmm.LiveSnapshotter), the guest running while its
// pages go, and the third restore starts from what the live one wrote.
func TestPrivateRestoreSnapshotsWithoutRAMInStream(t *testing.T) {
	d := newTCG(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m0, cfg := startCounter(ctx, t, d, dir, "private", 3)
	m := m0.(vmm.Snapshotter)
	console := vmm.ConsoleLog(cfg.RunDir)
	state := filepath.Join(dir, "vm.state")
	if err := m.Snapshot(ctx, vmm.SnapshotSpec{StatePath: state}); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(console)
	tick, secret := lastTick(before)
	mem := cfg.MemoryFile
	size := int64(cfg.MemoryMB) << 20
	for round := 1; round <= 3; round++ {
		orig := fileHash(t, mem)
		rcfg := cfg
		rcfg.MemoryFile = mem
		r, err := d.Restore(ctx, rcfg, vmm.RestoreSpec{StatePath: state, MemoryPath: mem, MemoryPrivate: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.(*qemu.Machine).PrivateMemoryFile(); got != mem {
			t.Fatalf("PrivateMemoryFile %q, want %q", got, mem)
		}
		want := fmt.Sprintf("hearth-test: tick %d %s", tick+3, secret)
		log, err := vmmtest.WaitForConsole(ctx, console, int64(len(before)), want, waitExit(r))
		if err != nil {
			_ = r.Stop(ctx)
			t.Fatalf("round %d: %v\n%s", round, err, tail(log[len(before):]))
		}
		if bytes.Contains([]byte(log[len(before):]), []byte("hearth-test: ready")) {
			t.Fatalf("round %d: guest rebooted", round)
		}
		next := filepath.Join(dir, fmt.Sprintf("mem-%d.ram", round))
		pages, _, n := pagesToFile(t, next, size)
		nextState := filepath.Join(dir, fmt.Sprintf("vm-%d.state", round))
		live := round == 2
		t0 := time.Now()
		var stood time.Duration
		if live {
			stood, err = r.(vmm.LiveSnapshotter).SnapshotLive(ctx, vmm.SnapshotSpec{StatePath: nextState, Pages: pages})
		} else {
			err = r.Snapshot(ctx, vmm.SnapshotSpec{StatePath: nextState, Pages: pages})
		}
		if err != nil {
			_ = r.Stop(ctx)
			t.Fatalf("round %d: snapshot: %v", round, err)
		}
		took := time.Since(t0)
		if live && (stood <= 0 || stood > took) {
			t.Errorf("round %d: live snapshot stood still %s of %s", round, stood, took)
		}
		if err := r.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if got := fileHash(t, mem); got != orig {
			t.Fatalf("round %d: the RAM file restored from copy-on-write changed", round)
		}
		fi, err := os.Stat(nextState)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 8<<20 {
			t.Errorf("round %d: state is %d bytes: RAM stayed in the stream", round, fi.Size())
		}
		if total := int64(n[0]+n[1]) * 4096; total < size || !live && total != size {
			t.Errorf("round %d: %d data + %d zero pages = %d bytes, want all %d", round, n[0], n[1], total, size)
		}
		t.Logf("round %d (live %v): snapshot with pages split out took %s, guest stood still %s: state %d bytes, %d data pages, %d zero pages", round, live, took, stood, fi.Size(), n[0], n[1])
		before = []byte(log)
		if after, _ := os.ReadFile(console); len(after) > len(before) {
			before = after
		}
		tick, _ = lastTick(before)
		mem, state = next, nextState
	}
}

// TestPrivateSnapshotPeerDies kills QEMU while its pages are being split
// out of the stream: Snapshot fails (no hang, the page callback stops) and
// the RAM file it was restored from is untouched.
func TestPrivateSnapshotPeerDies(t *testing.T) {
	d := newTCG(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m0, cfg := startCounter(ctx, t, d, dir, "dies", 2)
	m := m0.(vmm.Snapshotter)
	state := filepath.Join(dir, "vm.state")
	if err := m.Snapshot(ctx, vmm.SnapshotSpec{StatePath: state}); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	orig := fileHash(t, cfg.MemoryFile)
	r, err := d.Restore(ctx, cfg, vmm.RestoreSpec{StatePath: state, MemoryPath: cfg.MemoryFile, MemoryPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	pid := r.PID()
	n := 0
	err = r.Snapshot(ctx, vmm.SnapshotSpec{StatePath: filepath.Join(dir, "vm2.state"), Pages: func(int64, []byte) error {
		if n++; n == 1000 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return nil
	}})
	if err == nil {
		t.Fatal("snapshot of a VMM killed mid-stream succeeded")
	}
	if ctx.Err() != nil {
		t.Fatalf("snapshot hung until the deadline: %v", err)
	}
	t.Logf("snapshot with the VMM killed after %d pages: %v", n, err)
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, pid)
	if got := fileHash(t, cfg.MemoryFile); got != orig {
		t.Fatal("the RAM file changed")
	}
}
