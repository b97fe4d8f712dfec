package vmmtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/hearth-sandbox/hearth/internal/envdclient"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// Target is one VMM driver under the conformance suite (Conformance).
type Target struct {
	Driver vmm.Driver
	// Config returns the config of a fresh machine whose per-VM files go
	// under dir (root disk, network and images ready). The suite sets
	// RunDir, and MemoryFile when the driver keeps memory in a shared file.
	Config func(t *testing.T, dir string) vmm.Config
	// Ready waits until a booted guest is up (for a real guest: envd
	// started). Nil: Start returning is enough (a fake VMM).
	Ready func(ctx context.Context, t *testing.T, m vmm.Machine, cfg vmm.Config) error
	// GuestAddr is the guest's envd address (host:port), dialled from
	// inside cfg.NetNS. Empty: the target runs no guest (a fake VMM), and
	// the suite says that it skipped the exec steps.
	GuestAddr string
	// Timeout bounds the whole suite (default 3 minutes).
	Timeout time.Duration
}

// Conformance is what every VMM driver must pass: boot, exec through envd,
// pause, snapshot, stop, restore (the guest continues with its memory),
// stop again, and nothing left behind. It runs the snapshot steps the
// driver's Capabilities declare; a driver that declares no snapshots must
// not implement vmm.Restorer.
func Conformance(t *testing.T, tg Target) {
	t.Helper()
	timeout := tg.Timeout
	if timeout == 0 {
		timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	caps := tg.Driver.Capabilities()
	dir := t.TempDir()
	cfg := tg.Config(t, dir)
	cfg.RunDir = filepath.Join(dir, "run")
	if caps.Memory == vmm.MemorySharedFile {
		cfg.MemoryFile = filepath.Join(dir, "guest.ram")
	}

	// Boot.
	m, err := tg.Driver.NewMachine(cfg)
	if err != nil {
		t.Fatalf("NewMachine: %v", err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background()) })
	if m.PID() <= 0 {
		t.Fatalf("PID %d after Start", m.PID())
	}
	if _, err := os.Stat(filepath.Join(cfg.RunDir, vmm.PIDFileName)); err != nil {
		t.Fatalf("pid file: %v", err)
	}
	if tg.Ready != nil {
		if err := tg.Ready(ctx, t, m, cfg); err != nil {
			t.Fatalf("boot: %v", err)
		}
	}

	// Exec through envd: leave a secret in guest memory (tmpfs).
	var guest *envdclient.Client
	secret := randomHex(t)
	if tg.GuestAddr == "" {
		t.Logf("conformance: %s runs no guest (a fake VMM): exec steps skipped", tg.Driver.Name())
	} else {
		guest = dialGuest(t, cfg.NetNS, tg.GuestAddr)
		retry(ctx, t, "envd init", func() error {
			return guest.Init(ctx, envdclient.InitRequest{AccessToken: secret}, "")
		})
		out := guestExec(ctx, t, guest, "echo "+secret+" > /dev/shm/conformance && cat /dev/shm/conformance")
		if out != secret {
			t.Fatalf("exec: stdout %q, want %q", out, secret)
		}
		t.Logf("conformance: exec through envd wrote %s to the guest's /dev/shm", secret)
	}

	restorer, canRestore := tg.Driver.(vmm.Restorer)
	sm, canSnapshot := m.(vmm.Snapshotter)
	if caps.Memory == vmm.MemoryNoSnapshot {
		if canRestore {
			t.Fatal("driver implements Restore but declares no snapshot memory model")
		}
		stopAndCheck(ctx, t, m, cfg)
		return
	}
	if !canRestore || !canSnapshot {
		t.Fatalf("capabilities declare snapshots (%s) but Restorer %v, Snapshotter %v", caps.Memory, canRestore, canSnapshot)
	}

	// Pause (idempotent) and snapshot.
	for i := range 2 {
		if err := sm.Pause(ctx); err != nil {
			t.Fatalf("Pause #%d: %v", i+1, err)
		}
	}
	snap := vmm.SnapshotSpec{StatePath: filepath.Join(dir, "vm.state")}
	restore := vmm.RestoreSpec{StatePath: snap.StatePath}
	switch caps.Memory {
	case vmm.MemorySharedFile:
		restore.MemoryPath = cfg.MemoryFile
	case vmm.MemoryVMMWritten:
		snap.MemoryPath = filepath.Join(dir, "vm.mem")
		restore.MemoryPath = snap.MemoryPath
	}
	if err := sm.Snapshot(ctx, snap); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	for _, p := range []string{snap.StatePath, restore.MemoryPath} {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Fatalf("snapshot file %s: %v", p, err)
		}
	}
	stopAndCheck(ctx, t, m, cfg)
	t.Logf("conformance: paused and snapshotted (memory %s), VMM stopped and reaped", caps.Memory)

	// Restore into a new process: the guest continues with its memory.
	r, err := restorer.Restore(ctx, cfg, restore)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	if r.PID() <= 0 || r.PID() == m.PID() {
		t.Fatalf("restored PID %d (before: %d)", r.PID(), m.PID())
	}
	if guest != nil {
		guest = dialGuest(t, cfg.NetNS, tg.GuestAddr)
		guest.SetAccessToken(secret)
		if out := guestExec(ctx, t, guest, "cat /dev/shm/conformance"); out != secret {
			t.Fatalf("after restore: /dev/shm/conformance %q, want %q", out, secret)
		}
		t.Logf("conformance: the restored guest still holds %s", secret)
	}
	stopAndCheck(ctx, t, r, cfg)
}

