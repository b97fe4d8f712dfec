package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/pagesrv"
	"github.com/hearth-sandbox/hearth/internal/snapshot"
	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/firecracker/fcfake"
	"github.com/hearth-sandbox/hearth/internal/vmm/vmmtest"
)

type call = fcfake.Call

func readCalls(t *testing.T, record string) []call { return fcfake.ReadCalls(t, record, true) }

func ops(calls []call) []string { return fcfake.Ops(calls) }

// fakeEnv points a driver at the fake, with its stable disk directory in a
// temporary directory.
func fakeEnv(t *testing.T) (d *Driver, record string) {
	t.Helper()
	bin, record, _ := fcfake.Env(t)
	return New(Options{Binary: bin, StableDir: filepath.Join(t.TempDir(), "stable"), AllowRoot: true}), record
}

// skipIfNoMountNS skips when the VMM could not get its mount namespace.
func skipIfNoMountNS(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("needs CAP_SYS_ADMIN for the per-VM mount namespace: %v", err)
	}
}

func disk(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func testConfig(dir string) vmm.Config {
	return vmm.Config{
		ID: "sbx1", RunDir: filepath.Join(dir, "run"),
		KernelPath: "/images/kernel/vmlinux", InitrdPath: "/images/kernel/initramfs.cpio.gz",
		KernelArgs: "hearth.ip=169.254.0.21/30 hearth.gw=169.254.0.22",
		RootDisk:   filepath.Join(dir, "sbx1.ext4"), RootDiskFormat: "raw",
		VCPUs: 2, MemoryMB: 8, TapName: "tap0", MAC: "02:fc:00:00:00:05",
	}
}

func assertGone(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Fatalf("pid %d still exists after Stop: %v", pid, err)
	}
}

