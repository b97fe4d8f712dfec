package firecracker

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/vmm"
)

func testConfig(dir string) vmm.Config {
	return vmm.Config{
		ID: "sbx1", RunDir: filepath.Join(dir, "run"),
		KernelPath: "/images/kernel/vmlinux", InitrdPath: "/images/kernel/initramfs.cpio.gz",
		KernelArgs: "hearth.ip=169.254.0.21/30 hearth.gw=169.254.0.22",
		RootDisk:   "/disks/sbx1.ext4", RootDiskFormat: "raw",
		VCPUs: 2, MemoryMB: 512, TapName: "tap0", MAC: "02:fc:00:00:00:05",
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	m0, err := d.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m0.Start(ctx); err != nil {
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
	var create SnapshotCreateParams
	_ = json.Unmarshal(calls[9].Body, &create)
	if create != (SnapshotCreateParams{SnapshotPath: snap.StatePath, MemFilePath: snap.MemoryPath, SnapshotType: "Diff"}) {
		t.Errorf("snapshot/create body %s", calls[9].Body)
	}

	tests := []struct {
		name string
		spec vmm.RestoreSpec
		want SnapshotLoadParams
	}{
		{"file backend", vmm.RestoreSpec{StatePath: snap.StatePath, MemoryPath: snap.MemoryPath, TrackDirtyPages: true},
			SnapshotLoadParams{SnapshotPath: snap.StatePath, MemBackend: &MemoryBackend{"File", snap.MemoryPath},
				TrackDirtyPages: true, ResumeVM: true, NetworkOverrides: []NetworkOverride{{"eth0", "tap0"}}}},
		{"uffd backend, paused", vmm.RestoreSpec{StatePath: snap.StatePath, UffdSocket: "/run/pagesrv.sock", Paused: true},
			SnapshotLoadParams{SnapshotPath: snap.StatePath, MemBackend: &MemoryBackend{"Uffd", "/run/pagesrv.sock"},
				NetworkOverrides: []NetworkOverride{{"eth0", "tap0"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.Truncate(record, 0); err != nil {
				t.Fatal(err)
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
		})
	}
}

// TestStartFailsOnRejectedRequest: a request the VMM refuses fails Start
// and leaves no process behind.
func TestStartFailsOnRejectedRequest(t *testing.T) {
	d, _ := fakeEnv(t)
	cfg := testConfig(t.TempDir())
	cfg.VCPUs = 64 // the spec caps vcpu_count at 32
	m, err := d.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = m.Start(context.Background())
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

// TestRealFirecracker boots a guest with the real binary where it can run.
func TestRealFirecracker(t *testing.T) {
	bin, err := exec.LookPath("firecracker")
	if err != nil {
		t.Skip("needs the firecracker binary in PATH (github.com/firecracker-microvm/firecracker/releases) and a KVM host that boots stock kernels")
	}
	kernel := filepath.Join(os.Getenv("HEARTH_IMAGES_DIR"), "images", "kernel", "vmlinux")
	if _, err := os.Stat(kernel); os.Getenv("HEARTH_IMAGES_DIR") == "" || err != nil {
		t.Skip("needs HEARTH_IMAGES_DIR with images/kernel/vmlinux (hearth image build)")
	}
	d := New(Options{Binary: bin, ProbeKernel: kernel})
	if err := d.Probe(context.Background()); err != nil {
		t.Skipf("firecracker cannot run here: %v", err)
	}
}
