package firecracker

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/vmmtest"
)

// The argv follows the jailer's documented usage: --id, --exec-file
// (absolute, named *firecracker*), --uid, --gid, --chroot-base-dir,
// --netns, then "--" and Firecracker's own arguments (not --id: the
// jailer passes it).
func TestJailerArgs(t *testing.T) {
	t.Parallel()
	j, err := newJail("/usr/bin/jailer", "/usr/bin/firecracker", "/srv/jailer", "sbx-1", 1000000005, 1000000005)
	if err != nil {
		t.Fatal(err)
	}
	got := j.args("/run/netns/hth-sbx-1", "--api-sock", jailAPISock)
	want := []string{
		"--id", "sbx-1", "--exec-file", "/usr/bin/firecracker",
		"--uid", "1000000005", "--gid", "1000000005",
		"--chroot-base-dir", "/srv/jailer", "--netns", "/run/netns/hth-sbx-1",
		"--", "--api-sock", "/api.sock",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("argv\n got %q\nwant %q", got, want)
	}
	// The documented layout: <base>/<exec file name>/<id>/root, the API
	// socket inside it.
	if j.root() != "/srv/jailer/firecracker/sbx-1/root" || j.hostPath(jailAPISock) != "/srv/jailer/firecracker/sbx-1/root/api.sock" {
		t.Errorf("chroot %s, socket %s", j.root(), j.hostPath(jailAPISock))
	}
	if got := j.args(""); slicesContain(got, "--netns") {
		t.Errorf("no namespace: %q still has --netns", got)
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestNewJailRejects(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, exec, base, id string
		uid                  int
	}{
		{"relative exec file", "firecracker", "/srv/jailer", "a", 7},
		{"exec file not named firecracker", "/usr/bin/qemu", "/srv/jailer", "a", 7},
		{"id with a dot", "/usr/bin/firecracker", "/srv/jailer", "a.b", 7},
		{"id of 65 characters", "/usr/bin/firecracker", "/srv/jailer", strings.Repeat("a", 65), 7},
		{"root uid", "/usr/bin/firecracker", "/srv/jailer", "a", 0},
		{"relative base", "/usr/bin/firecracker", "srv", "a", 7},
		{"socket path too long", "/usr/bin/firecracker", "/" + strings.Repeat("d", 90), "a", 7},
	} {
		if _, err := newJail("/usr/bin/jailer", c.exec, c.base, c.id, c.uid, c.uid); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}

func stat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// prepare builds the chroot as the jailer's docs require of the caller:
// everything the API names is inside the chroot (hard links; a private
// copy for a read-only input the jailed user could not read; a device
// node for a block-device disk), owned by the jailed user where it must
// write, and the API paths are the paths inside the chroot.
func TestJailPrepare(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown, mknod)")
	}
	t.Parallel()
	dir := t.TempDir()
	const uid, gid = 1000000007, 1000000007
	j, err := newJail("/usr/bin/jailer", "/usr/bin/firecracker", filepath.Join(dir, "jail"), "sbx1", uid, gid)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kernel := write("vmlinux", 0o644)
	initrd := write("initrd", 0o644)
	disk := write("disk", 0o600)
	state := write("state", 0o600) // a shared template's, root's alone
	mem := write("mem", 0o644)
	cfg := vmm.Config{ID: "sbx1", KernelPath: kernel, InitrdPath: initrd, RootDisk: disk}

	// A stale jail of the same id is replaced.
	if err := os.MkdirAll(j.hostPath("stale"), 0o755); err != nil {
		t.Fatal(err)
	}
	k, i, r, err := j.prepare(cfg, &vmm.RestoreSpec{StatePath: state, MemoryPath: mem})
	if err != nil {
		t.Fatal(err)
	}
	if k != "/vmlinux" || i != "/initrd" || r.StatePath != "/snapshot/state" || r.MemoryPath != "/snapshot/memory" {
		t.Errorf("API paths: kernel %s initrd %s state %s memory %s", k, i, r.StatePath, r.MemoryPath)
	}
	if _, err := os.Stat(j.hostPath("stale")); !os.IsNotExist(err) {
		t.Errorf("stale jail content kept: %v", err)
	}
	same := func(a, b string) bool { sa, sb := stat(t, a), stat(t, b); return sa.Ino == sb.Ino && sa.Dev == sb.Dev }
	for _, c := range []struct{ src, in string }{{kernel, "/vmlinux"}, {initrd, "/initrd"}, {disk, "/rootfs"}, {mem, "/snapshot/memory"}} {
		if !same(c.src, j.hostPath(c.in)) {
			t.Errorf("%s is not a hard link of %s", c.in, c.src)
		}
	}
	// The disk (this machine's alone) now belongs to the jailed user; the
	// kernel (shared, world-readable) does not.
	if st := stat(t, disk); st.Uid != uid || st.Gid != gid {
		t.Errorf("root disk owned by %d:%d, want %d:%d", st.Uid, st.Gid, uid, gid)
	}
	if st := stat(t, kernel); st.Uid != 0 {
		t.Errorf("shared kernel chowned to %d", st.Uid)
	}
	// The root-only state file: a private copy the jailed user owns.
	if same(state, j.hostPath("/snapshot/state")) {
		t.Error("a file the jailed user cannot read was linked, not copied")
	}
	if st := stat(t, j.hostPath("/snapshot/state")); st.Uid != uid {
		t.Errorf("state copy owned by %d", st.Uid)
	}
	if b, err := os.ReadFile(j.hostPath("/snapshot/state")); err != nil || string(b) != "state" {
		t.Errorf("state copy: %q, %v", b, err)
	}
	if st := stat(t, state); st.Uid != 0 || st.Mode&0o777 != 0o600 {
		t.Errorf("the shared state file was changed: uid %d mode %o", st.Uid, st.Mode&0o777)
	}
	for _, p := range []string{"/firecracker.log", "/snapshot"} {
		if st := stat(t, j.hostPath(p)); st.Uid != uid || st.Gid != gid {
			t.Errorf("%s owned by %d:%d, want the jailed user", p, st.Uid, st.Gid)
		}
	}

	// A snapshot written in the jail is moved where the caller wants it.
	if err := os.WriteFile(j.hostPath(jailSnapMem), []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.mem")
	if err := j.collect(jailSnapMem, out); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "new" {
		t.Errorf("collected %q", b)
	}

	// A block-device root disk (device-mapper) becomes a node with the
	// same device number; a page server socket is linked and handed over.
	blk := filepath.Join(dir, "blk")
	if err := unix.Mknod(blk, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))); err != nil {
		t.Fatal(err)
	}
	sock := write("uffd.sock", 0o755)
	if _, r, err = func() (string, *vmm.RestoreSpec, error) {
		_, _, r, err := j.prepare(vmm.Config{ID: "sbx1", RootDisk: blk}, &vmm.RestoreSpec{StatePath: state, UffdSocket: sock})
		return "", r, err
	}(); err != nil {
		t.Fatal(err)
	}
	if st := stat(t, j.hostPath("/rootfs")); st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(7, 200) || st.Uid != uid {
		t.Errorf("block disk in the jail: mode %o rdev %d uid %d", st.Mode, st.Rdev, st.Uid)
	}
	if r.UffdSocket != "/uffd.sock" || !same(sock, j.hostPath("/uffd.sock")) || stat(t, sock).Uid != uid {
		t.Errorf("uffd socket: %s", r.UffdSocket)
	}
}