// TestBootPauseSnapshotRestore drives the fake through a full life:
// configure → start, pause, snapshot, stop, restore (File and Uffd).
func TestBootPauseSnapshotRestore(t *testing.T) {
	d, record := fakeEnv(t)
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
	m := m0.(*Machine)
	if pid := m.PID(); pid == 0 {
		t.Fatal("no pid")
	}
	if b, err := os.ReadFile(filepath.Join(cfg.RunDir, vmm.PIDFileName)); err != nil || len(b) == 0 {
		t.Fatalf("pid file: %q %v", b, err)
	}
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	snap := vmm.SnapshotSpec{StatePath: filepath.Join(dir, "vm.state"), MemoryPath: filepath.Join(dir, "mem"), Diff: true}
	if err := m.Snapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	pid := m.PID()
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, pid)
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.RunDir, vmm.PIDFileName)); !os.IsNotExist(err) {
		t.Fatalf("pid file left behind: %v", err)
	}

	calls := readCalls(t, record)
	want := []string{
		"PUT /logger", "PUT /machine-config", "PUT /boot-source", "PUT /drives/rootfs",
		"PUT /network-interfaces/eth0", "PUT /entropy", "PUT /actions",
		"PATCH /vm", "PATCH /vm", "PUT /snapshot/create",
	}
	if got := ops(calls); !reflect.DeepEqual(got, want) {
		t.Fatalf("calls:\n got %q\nwant %q", got, want)
	}
	var boot BootSource
	_ = json.Unmarshal(calls[2].Body, &boot)
	if boot.KernelImagePath != cfg.KernelPath || boot.InitrdPath != cfg.InitrdPath ||
		boot.BootArgs != "console=ttyS0 reboot=k panic=-1 pci=off "+cfg.KernelArgs {
		t.Errorf("boot source %+v", boot)
	}
	var drive Drive
	_ = json.Unmarshal(calls[3].Body, &drive)
	if drive.PathOnHost != d.RootDrivePath() || drive.PathOnHost == cfg.RootDisk {
		t.Errorf("drive path_on_host %q, want the stable %q", drive.PathOnHost, d.RootDrivePath())
	}
	// The fake read the disk through the stable path in its namespace.
	if note := calls[6].Note; !strings.Contains(note, `disk="disk-A"`) {
		t.Errorf("boot note %q: the VMM did not see disk A at the stable path", note)
	}
	if ents, err := os.ReadDir(d.opts.StableDir); err != nil || len(ents) != 0 {
		t.Errorf("host's stable dir: %d entries (%v), want empty", len(ents), err)
	}
	var create SnapshotCreateParams
	_ = json.Unmarshal(calls[9].Body, &create)
	if create != (SnapshotCreateParams{SnapshotPath: snap.StatePath, MemFilePath: snap.MemoryPath, SnapshotType: "Diff"}) {
		t.Errorf("snapshot/create body %s", calls[9].Body)
	}

	// A booted VM's first Diff holds every page: the store can take it
	// whole, and a page server serves it for the Uffd case.
	store := filepath.Join(dir, "store")
	servePages := func(t *testing.T, sock string) <-chan error {
		st, err := snapshot.NewStore(store, snapshot.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := snapshot.Open(store); errors.Is(err, snapshot.ErrNoSnapshot) {
			mem, err := os.Open(snap.MemoryPath)
			if err != nil {
				t.Fatal(err)
			}
			defer mem.Close()
			if err := st.WriteFull(ctx, mem, int64(cfg.MemoryMB)<<20); err != nil {
				t.Fatal(err)
			}
		}
		ss, err := snapshot.Open(store)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := pagesrv.Listen(sock)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			defer ss.Close()
			_, err := pagesrv.Serve(ctx, ln, pagesrv.Config{Snapshot: ss})
			done <- err
		}()
		return done
	}
	sock := filepath.Join(dir, "uffd.sock")
	tests := []struct {
		name string
		disk string
		spec vmm.RestoreSpec
		want SnapshotLoadParams
	}{
		{"file backend", "disk-B", vmm.RestoreSpec{StatePath: snap.StatePath, MemoryPath: snap.MemoryPath, TrackDirtyPages: true},
			SnapshotLoadParams{SnapshotPath: snap.StatePath, MemBackend: &MemoryBackend{"File", snap.MemoryPath},
				TrackDirtyPages: true, ResumeVM: true, NetworkOverrides: []NetworkOverride{{"eth0", "tap7"}}}},
		{"uffd backend, paused", "disk-C", vmm.RestoreSpec{StatePath: snap.StatePath, UffdSocket: sock, Paused: true},
			SnapshotLoadParams{SnapshotPath: snap.StatePath, MemBackend: &MemoryBackend{"Uffd", sock},
				NetworkOverrides: []NetworkOverride{{"eth0", "tap7"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.Truncate(record, 0); err != nil {
				t.Fatal(err)
			}
			// Another sandbox: its own disk and tap, the same snapshot.
			cfg := cfg
			cfg.ID, cfg.TapName = "sbx2", "tap7"
			cfg.RootDisk = disk(t, t.TempDir(), "sbx2.ext4", tc.disk)
			var served <-chan error
			if tc.spec.UffdSocket != "" {
				served = servePages(t, tc.spec.UffdSocket)
			}
			r, err := d.Restore(ctx, cfg, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.spec.Paused {
				if err := r.Pause(ctx); err != nil {
					t.Fatal(err)
				}
				if err := r.Resume(ctx); err != nil {
					t.Fatal(err)
				}
			}
			pid := r.PID()
			if err := r.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			assertGone(t, pid)
			calls := readCalls(t, record)
			wantOps := []string{"PUT /logger", "PUT /snapshot/load"}
			if !tc.spec.Paused {
				wantOps = append(wantOps, "PATCH /vm", "PATCH /vm")
			}
			if got := ops(calls); !reflect.DeepEqual(got, wantOps) {
				t.Fatalf("calls %q, want %q", got, wantOps)
			}
			var load SnapshotLoadParams
			if err := json.Unmarshal(calls[1].Body, &load); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(load, tc.want) {
				t.Errorf("snapshot/load body %s, want %+v", calls[1].Body, tc.want)
			}
			// The fake reopened the recorded (stable) drive path and found
			// this sandbox's disk there, and verified every memory page.
			if note := calls[1].Note; !strings.Contains(note, `disk="`+tc.disk+`"`) || !strings.Contains(note, "pages_verified=2048") || !strings.Contains(note, "tap=tap7") {
				t.Errorf("load note %q", note)
			}
			if served != nil {
				if err := <-served; err != nil {
					t.Errorf("page server: %v", err)
				}
			}
		})
	}
}

// TestStartFailsOnRejectedRequest: a request the VMM refuses fails Start
// and leaves no process behind.
func TestStartFailsOnRejectedRequest(t *testing.T) {
	d, _ := fakeEnv(t)
	dir := t.TempDir()
	cfg := testConfig(dir)
	disk(t, dir, "sbx1.ext4", "disk-A")
	cfg.VCPUs = 64 // the spec caps vcpu_count at 32
	m, err := d.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = m.Start(context.Background())
	skipIfNoMountNS(t, err)
	var apiErr *APIError
	if !errorsAs(err, &apiErr) || apiErr.Path != "/machine-config" || apiErr.Status != 400 {
		t.Fatalf("Start = %v, want a 400 from /machine-config", err)
	}
	assertGone(t, m.PID())
}

func errorsAs(err error, target **APIError) bool {
	for err != nil {
		if e, ok := err.(*APIError); ok {
			*target = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	d := New(Options{})
	base := testConfig(t.TempDir())
	tests := []struct {
		name   string
		mutate func(*vmm.Config)
	}{
		{"qcow2 disk", func(c *vmm.Config) { c.RootDiskFormat = "qcow2" }},
		{"no vcpus", func(c *vmm.Config) { c.VCPUs = 0 }},
		{"no kernel", func(c *vmm.Config) { c.KernelPath = "" }},
		{"long run dir", func(c *vmm.Config) { c.RunDir = "/" + string(make([]byte, 120)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.mutate(&cfg)
			if _, err := d.NewMachine(cfg); err == nil {
				t.Fatal("NewMachine accepted an invalid config")
			}
		})
	}
}

// TestRealFirecracker runs the conformance suite against the real binary
// where it can run: the tiny image boots to envd, commands run through
// envd, and a restored guest still holds what it wrote. Without the binary,
// KVM or the images it skips, saying which.
func TestRealFirecracker(t *testing.T) {
	bin, err := exec.LookPath("firecracker")
	if err != nil {
		t.Skip("needs the firecracker binary in PATH (github.com/firecracker-microvm/firecracker/releases) and a KVM host that boots stock kernels")
	}
	im := vmmtest.FindImages(t)
	vmmtest.RequireFile(t, im.Tiny)
	d := New(Options{Binary: bin, ProbeKernel: im.Kernel, StableDir: filepath.Join(t.TempDir(), "stable"), AllowRoot: true})
	if err := d.Probe(context.Background()); err != nil {
		t.Skipf("firecracker cannot run here: %v", err)
	}
	vmmtest.Conformance(t, realTarget(d, im, "", 0))
}

// realTarget boots the tiny image with a network under d; diskDir (empty:
// the test's run dir) holds the root disk's copy, uid > 0 runs the VM as
// that user.
func realTarget(d *Driver, im vmmtest.Images, diskDir string, uid int) vmmtest.Target {
	return vmmtest.Target{
		Driver: d,
		Config: func(t *testing.T, dir string) vmm.Config {
			ns, tap := vmmtest.NetNSWithTap(t)
			if diskDir == "" {
				diskDir = dir
			}
			return vmm.Config{
				ID: "conformance", KernelPath: im.Kernel, InitrdPath: im.Initrd,
				KernelArgs: "hearth.ip=169.254.0.21/30 hearth.gw=169.254.0.22",
				RootDisk:   vmmtest.CopyFile(t, im.Tiny, diskDir), RootDiskFormat: "raw", VCPUs: 1, MemoryMB: 256,
				NetNS: ns, TapName: tap, MAC: vmmtest.GuestMAC, RunAsUID: uid, RunAsGID: uid,
			}
		},
		Ready: func(ctx context.Context, t *testing.T, m vmm.Machine, cfg vmm.Config) error {
			exited := make(chan struct{})
			go func() { _ = m.Wait(context.Background()); close(exited) }()
			_, err := vmmtest.WaitForConsole(ctx, vmm.ConsoleLog(cfg.RunDir), 0, "hearth-init: envd started", exited)
			return err
		},
		GuestAddr: "169.254.0.21:49983",
	}
}

// TestStartMissingRootDisk: a disk that cannot be bound at the stable path
// fails Start naming it; no process or pid file is left.
func TestStartMissingRootDisk(t *testing.T) {
	d, _ := fakeEnv(t)
	cfg := testConfig(t.TempDir()) // its disk file is never created
	m, err := d.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = m.Start(context.Background())
	skipIfNoMountNS(t, err)
	if err == nil || !strings.Contains(err.Error(), cfg.RootDisk) {
		t.Fatalf("Start = %v, want an error naming %s", err, cfg.RootDisk)
	}
	if m.PID() != 0 {
		t.Fatalf("a process was started: pid %d", m.PID())
	}
	if _, err := os.Stat(filepath.Join(cfg.RunDir, vmm.PIDFileName)); !os.IsNotExist(err) {
		t.Fatalf("pid file: %v", err)
	}
}
