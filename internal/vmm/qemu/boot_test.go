package qemu_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/qemu"
	"github.com/hearth-sandbox/hearth/internal/vmm/vmmtest"
)

// EnvdMarker is what the guest init prints once envd runs.
const envdMarker = "hearth-init: envd started"

// tinyKernelArgs: the image's initramfs mounts hearth.root (default
// /dev/vda); the guest network parameters are harmless without a tap.
const tinyKernelArgs = "hearth.ip=169.254.0.21/30 hearth.gw=169.254.0.22"

func newTCG(t testing.TB) *qemu.Driver {
	t.Helper()
	vmmtest.RequireQEMU(t)
	d := qemu.New(qemu.Options{Accel: qemu.AccelTCG})
	if err := d.Probe(context.Background()); err != nil {
		t.Skipf("qemu probe: %v", err)
	}
	return d
}

func assertGone(t testing.TB, pid int) {
	t.Helper()
	if pid == 0 {
		t.Fatal("machine had no pid")
	}
	// Reaped children are gone entirely (no zombie): kill(pid, 0) = ESRCH.
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Fatalf("VMM pid %d still exists after Stop (kill 0: %v)", pid, err)
	}
}

func bootTiny(t testing.TB, d *qemu.Driver, im vmmtest.Images, dir string) (vmm.Machine, string) {
	t.Helper()
	disk := vmmtest.CopyFile(t, im.Tiny, dir)
	// The guest init waits for eth0, so give it one: a tap in a netns (this
	// also runs QEMU through the NetNS path).
	ns, tap := vmmtest.NetNSWithTap(t)
	cfg := vmm.Config{
		ID: "tiny", RunDir: filepath.Join(dir, "run"),
		KernelPath: im.Kernel, InitrdPath: im.Initrd, KernelArgs: tinyKernelArgs,
		RootDisk: disk, RootDiskFormat: "raw", VCPUs: 1, MemoryMB: 256,
		NetNS: ns, TapName: tap, MAC: vmmtest.GuestMAC,
	}
	m, err := d.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m, vmm.ConsoleLog(cfg.RunDir)
}

func waitExit(m vmm.Machine) <-chan struct{} {
	ch := make(chan struct{})
	go func() { _ = m.Wait(context.Background()); close(ch) }()
	return ch
}

// tinyTCG returns a TCG driver and the images the tiny guest boots from,
// or skips saying what is missing.
func tinyTCG(t testing.TB) (*qemu.Driver, vmmtest.Images) {
	t.Helper()
	d := newTCG(t)
	im := vmmtest.FindImages(t)
	vmmtest.RequireFile(t, im.Tiny)
	if im.Initrd == "" {
		t.Skip("needs the initramfs next to the kernel (images/kernel/initramfs.cpio): it loads virtio_blk")
	}
	return d, im
}

func TestBootTinyToEnvd(t *testing.T) {
	d, im := tinyTCG(t)
	m, console := bootTiny(t, d, im, t.TempDir())
	pid := m.PID()
	t.Cleanup(func() { _ = m.Stop(context.Background()) })

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if log, err := vmmtest.WaitForConsole(ctx, console, 0, envdMarker, waitExit(m)); err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, tail(log))
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	assertGone(t, pid)
}

var tickRE = regexp.MustCompile(`hearth-test: tick (\d+) ([0-9a-f-]+)`)

// lastTick returns the highest tick and its secret in b.
func lastTick(b []byte) (int, string) {
	n, secret := 0, ""
	for _, m := range tickRE.FindAllSubmatch(b, -1) {
		v, _ := strconv.Atoi(string(m[1]))
		if v > n {
			n, secret = v, string(m[2])
		}
	}
	return n, secret
}

// TestPauseSnapshotRestoreKeepsGuestProcess boots a busybox guest whose
// shell holds a random secret in memory and prints a counter, snapshots it
// (file-backed RAM + x-ignore-shared), kills the VMM, restores into a new
// QEMU process, and checks the same shell continues: the counter goes on
// from where it stopped (not from 1) and prints the same secret.
func TestPauseSnapshotRestoreKeepsGuestProcess(t *testing.T) {
	d := newTCG(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m0, cfg := startCounter(ctx, t, d, dir, "counter", 3)
	m := m0.(vmm.Snapshotter)
	console := vmm.ConsoleLog(cfg.RunDir)

	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := m0.(*qemu.Machine).QMP().QueryStatus(ctx)
	if err != nil || st.Status != "paused" {
		t.Fatalf("after Pause: status %+v, %v", st, err)
	}
	state := filepath.Join(dir, "vm.state")
	if err := m.Snapshot(ctx, vmm.SnapshotSpec{StatePath: state}); err != nil {
		t.Fatal(err)
	}
	pid := m.PID()
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, pid)
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	// x-ignore-shared keeps the 256 MiB of RAM out of the stream.
	if fi.Size() > 8<<20 {
		t.Errorf("state file is %d bytes: RAM was not skipped (x-ignore-shared)", fi.Size())
	}
	before, _ := os.ReadFile(console)
	lastBefore, secret := lastTick(before)
	if secret == "" {
		t.Fatalf("no tick before pause:\n%s", tail(string(before)))
	}

	r, err := d.Restore(ctx, cfg, vmm.RestoreSpec{StatePath: state})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	want := fmt.Sprintf("hearth-test: tick %d %s", lastBefore+3, secret)
	log, err := vmmtest.WaitForConsole(ctx, console, int64(len(before)), want, waitExit(r))
	if err != nil {
		t.Fatalf("%v\nafter restore:\n%s", err, tail(log[len(before):]))
	}
	after := []byte(log[len(before):])
	if bytes.Contains(after, []byte("hearth-test: tick 1 ")) || bytes.Contains(after, []byte("hearth-test: ready")) {
		t.Fatalf("guest rebooted instead of continuing:\n%s", tail(string(after)))
	}
	if first := tickRE.FindSubmatch(after); first == nil || string(first[2]) != secret {
		t.Fatalf("first tick after restore %q, want secret %s", first, secret)
	} else {
		t.Logf("last tick before pause: %d; first after restore: %s (secret %s, state file %d bytes)", lastBefore, first[1], secret, fi.Size())
	}
	pid = r.PID()
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, pid)
}

