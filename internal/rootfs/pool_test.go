package rootfs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// poolLoops counts the loop devices attached to the pool image.
func poolLoops(t testing.TB, p *Pool) int {
	t.Helper()
	loops, err := listLoops()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range loops {
		if l.Backing == p.Image {
			n++
		}
	}
	return n
}

func mounted(t testing.TB, p *Pool) bool {
	t.Helper()
	src, err := mountSource(p.Mount)
	if err != nil {
		t.Fatal(err)
	}
	return src != ""
}

// TestPoolCloseOnlyWhenUnused: Close releases the mount and the loop
// device, but refuses while a process has a file of the pool open. A copy
// of the mount in another namespace does not block it (nobody uses data
// through it); the filesystem lives on there, and is mounted again
// through its existing loop device, never a second one.
func TestPoolCloseOnlyWhenUnused(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.xfs", "unshare")
	dir := t.TempDir()
	ctx := context.Background()
	p, err := OpenPool(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(p.Mount, unix.MNT_DETACH) })
	disk := filepath.Join(p.Mount, "disk.ext4")
	if err := os.WriteFile(disk, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	// A "VMM" with its disk open.
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); !errors.Is(err, ErrPoolBusy) {
		t.Fatalf("Close with an open disk: %v, want ErrPoolBusy", err)
	}
	if !mounted(t, p) || poolLoops(t, p) != 1 {
		t.Fatal("a refused Close changed the pool")
	}
	f.Close()

	// A mount namespace holding a private copy of the pool (as one copied
	// from ours by `ip netns exec` or by another agent's VMM would).
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for { // until unshare has exec'd sleep in its namespace
		ns, err := os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/mnt")
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/comm")
		if err == nil && ns != self && string(comm) == "sleep\n" {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close while another namespace has a copy of the mount: %v", err)
	}
	if mounted(t, p) {
		t.Fatal("Close left the pool mounted here")
	}
	// The filesystem lives on in that namespace: OpenPool must mount the
	// same device, not a second one.
	if poolLoops(t, p) != 1 {
		t.Fatal("the namespace does not hold the loop device")
	}
	if _, err := OpenPool(ctx, dir, nil); err != nil {
		t.Fatal(err)
	}
	if n := poolLoops(t, p); n != 1 {
		t.Fatalf("%d loop devices for one pool image after remount", n)
	}
	if b, err := os.ReadFile(disk); err != nil || string(b) != "x" {
		t.Fatalf("disk after remount: %q, %v", b, err)
	}
	cmd.Process.Kill()
	cmd.Wait()

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if mounted(t, p) || poolLoops(t, p) != 0 {
		t.Fatalf("after Close: mounted %v, %d loop devices", mounted(t, p), poolLoops(t, p))
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// The data survives for the next OpenPool.
	if _, err := OpenPool(ctx, dir, nil); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(disk); err != nil || string(b) != "x" {
		t.Fatalf("disk after reopen: %q, %v", b, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
