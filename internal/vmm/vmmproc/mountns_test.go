package vmmproc

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startBound starts cmd with disk bound at dir/rootfs; it skips the test
// where mount namespaces cannot be created.
func startBound(t *testing.T, cmd *exec.Cmd, netnsPath, dir, disk string) *Process {
	t.Helper()
	p, err := StartWith(cmd, Options{NetNS: netnsPath, Mounts: &Mounts{Dir: dir, Files: []BindFile{{Name: "rootfs", Source: disk}}}})
	if err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("needs CAP_SYS_ADMIN to create a mount namespace: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.KillAndWait(ctx)
	})
	return p
}

func writeFile(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// hostMountsUnder returns the lines of this process's mount table that
// mention dir (other workers may mount unrelated things concurrently).
func hostMountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, dir) {
			out = append(out, l)
		}
	}
	return out
}

// TestMountNSStablePath runs processes concurrently that each see a
// different disk at the same fixed path, and checks that writes reach the
// bound file, that the host's directory stays empty and that nothing leaks
// into the host's mount table, during or after.
func TestMountNSStablePath(t *testing.T) {
	tmp := t.TempDir()
	fixed := filepath.Join(tmp, "stable") // the path every VMM is given
	target := filepath.Join(fixed, "rootfs")
	diskA := writeFile(t, filepath.Join(tmp, "a.ext4"), "disk-A")
	diskB := writeFile(t, filepath.Join(tmp, "b.ext4"), "disk-B")
	diskC := writeFile(t, filepath.Join(tmp, "c.ext4"), "disk-C")
	before := hostMountsUnder(t, tmp)

	pa := startBound(t, exec.Command("sleep", "60"), "", fixed, diskA)
	pb := startBound(t, exec.Command("sleep", "60"), "", fixed, diskB)
	// /proc/PID/root resolves the rest of the path in PID's mount namespace.
	for _, c := range []struct {
		p    *Process
		want string
	}{{pa, "disk-A"}, {pb, "disk-B"}} {
		got, err := os.ReadFile("/proc/" + strconv.Itoa(c.p.PID()) + "/root" + target)
		if err != nil || string(got) != c.want {
			t.Errorf("pid %d sees %q (%v) at %s, want %q", c.p.PID(), got, err, target, c.want)
		}
		mi, err := os.ReadFile("/proc/" + strconv.Itoa(c.p.PID()) + "/mountinfo")
		if err != nil || !bytes.Contains(mi, []byte(" "+target+" ")) {
			t.Errorf("pid %d mount table lacks %s: %v", c.p.PID(), target, err)
		}
	}

	// A third, short-lived process (while A and B run) reads and appends
	// through the fixed path: it sees its own disk and writes reach it.
	var out bytes.Buffer
	cmd := exec.Command("sh", "-c", `cat "$1" && printf -- '+written' >> "$1"`, "sh", target)
	cmd.Stdout = &out
	pc := startBound(t, cmd, "", fixed, diskC)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pc.Wait(ctx); err != nil {
		t.Fatalf("cat through the fixed path: %v", err)
	}
	if out.String() != "disk-C" {
		t.Errorf("third process read %q, want disk-C", out.String())
	}
	if b, _ := os.ReadFile(diskC); string(b) != "disk-C+written" {
		t.Errorf("disk C after the write through the bind: %q", b)
	}

	// The host sees an empty directory and no new mounts while VMs run.
	if ents, err := os.ReadDir(fixed); err != nil || len(ents) != 0 {
		t.Errorf("host's %s: %v entries, err %v; want empty", fixed, len(ents), err)
	}
	if during := hostMountsUnder(t, tmp); len(during) != len(before) {
		t.Errorf("host mount table changed while VMs ran:\n%s", strings.Join(during, "\n"))
	}
	for _, p := range []*Process{pa, pb} {
		if err := p.KillAndWait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if after := hostMountsUnder(t, tmp); len(after) != len(before) {
		t.Errorf("host mount table changed:\n%s", strings.Join(after, "\n"))
	}
	if b, _ := os.ReadFile(diskA); string(b) != "disk-A" {
		t.Errorf("disk A changed: %q", b)
	}
}

// TestMountNSWithNetNS: the two namespaces combine.
func TestMountNSWithNetNS(t *testing.T) {
	name := "hearth-vmmproc-mnt-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("needs root and ip(8) to create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	nsPath := filepath.Join("/run/netns", name)
	tmp := t.TempDir()
	fixed := filepath.Join(tmp, "stable")
	disk := writeFile(t, filepath.Join(tmp, "d.ext4"), "disk-D")
	p := startBound(t, exec.Command("sleep", "60"), nsPath, fixed, disk)
	pid := strconv.Itoa(p.PID())
	if got, want := readlink(t, "/proc/"+pid+"/ns/net"), netnsID(t, nsPath); got != want {
		t.Errorf("child netns %s, want %s", got, want)
	}
	if got, self := readlink(t, "/proc/"+pid+"/ns/mnt"), readlink(t, "/proc/self/ns/mnt"); got == self {
		t.Error("child shares the test's mount namespace")
	}
	if got, err := os.ReadFile("/proc/" + pid + "/root" + filepath.Join(fixed, "rootfs")); err != nil || string(got) != "disk-D" {
		t.Errorf("child sees %q (%v)", got, err)
	}
	// The test's own threads are untouched (the setup thread was discarded).
	if got := readlink(t, "/proc/self/ns/net"); got == netnsID(t, nsPath) {
		t.Error("test process left in the VM's netns")
	}
}

func readlink(t *testing.T, path string) string {
	t.Helper()
	s, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMountsValidation(t *testing.T) {
	t.Parallel()
	disk := writeFile(t, filepath.Join(t.TempDir(), "d"), "x")
	tests := []struct {
		name string
		m    Mounts
	}{
		{"relative dir", Mounts{Dir: "stable", Files: []BindFile{{"rootfs", disk}}}},
		{"root dir", Mounts{Dir: "/", Files: []BindFile{{"rootfs", disk}}}},
		{"name with slash", Mounts{Dir: "/run/x", Files: []BindFile{{"a/b", disk}}}},
		{"dot-dot name", Mounts{Dir: "/run/x", Files: []BindFile{{"..", disk}}}},
		{"relative source", Mounts{Dir: "/run/x", Files: []BindFile{{"rootfs", "d"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := StartWith(exec.Command("true"), Options{Mounts: &tc.m}); err == nil {
				t.Fatal("StartWith accepted invalid mounts")
			}
		})
	}
}

// TestMountNSMissingSource: a bind that fails fails the start, starts
// nothing and leaves the host untouched.
func TestMountNSMissingSource(t *testing.T) {
	tmp := t.TempDir()
	fixed := filepath.Join(tmp, "stable")
	_, err := StartWith(exec.Command("true"), Options{Mounts: &Mounts{Dir: fixed, Files: []BindFile{{"rootfs", filepath.Join(tmp, "missing")}}}})
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("needs CAP_SYS_ADMIN to create a mount namespace: %v", err)
	}
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("StartWith = %v, want an error naming the missing source", err)
	}
	if m := hostMountsUnder(t, tmp); len(m) != 0 {
		t.Fatalf("host mounts left: %v", m)
	}
}

// TestDisposableThreadNeverMain: the namespace setup never runs on the main
// thread, whose namespaces /proc/self shows (the first version of this
// code left the process's /proc/self/mountinfo showing a VM's mounts when
// the goroutine happened to run there, which it often does).
func TestDisposableThreadNeverMain(t *testing.T) {
	self := readlink(t, "/proc/self/ns/mnt")
	for i := range 50 {
		err := onDisposableThread(func() error {
			if unix.Gettid() == unix.Getpid() {
				return errors.New("running on the main thread")
			}
			return unix.Unshare(unix.CLONE_NEWNS)
		})
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("needs CAP_SYS_ADMIN to create a mount namespace: %v", err)
		}
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if got := readlink(t, "/proc/self/ns/mnt"); got != self {
			t.Fatalf("round %d: /proc/self/ns/mnt is now %s, was %s", i, got, self)
		}
	}
}