// startCounter boots a busybox guest whose shell keeps a random secret in
// memory and prints "hearth-test: tick N secret" (RAM in a file, as pauses
// need), and waits for tick `until`. The machine is stopped at cleanup.
func startCounter(ctx context.Context, t *testing.T, d *qemu.Driver, dir, id string, until int) (vmm.Machine, vmm.Config) {
	t.Helper()
	im := vmmtest.FindImages(t)
	initrd := vmmtest.BusyboxInitramfs(t, dir, vmmtest.CounterInit)
	cfg := vmm.Config{
		ID: id, RunDir: filepath.Join(dir, "run"),
		KernelPath: im.Kernel, InitrdPath: initrd, KernelArgs: "quiet",
		VCPUs: 1, MemoryMB: 256, MemoryFile: filepath.Join(dir, "mem.ram"),
	}
	m, err := d.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background()) })
	if log, err := vmmtest.WaitForConsole(ctx, vmm.ConsoleLog(cfg.RunDir), 0, fmt.Sprintf("hearth-test: tick %d ", until), waitExit(m)); err != nil {
		t.Fatalf("%v\n%s", err, tail(log))
	}
	return m, cfg
}

func tail(s string) string {
	if len(s) > 3000 {
		return "..." + s[len(s)-3000:]
	}
	return s
}

func BenchmarkColdBootTinyToEnvd(b *testing.B) {
	d := newTCG(b)
	im := vmmtest.FindImages(b)
	vmmtest.RequireFile(b, im.Tiny)
	if im.Initrd == "" {
		b.Skip("needs images/kernel/initramfs.cpio")
	}
	for b.Loop() {
		dir := b.TempDir()
		b.StopTimer()
		disk := vmmtest.CopyFile(b, im.Tiny, dir)
		ns, tap := vmmtest.NetNSWithTap(b)
		b.StartTimer()
		m, err := d.NewMachine(vmm.Config{
			ID: "bench", RunDir: filepath.Join(dir, "run"),
			KernelPath: im.Kernel, InitrdPath: im.Initrd, KernelArgs: tinyKernelArgs,
			RootDisk: disk, VCPUs: 1, MemoryMB: 256,
			NetNS: ns, TapName: tap, MAC: vmmtest.GuestMAC,
		})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		if err := m.Start(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := vmmtest.WaitForConsole(ctx, filepath.Join(dir, "run", vmm.ConsoleLogName), 0, envdMarker, waitExit(m)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = m.Stop(ctx)
		cancel()
		b.StartTimer()
	}
}

// BenchmarkPauseRestore measures snapshot (stop + state to file) and
// restore (new QEMU + load + cont) of a 256 MiB busybox guest; ns/op is the
// sum, the custom metrics split it.
func BenchmarkPauseRestore(b *testing.B) {
	d := newTCG(b)
	im := vmmtest.FindImages(b)
	dir := b.TempDir()
	initrd := vmmtest.BusyboxInitramfs(b, dir, vmmtest.CounterInit)
	cfg := vmm.Config{
		ID: "bench", RunDir: filepath.Join(dir, "run"), KernelPath: im.Kernel, InitrdPath: initrd,
		KernelArgs: "quiet", VCPUs: 1, MemoryMB: 256, MemoryFile: filepath.Join(dir, "mem.ram"),
	}
	ctx := context.Background()
	m0, err := d.NewMachine(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := m0.Start(ctx); err != nil {
		b.Fatal(err)
	}
	m := m0.(vmm.Snapshotter)
	defer func() { _ = m.Stop(ctx) }()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := vmmtest.WaitForConsole(wctx, vmm.ConsoleLog(cfg.RunDir), 0, "hearth-test: tick 2 ", waitExit(m)); err != nil {
		b.Fatal(err)
	}
	var pauseNS, restoreNS time.Duration
	state := filepath.Join(dir, "vm.state")
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if err := m.Snapshot(ctx, vmm.SnapshotSpec{StatePath: state}); err != nil {
			b.Fatal(err)
		}
		if err := m.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		m, err = d.Restore(ctx, cfg, vmm.RestoreSpec{StatePath: state})
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		pauseNS += t1.Sub(t0)
		restoreNS += t2.Sub(t1)
	}
	b.ReportMetric(float64(pauseNS.Milliseconds())/float64(b.N), "pause-ms/op")
	b.ReportMetric(float64(restoreNS.Milliseconds())/float64(b.N), "restore-ms/op")
}
