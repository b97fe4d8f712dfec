package agent

// Consumer-side fakes for the parts that need a VM or root (VMM, network
// slots, envd inside a guest). Each records what it holds so tests can
// assert that nothing leaks.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

var errInjected = errors.New("injected failure")

// --- VMM ---

type fakeDriver struct {
	mu        sync.Mutex
	failNew   bool
	failStart bool
	dieOnBoot bool // the VMM exits right after Start (guest never boots)
	holdDisk  bool // the VMM keeps its root disk open while it runs, as a real one does
	configs   []vmm.Config
	machines  []*fakeMachine
}

func (d *fakeDriver) Name() string { return "fake" }
func (d *fakeDriver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{SnapshotFormat: "fake"}
}
func (d *fakeDriver) Probe(context.Context) error { return nil }
func (d *fakeDriver) NewMachine(cfg vmm.Config) (vmm.Machine, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failNew {
		return nil, errInjected
	}
	m := &fakeMachine{cfg: cfg, done: make(chan struct{}), failStart: d.failStart, dieOnBoot: d.dieOnBoot, holdDisk: d.holdDisk}
	d.configs = append(d.configs, cfg)
	d.machines = append(d.machines, m)
	return m, nil
}

// live counts machines whose "process" is running.
func (d *fakeDriver) live() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, m := range d.machines {
		if m.running() {
			n++
		}
	}
	return n
}

func (d *fakeDriver) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.machines)
}

type fakeMachine struct {
	cfg       vmm.Config
	failStart bool
	dieOnBoot bool
	holdDisk  bool

	mu      sync.Mutex
	started bool
	stopped bool
	done    chan struct{}
	disk    *os.File // open while running (holdDisk)
}

func (m *fakeMachine) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return errors.New("started twice")
	}
	m.started = true
	if m.holdDisk {
		f, err := os.Open(m.cfg.RootDisk)
		if err != nil {
			return err
		}
		m.disk = f
	}
	if m.failStart {
		// Like a VMM that was spawned and then failed its handshake: the
		// process exists until Stop.
		return errInjected
	}
	if m.dieOnBoot {
		m.exitLocked()
	}
	return nil
}

func (m *fakeMachine) exitLocked() {
	if !m.stopped {
		m.stopped = true
		if m.disk != nil {
			m.disk.Close()
		}
		close(m.done)
	}
}

// crash simulates the VMM process dying.
func (m *fakeMachine) crash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.exitLocked()
}

func (m *fakeMachine) Stop(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.exitLocked()
	return nil
}

func (m *fakeMachine) Wait(ctx context.Context) error {
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *fakeMachine) PID() int { return 0 }

func (m *fakeMachine) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.started && !m.stopped
}

// --- root disks ---

// fakeDisks creates sparse files; it stands in for the rootfs backends,
// which another package tests with real images.
type fakeDisks struct {
	dir string

	mu         sync.Mutex
	failCreate bool
	failRemove bool
	sizes      map[string]int64 // sandbox → sizeBytes asked for
	removes    int
}

func newFakeDisks(t *testing.T) *fakeDisks {
	return &fakeDisks{dir: t.TempDir(), sizes: map[string]int64{}}
}

func (f *fakeDisks) Name() string { return "fake" }

func (f *fakeDisks) path(id string) string { return filepath.Join(f.dir, id+".ext4") }

func (f *fakeDisks) Create(_ context.Context, id, base string, size int64) (rootfs.Disk, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := os.Stat(base); err != nil {
		return rootfs.Disk{}, err
	}
	// Create the file first: a failing backend may leave a partial disk
	// that Remove must clean up.
	if err := os.WriteFile(f.path(id), nil, 0o600); err != nil {
		return rootfs.Disk{}, err
	}
	if f.failCreate {
		return rootfs.Disk{}, errInjected
	}
	if err := os.Truncate(f.path(id), size); err != nil {
		return rootfs.Disk{}, err
	}
	f.sizes[id] = size
	return rootfs.Disk{Path: f.path(id), Format: "raw"}, nil
}

func (f *fakeDisks) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failRemove {
		return errInjected
	}
	if err := os.Remove(f.path(id)); err == nil {
		f.removes++
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	delete(f.sizes, id)
	return nil
}