// stopAndCheck stops m twice (Stop is idempotent) and checks the process
// is reaped and its pid file gone.
func stopAndCheck(ctx context.Context, t *testing.T, m vmm.Machine, cfg vmm.Config) {
	t.Helper()
	pid := m.PID()
	for i := range 2 {
		if err := m.Stop(ctx); err != nil {
			t.Fatalf("Stop #%d: %v", i+1, err)
		}
	}
	if err := m.Wait(ctx); err != nil && ctx.Err() != nil {
		t.Fatalf("Wait after Stop: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("VMM pid %d still exists after Stop (kill 0: %v)", pid, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.RunDir, vmm.PIDFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pid file left after Stop: %v", err)
	}
}

// guestExec runs a shell command through envd.
func guestExec(ctx context.Context, t *testing.T, c *envdclient.Client, script string) string {
	t.Helper()
	var res envdclient.ExecResult
	retry(ctx, t, "exec "+script, func() (err error) {
		res, err = c.Exec(ctx, envdclient.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", script}, Timeout: 30 * time.Second})
		return err
	})
	if res.ExitCode != 0 {
		t.Fatalf("exec %q: exit %d: %s", script, res.ExitCode, res.Stderr)
	}
	return strings.TrimSpace(string(res.Stdout))
}

// retry calls fn until it succeeds, while envd is not reachable yet (a
// guest just booted or restored); it fails the test when ctx ends.
func retry(ctx context.Context, t *testing.T, what string, fn func() error) {
	t.Helper()
	for {
		err := fn()
		if err == nil {
			return
		}
		var ee *envdclient.Error
		if errors.As(err, &ee) {
			t.Fatalf("%s: %v", what, err) // envd answered: no point retrying
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v (last: %v)", what, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// dialGuest returns an envd client whose connections are made inside the
// network namespace at nsPath (the guest's address is only reachable
// there).
func dialGuest(t *testing.T, nsPath, addr string) *envdclient.Client {
	t.Helper()
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return dialInNS(ctx, nsPath, network, a)
		},
		DisableKeepAlives: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return envdclient.New("http://"+addr, "", &http.Client{Transport: tr})
}

// dialInNS creates the socket on a thread that joined the namespace; the
// thread is never returned to the scheduler (see internal/netns).
func dialInNS(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	if nsPath == "" {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			ch <- res{nil, fmt.Errorf("setns %s: %w", nsPath, err)}
			return
		}
		c, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
		ch <- res{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
