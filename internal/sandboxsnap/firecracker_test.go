package sandboxsnap

// Firecracker pause / resume / templates against the fake Firecracker
// (internal/vmm/firecracker/fcfake): the test binary re-executes itself as
// `firecracker`, every API request is validated against Firecracker's
// swagger spec, snapshot/create writes real Full and sparse Diff memory
// files, and snapshot/load with the Uffd backend performs Firecracker's
// side of the userfaultfd handshake with this package's page server and
// then reads every guest page back, failing the load on any byte that is
// not what was snapshotted.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	hrootfs "github.com/hearth-sandbox/hearth/internal/rootfs"
	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/firecracker"
	"github.com/hearth-sandbox/hearth/internal/vmm/firecracker/fcfake"
)

func TestMain(m *testing.M) {
	fcfake.Main()
	os.Exit(m.Run())
}

const fcMemMB = 16 // 4096 guest pages

var errInjected = errors.New("injected failure")

type fcHarness struct {
	t          *testing.T
	tmp        string
	d          *firecracker.Driver
	s          *Snapshotter
	record     string
	failCreate string
	failMemory atomic.Bool
}

func newFCHarness(t *testing.T) *fcHarness {
	t.Helper()
	bin, record, failCreate := fcfake.Env(t)
	h := &fcHarness{t: t, tmp: t.TempDir(), record: record, failCreate: failCreate}
	h.d = firecracker.New(firecracker.Options{Binary: bin, StableDir: filepath.Join(h.tmp, "stable"), AllowRoot: true})
	s, err := New(Options{
		Driver: h.d, DataDir: h.tmp, MemoryDir: filepath.Join(h.tmp, "shm"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		FailAt: func(step string) error {
			if step == "memory-read" && h.failMemory.Load() {
				return errInjected
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	return h
}

// config is sandbox id's machine with its own disk (first line "disk-<id>").
func (h *fcHarness) config(id, tap string) vmm.Config {
	h.t.Helper()
	disk := filepath.Join(h.tmp, id+".ext4")
	if err := os.WriteFile(disk, []byte("disk-"+id+"\n"), 0o644); err != nil {
		h.t.Fatal(err)
	}
	return vmm.Config{ID: id, RunDir: filepath.Join(h.tmp, "run-"+id), KernelPath: "/images/kernel/vmlinux",
		RootDisk: disk, RootDiskFormat: "raw", VCPUs: 1, MemoryMB: fcMemMB, TapName: tap, MAC: "02:fc:00:00:00:05"}
}

func (h *fcHarness) boot(ctx context.Context, cfg vmm.Config) vmm.Machine {
	h.t.Helper()
	m, err := h.d.NewMachine(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		if errors.Is(err, syscall.EPERM) {
			h.t.Skipf("needs CAP_SYS_ADMIN for the per-VM mount namespace: %v", err)
		}
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = m.Stop(context.Background()) })
	return m
}

func (h *fcHarness) restore(ctx context.Context, cfg vmm.Config, dir string) vmm.Machine {
	h.t.Helper()
	m, err := h.s.Restore(ctx, cfg, dir)
	if m != nil {
		h.t.Cleanup(func() { _ = m.Stop(context.Background()) })
	}
	if err != nil {
		h.t.Fatalf("restore %s from %s: %v", cfg.ID, dir, err)
	}
	// Served lazily by this process: a restarted agent must not adopt it.
	if !h.s.ServedByPageServer(cfg) {
		h.t.Errorf("restored %s: ServedByPageServer false while its page server runs", cfg.ID)
	}
	return m
}

// pause pauses m into dir and checks the VMM is gone, the page-server
// socket removed and the stored memory equal to what the VMM snapshotted.
func (h *fcHarness) pause(ctx context.Context, m vmm.Machine, cfg vmm.Config, dir string) {
	h.t.Helper()
	pid := m.PID()
	if err := h.s.Pause(ctx, m, cfg, dir); err != nil {
		h.t.Fatalf("pause %s: %v", cfg.ID, err)
	}
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		h.t.Fatalf("firecracker %d still exists after pause: %v", pid, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.RunDir, uffdSockName)); !errors.Is(err, os.ErrNotExist) {
		h.t.Errorf("page-server socket left after pause: %v", err)
	}
	if h.s.ServedByPageServer(cfg) {
		h.t.Errorf("paused %s: ServedByPageServer still true", cfg.ID)
	}
	h.checkStored(dir)
}

// checkStored compares the store's memory with the checksum the VMM wrote
// into the device state of the same snapshot.
func (h *fcHarness) checkStored(dir string) {
	h.t.Helper()
	snap, state, err := openCommitted(dir)
	if err != nil {
		h.t.Fatal(err)
	}
	defer snap.Close()
	st, err := fcfake.ReadState(state)
	if err != nil {
		h.t.Fatal(err)
	}
	hs := sha256.New()
	if _, err := io.Copy(hs, io.NewSectionReader(snap, 0, snap.Size())); err != nil {
		h.t.Fatal(err)
	}
	if got := hex.EncodeToString(hs.Sum(nil)); got != st.MemSHA256 {
		h.t.Fatalf("stored memory of %s (seq %d, %s snapshot) has sha256 %s, the VMM snapshotted %s", dir, snap.Seq(), st.Kind, got, st.MemSHA256)
	}
}

func (h *fcHarness) calls() []fcfake.Call { return fcfake.ReadCalls(h.t, h.record, false) }

// creates lists the snapshot_type of every snapshot/create, with "!" for
// the ones the VMM refused.
func creates(t *testing.T, calls []fcfake.Call) []string {
	t.Helper()
	var out []string
	for _, c := range calls {
		if c.Path != "/snapshot/create" {
			continue
		}
		var p firecracker.SnapshotCreateParams
		if err := json.Unmarshal(c.Body, &p); err != nil {
			t.Fatal(err)
		}
		if c.Status != 204 {
			p.SnapshotType += "!"
		}
		out = append(out, p.SnapshotType)
	}
	return out
}

// loadOf returns the snapshot/load call made by the VMM process pid.
func loadOf(t *testing.T, calls []fcfake.Call, pid int) fcfake.Call {
	t.Helper()
	for _, c := range calls {
		if c.Path == "/snapshot/load" && c.PID == pid {
			return c
		}
	}
	t.Fatalf("no snapshot/load from pid %d", pid)
	return fcfake.Call{}
}

// checkLoad asserts the load of m: the Uffd backend on the sandbox's
// page-server socket, dirty tracking, the tap override, every page
// verified by the VMM and its own disk found at the stable path.
func checkLoad(t *testing.T, calls []fcfake.Call, m vmm.Machine, cfg vmm.Config) {
	t.Helper()
	c := loadOf(t, calls, m.PID())
	if c.Status != 204 {
		t.Fatalf("snapshot/load refused: %s", c.Error)
	}
	var p firecracker.SnapshotLoadParams
	if err := json.Unmarshal(c.Body, &p); err != nil {
		t.Fatal(err)
	}
	want := firecracker.SnapshotLoadParams{
		SnapshotPath:     p.SnapshotPath,
		MemBackend:       &firecracker.MemoryBackend{BackendType: "Uffd", BackendPath: filepath.Join(cfg.RunDir, uffdSockName)},
		TrackDirtyPages:  true,
		ResumeVM:         true,
		NetworkOverrides: []firecracker.NetworkOverride{{IfaceID: "eth0", HostDevName: cfg.TapName}},
	}
	if b1, _ := json.Marshal(p); string(b1) != string(mustJSON(t, want)) {
		t.Errorf("snapshot/load body %s, want %s", b1, mustJSON(t, want))
	}
	for _, s := range []string{"backend=Uffd", "pages_verified=" + strconv.Itoa(fcMemMB<<20/4096), `disk="disk-` + cfg.ID + `"`, "tap=" + cfg.TapName} {
		if !strings.Contains(c.Note, s) {
			t.Errorf("load of %s: note %q lacks %q", cfg.ID, c.Note, s)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFirecrackerPauseResume: boot → pause (Full) → resume / pause (Diff)
// cycles, a failed snapshot/create and a pause failing after a successful
// create (both followed by a Full), every resume served by the page server
// through the Uffd handshake with all bytes checked by the VMM, and every
// stored snapshot checked against what the VMM wrote.
func TestFirecrackerPauseResume(t *testing.T) {
	h := newFCHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := h.config("fc1", "tap0")
	dir := filepath.Join(h.tmp, "snap-fc1")
	m := h.boot(ctx, cfg)
	h.pause(ctx, m, cfg, dir) // Full

	for i := 1; i <= 3; i++ { // resume → pause: Diff
		cfg.TapName = "tap" + strconv.Itoa(i) // a new network slot each time
		m = h.restore(ctx, cfg, dir)
		checkLoad(t, h.calls(), m, cfg)
		h.pause(ctx, m, cfg, dir)
	}
	info, err := Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Generations != 4 || info.MemoryBytes != fcMemMB<<20 || info.StoredBytes >= 2*info.MemoryBytes {
		t.Errorf("after 1 full + 3 diffs: %+v", info)
	}
	if _, err := os.Stat(filepath.Join(dir, workingSetName)); err != nil {
		t.Errorf("no working set recorded for prefetch: %v", err)
	}

	// snapshot/create refused: the pause fails, the VM runs on, and the
	// next snapshot is Full.
	m = h.restore(ctx, cfg, dir)
	prev, _ := Stat(dir)
	if err := os.WriteFile(h.failCreate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Pause(ctx, m, cfg, dir); err == nil || !strings.Contains(err.Error(), "snapshot/create") {
		t.Fatalf("pause with a failing snapshot/create = %v", err)
	}
	if err := syscall.Kill(m.PID(), 0); err != nil {
		t.Fatalf("VM not running after a failed pause: %v", err)
	}
	if now, _ := Stat(dir); now.Seq != prev.Seq || !Committed(dir) {
		t.Fatalf("failed pause changed the snapshot: %+v → %+v", prev, now)
	}
	os.Remove(h.failCreate)
	h.pause(ctx, m, cfg, dir)

	// The pause fails after a successful create (which reset the VMM's
	// dirty bitmap): the next snapshot must be Full, or the pages dirtied
	// before that create would be lost (checkStored and the next resume's
	// page check would catch it).
	m = h.restore(ctx, cfg, dir)
	h.failMemory.Store(true)
	if err := h.s.Pause(ctx, m, cfg, dir); !errors.Is(err, errInjected) {
		t.Fatalf("pause with a failing memory write = %v", err)
	}
	h.failMemory.Store(false)
	h.pause(ctx, m, cfg, dir)
	m = h.restore(ctx, cfg, dir)
	checkLoad(t, h.calls(), m, cfg)

	got := creates(t, h.calls())
	want := []string{"Full", "Diff", "Diff", "Diff", "Diff!", "Full", "Diff", "Full"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("snapshot/create types %q, want %q", got, want)
	}
	// The whole sequence of one resume → pause, as Firecracker sees it.
	var seq []string
	for _, c := range h.calls() {
		if c.PID == m.PID() {
			seq = append(seq, c.Method+" "+c.Path)
		}
	}
	if strings.Join(seq, ",") != "PUT /logger,PUT /snapshot/load" {
		t.Errorf("restore calls %q", seq)
	}
	for _, c := range h.calls() {
		if c.Status != 204 && !strings.Contains(c.Error, "injected") {
			t.Errorf("%s %s refused: %s (%s)", c.Method, c.Path, c.Error, c.Body)
		}
	}
	pid := m.PID()
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Fatalf("firecracker %d left: %v", pid, err)
	}
	if err := h.s.Remove(ctx, cfg.ID, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("snapshot dir left: %v", err)
	}
}

// TestFirecrackerTemplate: a template exported from a paused sandbox spawns
// two sandboxes concurrently; each VMM finds its own disk at the recorded
// (stable) drive path and the template's memory, byte for byte; they then
// diverge, pause and resume independently.
func TestFirecrackerTemplate(t *testing.T) {
	h := newFCHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := h.config("src", "tap0")
	srcDir := filepath.Join(h.tmp, "snap-src")
	h.pause(ctx, h.boot(ctx, src), src, srcDir)
	m := h.restore(ctx, src, srcDir) // a Diff generation, so Export flattens a chain
	h.pause(ctx, m, src, srcDir)
	tdir := filepath.Join(h.tmp, "templates", "t1", "snapshot")
	if err := h.s.Export(ctx, srcDir, tdir); err != nil {
		t.Fatal(err)
	}
	h.checkStored(tdir)
	// The source's disk is gone: a spawn that opened the path of the
	// source's disk instead of the stable one would fail.
	if err := os.Remove(src.RootDisk); err != nil {
		t.Fatal(err)
	}

	cfgs := []vmm.Config{h.config("kid1", "tap1"), h.config("kid2", "tap2")}
	ms := make([]vmm.Machine, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Go(func() {
			ms[i], errs[i] = h.s.Restore(ctx, cfg, tdir)
		})
	}
	wg.Wait()
	for i := range cfgs {
		if ms[i] != nil {
			t.Cleanup(func() { _ = ms[i].Stop(context.Background()) })
		}
		if errs[i] != nil {
			t.Fatalf("spawn %s: %v", cfgs[i].ID, errs[i])
		}
	}
	calls := h.calls()
	for i, cfg := range cfgs {
		checkLoad(t, calls, ms[i], cfg)
	}
	// Both loaded the template's state: the same memory.
	if a, b := loadOf(t, calls, ms[0].PID()).Note, loadOf(t, calls, ms[1].PID()).Note; sha(a) != sha(b) || sha(a) == "" {
		t.Errorf("spawned sandboxes loaded different memory: %q vs %q", a, b)
	}
	// Diverge, pause (each into its own directory: Full), resume.
	dirs := make([]string, len(cfgs))
	for i, cfg := range cfgs {
		dirs[i] = filepath.Join(h.tmp, "snap-"+cfg.ID)
		h.pause(ctx, ms[i], cfg, dirs[i])
	}
	s0, s1 := stateSHA(t, dirs[0]), stateSHA(t, dirs[1])
	if s0 == s1 {
		t.Error("spawned sandboxes did not diverge")
	}
	for i, cfg := range cfgs {
		ms[i] = h.restore(ctx, cfg, dirs[i])
		checkLoad(t, h.calls(), ms[i], cfg)
	}
	if got := creates(t, h.calls()); strings.Join(got, " ") != "Full Diff Full Full" {
		t.Errorf("snapshot/create types %q", got)
	}
	h.checkStored(tdir) // the template is unchanged
}

func sha(note string) string {
	for _, f := range strings.Fields(note) {
		if v, ok := strings.CutPrefix(f, "sha256="); ok {
			return v
		}
	}
	return ""
}

func stateSHA(t *testing.T, dir string) string {
	t.Helper()
	snap, state, err := openCommitted(dir)
	if err != nil {
		t.Fatal(err)
	}
	snap.Close()
	st, err := fcfake.ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	return st.MemSHA256
}

// TestRealFirecrackerPauseResume runs boot → pause → resume with the real
// VMM where it can run.
func TestRealFirecrackerPauseResume(t *testing.T) {
	bin, err := exec.LookPath("firecracker")
	if err != nil {
		t.Skip("needs the firecracker binary in PATH (github.com/firecracker-microvm/firecracker/releases) and a KVM host that boots stock kernels (this host's /dev/kvm is nested PVM)")
	}
	images := os.Getenv("HEARTH_IMAGES_DIR")
	kernel := filepath.Join(images, "images", "kernel", "vmlinux")
	rootfs := filepath.Join(images, "images", "rootfs.ext4")
	if _, err := os.Stat(kernel); images == "" || err != nil {
		t.Skip("needs HEARTH_IMAGES_DIR with images/kernel/vmlinux and images/rootfs.ext4 (hearth image build)")
	}
	d := firecracker.New(firecracker.Options{Binary: bin, ProbeKernel: kernel, AllowRoot: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := d.Probe(ctx); err != nil {
		t.Skipf("firecracker cannot run here: %v", err)
	}
	tmp := t.TempDir()
	disk := filepath.Join(tmp, "rootfs.ext4")
	if err := hrootfs.CopyFile(rootfs, disk); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Driver: d, DataDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	cfg := vmm.Config{ID: "real1", RunDir: filepath.Join(tmp, "run"), KernelPath: kernel, RootDisk: disk, VCPUs: 1, MemoryMB: 256}
	m, err := d.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background())
	time.Sleep(2 * time.Second) // let the guest boot: a snapshot of early boot may not resume
	dir := filepath.Join(tmp, "snap")
	for range 2 {
		if err := s.Pause(ctx, m, cfg, dir); err != nil {
			t.Fatal(err)
		}
		if m, err = s.Restore(ctx, cfg, dir); err != nil {
			t.Fatal(err)
		}
		defer m.Stop(context.Background())
	}
	// Restored guests write to the console again when they run.
	b, _ := os.ReadFile(vmm.ConsoleLog(cfg.RunDir))
	if len(b) == 0 {
		t.Error("no guest console output")
	}
}