// Across file systems: a root disk cannot go into the jail (the error
// says how to fix it); a kernel is copied once per base and linked into
// every jail from there; a snapshot file gets a private copy.
func TestJailPrepareCrossDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	t.Parallel()
	other, err := os.MkdirTemp("/dev/shm", "hearth-jail-")
	if err != nil {
		t.Skip("no /dev/shm")
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	dir := t.TempDir()
	if stat(t, other).Dev == stat(t, dir).Dev {
		t.Skip("/dev/shm and the temp dir are one file system")
	}
	write := func(d, name string) string {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	farDisk, kernel, state := write(other, "disk"), write(other, "vmlinux"), write(other, "state")
	base := filepath.Join(dir, "jail")
	j, err := newJail("/usr/bin/jailer", "/usr/bin/firecracker", base, "x", 7, 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := j.prepare(vmm.Config{RootDisk: farDisk}, nil); err == nil || !strings.Contains(err.Error(), "--firecracker-chroot-base") {
		t.Fatalf("cross-device root disk: %v", err)
	}
	disk := write(dir, "disk")
	var inodes []uint64
	for _, id := range []string{"x", "y"} {
		j, err := newJail("/usr/bin/jailer", "/usr/bin/firecracker", base, id, 7, 7)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := j.prepare(vmm.Config{KernelPath: kernel, RootDisk: disk}, &vmm.RestoreSpec{StatePath: state, MemoryPath: disk}); err != nil {
			t.Fatal(err)
		}
		k := stat(t, j.hostPath("/vmlinux"))
		inodes = append(inodes, k.Ino)
		if k.Nlink < 2 || k.Mode&0o777 != 0o444 {
			t.Errorf("%s: kernel in the jail: links %d mode %o, want a read-only shared copy", id, k.Nlink, k.Mode&0o777)
		}
		if b, _ := os.ReadFile(j.hostPath("/vmlinux")); string(b) != "vmlinux" {
			t.Errorf("kernel content %q", b)
		}
		if s := stat(t, j.hostPath("/snapshot/state")); s.Nlink != 1 || s.Uid != 7 {
			t.Errorf("%s: snapshot state: links %d uid %d, want a private copy", id, s.Nlink, s.Uid)
		}
	}
	if inodes[0] != inodes[1] {
		t.Error("two jails got two copies of the kernel")
	}
}

// With no chroot base configured the jails go to the top of the root
// disk's file system, where hard links to it work.
func TestDefaultChrootBase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	disk := filepath.Join(dir, "sub", "disk")
	if err := os.MkdirAll(filepath.Dir(disk), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	base, err := defaultChrootBase(disk)
	if err != nil {
		t.Fatal(err)
	}
	top := filepath.Dir(base)
	if filepath.Base(base) != JailDirName || !strings.HasPrefix(disk, strings.TrimSuffix(top, "/")+"/") {
		t.Fatalf("base %s for %s", base, disk)
	}
	if stat(t, top).Dev != stat(t, disk).Dev {
		t.Errorf("%s is not on the disk's file system", top)
	}
	if top != "/" && stat(t, filepath.Dir(top)).Dev == stat(t, disk).Dev {
		t.Errorf("%s is not the top of the disk's file system", top)
	}
	if base, err := defaultChrootBase(""); err != nil || base != DefaultChrootBase {
		t.Errorf("no disk: %s, %v", base, err)
	}
}

// Without a jailer, Firecracker is refused (Probe and Start) unless the
// operator allowed root, and the error says how to fix it.
func TestNoJailerRefused(t *testing.T) {
	bindir := t.TempDir()
	t.Setenv("PATH", bindir) // a firecracker, no jailer to find
	fc := filepath.Join(bindir, "firecracker")
	if err := os.WriteFile(fc, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := New(Options{Binary: fc})
	err := d.Probe(context.Background())
	if !errors.Is(err, ErrNoJailer) || !errors.Is(err, vmm.ErrUnsupported) || !strings.Contains(err.Error(), "--firecracker-jailer") {
		t.Fatalf("Probe without a jailer: %v", err)
	}
	dir := t.TempDir()
	m, err := d.NewMachine(vmm.Config{ID: "a", RunDir: dir, KernelPath: "/k", VCPUs: 1, MemoryMB: 8, RunAsUID: 7, RunAsGID: 7})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); !errors.Is(err, ErrNoJailer) {
		t.Fatalf("Start without a jailer: %v", err)
	}
	if m.PID() != 0 {
		t.Fatal("a process was started")
	}
	// With a jailer but no uid (the agent's uid range turned off).
	d = New(Options{Binary: fc, Jailer: "/usr/bin/jailer"})
	m, _ = d.NewMachine(vmm.Config{ID: "a", RunDir: dir, KernelPath: "/k", VCPUs: 1, MemoryMB: 8})
	if err := m.Start(context.Background()); !errors.Is(err, ErrNoJailer) {
		t.Fatalf("Start as root with a jailer: %v", err)
	}
}

// Start runs the jailer (here a script that records what it got and
// exits, as no jailer is installed) with the documented argv, the chroot
// already built, and the tap handed to the jailed user; the jail is
// removed when the start fails.
func TestJailedStartRunsJailer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	rec := filepath.Join(dir, "rec")
	jailer := filepath.Join(dir, "jailer")
	// The script lists the chroot the driver prepared (uid, gid, type).
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + rec + ".args\ncd \"$CHROOT\" && find . -printf '%p %U %G %y\\n' | sort > " + rec + ".tree\nexit 3\n"
	if err := os.WriteFile(jailer, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	fc := filepath.Join(dir, "firecracker")
	if err := os.WriteFile(fc, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ns, tap := vmmtest.NetNSWithTap(t)
	base := filepath.Join(dir, "jails")
	t.Setenv("CHROOT", filepath.Join(base, "firecracker", "sbxj", "root"))
	d := New(Options{Binary: fc, Jailer: jailer, ChrootBase: base})
	kernel := filepath.Join(dir, "vmlinux")
	disk := filepath.Join(dir, "disk")
	for _, p := range []string{kernel, disk} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const uid = 1000000009
	m, err := d.NewMachine(vmm.Config{ID: "sbxj", RunDir: filepath.Join(dir, "run"), KernelPath: kernel, RootDisk: disk,
		VCPUs: 1, MemoryMB: 8, NetNS: ns, TapName: tap, RunAsUID: uid, RunAsGID: uid})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("Start with a jailer that exits: %v", err)
	}
	args, err := os.ReadFile(rec + ".args")
	if err != nil {
		t.Fatalf("the jailer never ran: %v", err)
	}
	want := strings.Join([]string{"--id", "sbxj", "--exec-file", fc, "--uid", "1000000009", "--gid", "1000000009",
		"--chroot-base-dir", base, "--netns", ns, "--", "--api-sock", "/api.sock"}, "\n") + "\n"
	if string(args) != want {
		t.Errorf("jailer argv\n got %q\nwant %q", args, want)
	}
	tree, _ := os.ReadFile(rec + ".tree")
	for _, line := range []string{". 0 0 d", "./firecracker.log 1000000009 1000000009 f", "./rootfs 1000000009 1000000009 f",
		"./snapshot 1000000009 1000000009 d", "./vmlinux 0 0 f"} {
		if !strings.Contains(string(tree), line+"\n") {
			t.Errorf("chroot the jailer found lacks %q:\n%s", line, tree)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "firecracker", "sbxj")); !os.IsNotExist(err) {
		t.Errorf("jail left after a failed start: %v", err)
	}
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(ns), "cat", "/sys/class/net/"+tap+"/owner").Output()
	if err != nil || strings.TrimSpace(string(out)) != "1000000009" {
		t.Errorf("tap owner: %q, %v; want the jailed uid", out, err)
	}
}

// TestRealJailer boots under the real jailer where it can run.
func TestRealJailer(t *testing.T) {
	jailer, err := exec.LookPath("jailer")
	if err != nil {
		t.Skip("needs Firecracker's jailer in PATH (from the same release as firecracker: github.com/firecracker-microvm/firecracker/releases)")
	}
	bin, err := exec.LookPath("firecracker")
	if err != nil {
		t.Skip("needs the firecracker binary in PATH next to the jailer")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skipf("needs KVM: %v", err)
	}
	im := vmmtest.FindImages(t)
	vmmtest.RequireFile(t, im.Tiny)
	base := t.TempDir()
	d := New(Options{Binary: bin, Jailer: jailer, ChrootBase: base, ProbeKernel: im.Kernel})
	if err := d.Probe(context.Background()); err != nil {
		t.Skipf("firecracker cannot run here: %v", err)
	}
	// The disk must be on the jail's file system: it is hard-linked.
	vmmtest.Conformance(t, realTarget(d, im, base, 1000000011))
}
