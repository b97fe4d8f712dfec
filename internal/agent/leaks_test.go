package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
)

// A pause that fails at shutdown keeps the sandbox: VM stopped, slot
// freed, disk and run dir kept, state error with the reason, also after
// a restart, until the user destroys it. Not paused at an older snapshot:
// its disk has moved on since.
func TestShutdownPauseFailureKeepsDisk(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	ctx := context.Background()
	for _, id := range []string{"keep1", "keep2", "fine1"} {
		if _, err := h.m.Create(ctx, spec(id)); err != nil {
			t.Fatal(err)
		}
	}
	// keep1 has an older snapshot (paused and resumed before).
	if _, err := h.m.Pause(ctx, "keep1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.Resume(ctx, "keep1", "tok-keep1", egress.Policy{}); err != nil {
		t.Fatal(err)
	}
	// fine1 is paused before the failure starts; keep1 and keep2 fail.
	if _, err := h.m.Pause(ctx, "fine1"); err != nil {
		t.Fatal(err)
	}
	h.snaps.mu.Lock()
	h.snaps.failPause = true
	h.snaps.mu.Unlock()
	if err := h.m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := h.driver.live(); n != 0 {
		t.Fatalf("%d VMs still running after shutdown", n)
	}
	if n := h.net.held(); n != 0 {
		t.Fatalf("%d network slots held after shutdown", n)
	}
	if got := h.disks.files(t); !slices.Equal(got, []string{"fine1.ext4", "keep1.ext4", "keep2.ext4"}) {
		t.Fatalf("disks after shutdown: %v", got)
	}
	check := func(m *Manager, when string) {
		t.Helper()
		for _, id := range []string{"keep1", "keep2"} {
			in, err := m.Get(id)
			if err != nil || in.State != sbx.StateError || !strings.Contains(in.Error, "could not pause") || !strings.Contains(in.Error, errInjected.Error()) {
				t.Fatalf("%s %s: %+v, %v; want error naming the pause failure", when, id, in, err)
			}
			if !exists(filepath.Join(h.data, "sandboxes", id)) {
				t.Fatalf("%s %s: run dir removed", when, id)
			}
		}
		if in, err := m.Get("fine1"); err != nil || in.State != sbx.StatePaused {
			t.Fatalf("%s fine1: %+v, %v", when, in, err)
		}
	}
	check(h.m, "after shutdown")
	h.snaps.mu.Lock()
	h.snaps.failPause = false
	h.snaps.mu.Unlock()

	h.m = h.newManager()
	check(h.m, "after restart")
	if got := h.disks.files(t); len(got) != 3 {
		t.Fatalf("restart removed disks: %v", got)
	}
	var te *sbx.ErrTransition
	if _, err := h.m.Resume(ctx, "keep1", "tok", egress.Policy{}); !errors.As(err, &te) {
		t.Fatalf("resume of a sandbox in error: %v", err)
	}
	for _, id := range []string{"keep1", "keep2", "fine1"} {
		if err := h.m.Destroy(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	h.assertClean()
}

// needDiskTools skips without the tools real root disks need.
func needDiskTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range append([]string{"mkfs.ext4", "e2fsck", "resize2fs", "debugfs"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: install e2fsprogs and qemu-utils", tool)
		}
	}
}

// writeImage makes a 64 MB ext4 base image at dataDir/images/name.
func writeImage(t *testing.T, dataDir, name string) string {
	t.Helper()
	p := filepath.Join(dataDir, "images", name, "rootfs.ext4")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", p, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return p
}

// variantsOf lists the cached variants of base's path (any version, any
// size) in a cache dir, computing the path key on its own.
func variantsOf(t *testing.T, cache, base string) []string {
	t.Helper()
	abs, _ := filepath.Abs(base)
	sum := sha256.Sum256([]byte(abs))
	got, _ := filepath.Glob(filepath.Join(cache, hex.EncodeToString(sum[:6])+"-*.ext4"))
	return got
}

// qcow2Backing is the backing file of an overlay, from qemu-img.
func qcow2Backing(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-U", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "backing file: "); ok {
			return strings.Fields(v)[0]
		}
	}
	t.Fatalf("%s has no backing file", path)
	return ""
}