func (f *fakeDisks) Lookup(_ context.Context, id string) (rootfs.Disk, error) {
	if _, err := os.Stat(f.path(id)); err != nil {
		return rootfs.Disk{}, err
	}
	return rootfs.Disk{Path: f.path(id), Format: "raw"}, nil
}

func (f *fakeDisks) files(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// --- network ---

type fakeNet struct {
	// addrFor, when set, gives a new slot's Address (e.g. the host:port of
	// an envd started for that sandbox on this host).
	addrFor func(sandboxID string) string

	mu        sync.Mutex
	failSetup bool
	slots     map[string]NetSlot
	policies  map[string]egress.Policy // by Setup and SetPolicy
	partial   map[string]bool          // left behind by a failed Setup
	setups    int
	stale     int
}

func newFakeNet() *fakeNet {
	return &fakeNet{slots: map[string]NetSlot{}, policies: map[string]egress.Policy{}, partial: map[string]bool{}}
}

func (n *fakeNet) Setup(_ context.Context, id string, o NetOptions) (NetSlot, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.slots[id]; ok {
		return NetSlot{}, fmt.Errorf("slot %s exists", id)
	}
	if n.failSetup {
		n.partial[id] = true
		return NetSlot{}, errInjected
	}
	n.setups++
	s := NetSlot{Address: fmt.Sprintf("10.200.0.%d", 2+4*n.setups), TapName: "tap0", NSPath: "/run/netns/hth-" + id}
	if n.addrFor != nil {
		s.Address = n.addrFor(id)
	}
	n.slots[id] = s
	n.policies[id] = o.Egress
	return s, nil
}

func (n *fakeNet) Teardown(_ context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.slots, id)
	delete(n.partial, id)
	return nil
}

func (n *fakeNet) SetPolicy(_ context.Context, id string, p egress.Policy) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.slots[id]; !ok {
		return fmt.Errorf("no slot %s", id)
	}
	n.policies[id] = p
	return nil
}

func (n *fakeNet) CleanupStale(context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stale++
	return nil
}

func (n *fakeNet) held() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.slots) + len(n.partial)
}

// --- envd ---

// fakeEnvd stands in for envd inside a guest: files in memory, exec only
// understands `echo`.
type fakeEnvd struct {
	mu          sync.Mutex
	unhealthy   int  // Health fails this many times first
	neverHealty bool // Health always fails
	failInit    bool
	inits       []EnvdInit
	files       map[string][]byte
	urls        []string
}

func newFakeEnvd() *fakeEnvd { return &fakeEnvd{files: map[string][]byte{}} }

func (f *fakeEnvd) dial(url, token string) Envd {
	f.mu.Lock()
	f.urls = append(f.urls, url)
	f.mu.Unlock()
	return f
}

func (f *fakeEnvd) Health(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.neverHealty {
		return errors.New("connection refused")
	}
	if f.unhealthy > 0 {
		f.unhealthy--
		return errors.New("connection refused")
	}
	return nil
}

func (f *fakeEnvd) Init(_ context.Context, req EnvdInit) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failInit {
		return errInjected
	}
	f.inits = append(f.inits, req)
	return nil
}

func (f *fakeEnvd) Exec(_ context.Context, req ExecSpec, out func(Stream, []byte) error) (ExitInfo, error) {
	if req.Cmd != "echo" {
		if err := out(Stderr, []byte(req.Cmd+": not found\n")); err != nil {
			return ExitInfo{}, err
		}
		return ExitInfo{Code: 127}, nil
	}
	if err := out(Stdout, []byte(strings.Join(req.Args, " ")+"\n")); err != nil {
		return ExitInfo{}, err
	}
	return ExitInfo{}, nil
}

func (f *fakeEnvd) ReadFile(_ context.Context, path, _ string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.files[path]
	if !ok {
		return nil, fmt.Errorf("%s: %w", path, ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (f *fakeEnvd) WriteFile(_ context.Context, path, _ string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[path] = b
	return nil
}

// --- images ---

type fakeImages struct{ dir string }

func newFakeImages(t *testing.T) fakeImages {
	dir := t.TempDir()
	for _, p := range []string{"kernel/vmlinux", "tiny/rootfs.ext4", "base/rootfs.ext4"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return fakeImages{dir: dir}
}

func (f fakeImages) KernelPath() string            { return filepath.Join(f.dir, "kernel/vmlinux") }
func (f fakeImages) InitrdPath() string            { return "" }
func (f fakeImages) RootfsPath(name string) string { return filepath.Join(f.dir, name, "rootfs.ext4") }
func (f fakeImages) DefaultUser(_ context.Context, name string) string {
	if name == "base" {
		return "user"
	}
	return "root"
}

// --- snapshots ---

type fakeSnapshots struct {
	d *fakeDriver

	mu          sync.Mutex
	failPause   bool
	failRestore bool
	pauses      int
	restores    int
}

func (f *fakeSnapshots) PrepareBoot(cfg vmm.Config) (vmm.Config, error) { return cfg, nil }

func (f *fakeSnapshots) Pause(ctx context.Context, m vmm.Machine, _ vmm.Config, dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failPause {
		return errInjected
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "state"), []byte("frozen"), 0o600); err != nil {
		return err
	}
	f.pauses++
	return m.Stop(ctx)
}

func (f *fakeSnapshots) Restore(ctx context.Context, cfg vmm.Config, dir string) (vmm.Machine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := os.Stat(filepath.Join(dir, "state")); err != nil {
		return nil, err
	}
	m, err := f.d.NewMachine(cfg)
	if err != nil {
		return nil, err
	}
	if err := m.Start(ctx); err != nil {
		return m, err
	}
	f.restores++
	if f.failRestore {
		return m, errInjected
	}
	return m, nil
}

func (f *fakeSnapshots) Export(_ context.Context, dir, dst string) error {
	b, err := os.ReadFile(filepath.Join(dir, "state"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dst, "state"), b, 0o600)
}

func (f *fakeSnapshots) Remove(_ context.Context, _, dir string) error { return os.RemoveAll(dir) }

// --- harness ---

type harness struct {
	t      *testing.T
	data   string
	driver *fakeDriver
	disks  *fakeDisks
	net    *fakeNet
	envd   *fakeEnvd
	snaps  *fakeSnapshots
	m      *Manager
}

func newHarness(t *testing.T, withSnapshots bool) *harness {
	t.Helper()
	h := &harness{
		t:      t,
		data:   t.TempDir(),
		driver: &fakeDriver{},
		disks:  newFakeDisks(t),
		net:    newFakeNet(),
		envd:   newFakeEnvd(),
	}
	if withSnapshots {
		h.snaps = &fakeSnapshots{d: h.driver}
	}
	h.m = h.newManager()
	return h
}

func (h *harness) deps() Deps {
	d := Deps{
		DataDir:        h.data,
		Driver:         h.driver,
		Disks:          h.disks,
		Net:            h.net,
		Images:         newFakeImages(h.t),
		Dial:           h.envd.dial,
		BootTimeout:    5 * time.Second,
		CleanupTimeout: 5 * time.Second,
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if h.snaps != nil {
		d.Snapshots = h.snaps
	}
	return d
}

func (h *harness) newManager() *Manager {
	h.t.Helper()
	m, err := NewManager(context.Background(), h.deps())
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

// assertClean checks that no VM, slot, disk or run dir is left.
func (h *harness) assertClean() {
	h.t.Helper()
	if n := h.driver.live(); n != 0 {
		h.t.Errorf("%d VMs still running", n)
	}
	if n := h.net.held(); n != 0 {
		h.t.Errorf("%d network slots left", n)
	}
	if f := h.disks.files(h.t); len(f) != 0 {
		h.t.Errorf("disks left: %v", f)
	}
	ents, err := os.ReadDir(filepath.Join(h.data, "sandboxes"))
	if err != nil {
		h.t.Fatal(err)
	}
	if len(ents) != 0 {
		h.t.Errorf("run dirs left: %d (first %s)", len(ents), ents[0].Name())
	}
	if l := h.m.List(); len(l) != 0 {
		h.t.Errorf("sandboxes still listed: %+v", l)
	}
}

func spec(id string) Spec {
	return Spec{ID: id, TemplateID: "base", VCPUs: 2, MemoryMB: 512, AccessToken: "tok-" + id,
		Env: map[string]string{"FOO": "bar"}}
}