// Root-disk variants through a template's life and at start-up, with the
// qcow2 backend (overlays depend on their variant): DeleteSnapshot drops
// the template's variants; the start-up prune removes exactly the
// variants no image or template held here and no sandbox disk (paused
// ones included) needs.
func TestVariantsPrunedAndKept(t *testing.T) {
	t.Parallel()
	needDiskTools(t, "qemu-img")
	h := newHarness(t, true)
	ctx := context.Background()
	base := writeImage(t, h.data, "base")
	gone := writeImage(t, h.data, "gone")
	disks := rootfs.NewQcow2(filepath.Join(h.data, "rootfs"), nil)
	cache := filepath.Join(h.data, "rootfs", "bases")
	newManager := func() *Manager {
		d := h.deps()
		d.Disks = diskAdapter{Backend: disks, dataDir: h.data}
		d.Images = newDirImages(h.data)
		d.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		m, err := NewManager(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	h.m = newManager()
	mk := func(id, tpl string, kind sbx.TemplateKind, sizeMB int) {
		t.Helper()
		s := spec(id)
		s.TemplateID, s.TemplateKind, s.DiskSizeMB = tpl, kind, sizeMB
		if _, err := h.m.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	destroy := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			if err := h.m.Destroy(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("paused1", "base", sbx.KindBase, 128) // stays, paused: its overlay needs base@128
	pausedVariant := qcow2Backing(t, filepath.Join(h.data, "rootfs", "disks", "paused1.qcow2"))
	if _, err := h.m.Pause(ctx, "paused1"); err != nil {
		t.Fatal(err)
	}
	mk("tmp1", "base", sbx.KindBase, 256) // base@256: a cache entry of a held image
	mk("tmp2", "gone", sbx.KindBase, 128) // gone@128: its image is deleted below
	for _, tpl := range []string{"t1", "t2"} {
		if _, err := h.m.CreateSnapshot(ctx, "paused1", tpl); err != nil {
			t.Fatal(err)
		}
	}
	mk("fromt1", "t1", sbx.KindSnapshot, 128)
	mk("fromt2", "t2", sbx.KindSnapshot, 128)
	destroy("tmp1", "tmp2", "fromt1", "fromt2")
	t1Disk := filepath.Join(h.data, "templates", "t1", "rootfs.ext4")
	t2Disk := filepath.Join(h.data, "templates", "t2", "rootfs.ext4")
	t1Vars, t2Vars := variantsOf(t, cache, t1Disk), variantsOf(t, cache, t2Disk)
	if len(t1Vars) == 0 || len(t2Vars) == 0 {
		t.Fatalf("templates' variants not cached: %v %v", t1Vars, t2Vars)
	}

	// Deleting t2 takes its cached disk variants along.
	if err := h.m.DeleteSnapshot(ctx, "t2"); err != nil {
		t.Fatal(err)
	}
	if v := variantsOf(t, cache, t2Disk); len(v) != 0 {
		t.Fatalf("deleted template's variants left: %v", v)
	}

	// The image "gone" is removed and "base" gets a new version (a
	// rebuild): old base@256 is now unreferenced, old base@128 is what
	// paused1's overlay reads.
	if err := os.RemoveAll(filepath.Dir(gone)); err != nil {
		t.Fatal(err)
	}
	oldBase := variantsOf(t, cache, base)
	next := base + ".next"
	if out, err := exec.Command("cp", "--sparse=always", base, next).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	if err := os.Rename(next, base); err != nil {
		t.Fatal(err)
	}
	goneVars := variantsOf(t, cache, gone)
	if len(goneVars) == 0 || len(oldBase) < 2 {
		t.Fatalf("variants not cached: gone %v, base %v", goneVars, oldBase)
	}
	before, _ := filepath.Glob(filepath.Join(cache, "*"))
	if err := h.m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	h.m = newManager() // start-up prune
	after, _ := filepath.Glob(filepath.Join(cache, "*"))
	var want []string
	for _, f := range before {
		if f == pausedVariant || slices.Contains(t1Vars, f) {
			want = append(want, f)
		}
	}
	if !slices.Equal(after, want) {
		t.Fatalf("after start-up prune: %v\nwant (paused1's variant + template t1's): %v", after, want)
	}
	// paused1 resumes on its kept variant.
	if _, err := h.m.Resume(ctx, "paused1", "tok", egress.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pausedVariant); err != nil {
		t.Fatal(err)
	}
	destroy("paused1")
	if err := h.m.DeleteSnapshot(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	h.m = newManager()
	if left, _ := filepath.Glob(filepath.Join(cache, "*")); len(left) != 0 {
		t.Fatalf("variants left with no sandbox, template or old image: %v", left)
	}
}

// mountsUnder lists mount points at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// loopsOf is `losetup -j file`: the loop devices backed by file.
func loopsOf(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("losetup", "-j", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -j: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// The agent releases the xfs reflink pool it mounted when it shuts down
// (after pausing its sandboxes, whose VMMs hold their disks open until
// then), and the next agent on the data dir mounts it again and finds the
// paused sandbox's disk.
func TestAgentShutdownReleasesPool(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	needDiskTools(t, "mkfs.xfs", "losetup")
	data := t.TempDir()
	if err := exec.Command("cp", "--reflink=always", "/dev/null", filepath.Join(data, "probe")).Run(); err == nil {
		t.Skipf("%s can reflink: the agent would not use an xfs pool", data)
	}
	writeImage(t, data, "tiny")
	if err := os.MkdirAll(filepath.Join(data, "images", "kernel"), 0o755); err != nil {
		t.Fatal(err)
	}
	driver := &fakeDriver{holdDisk: true}
	envd := newFakeEnvd()
	opts := Options{
		DataDir: data, HostID: "pooltest",
		Driver: driver, Net: newFakeNet(), Dial: envd.dial, Snapshots: &fakeSnapshots{d: driver},
		RootfsBackend:    "reflink",
		EnsureImageSizes: func(context.Context, int64) error { return nil },
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	pool := filepath.Join(data, "rootfs-pool")
	image := filepath.Join(data, "rootfs-pool.xfs")
	t.Cleanup(func() { (&rootfs.Pool{Mount: pool, Image: image}).Close() })
	ctx := context.Background()
	a, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(t, data); !slices.Equal(m, []string{pool}) {
		t.Fatalf("agent mounted %v, want the pool", m)
	}
	s := spec("pooled1")
	s.TemplateID, s.DiskSizeMB = "tiny", 128
	if _, err := a.Manager().Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	disk, err := a.opts.Disks.Lookup(ctx, "pooled1")
	if err != nil || !strings.HasPrefix(disk.Path, pool+"/") {
		t.Fatalf("disk %+v, %v: want one in the pool", disk, err)
	}
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(t, data); len(m) != 0 {
		t.Fatalf("mounted after shutdown: %v", m)
	}
	if l := loopsOf(t, image); l != "" {
		t.Fatalf("loop device left after shutdown: %s", l)
	}

	opts.Disks = nil // wire builds it again
	a, err = New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Paused by the shutdown: resumed at start-up.
	if in, err := a.Manager().Get("pooled1"); err != nil || in.State != sbx.StateRunning {
		t.Fatalf("after restart: %+v, %v", in, err)
	}
	if got, err := a.opts.Disks.Lookup(ctx, "pooled1"); err != nil || got != disk {
		t.Fatalf("disk after restart: %+v, %v; want %+v", got, err, disk)
	}
	if err := a.Manager().Destroy(ctx, "pooled1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if m, l := mountsUnder(t, data), loopsOf(t, image); len(m) != 0 || l != "" {
		t.Fatalf("after the second shutdown: mounts %v, loops %q", m, l)
	}
}
