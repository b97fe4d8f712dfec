// Package vmmtest holds the conformance suite every VMM driver must pass
// (Conformance: boot, exec through envd, pause, snapshot, restore, stop,
// cleanup; called by the tests of vmm/qemu against real QEMU and of
// vmm/firecracker against its fake) and helpers for tests that boot real
// VMs: locating the guest images, building a throwaway busybox initramfs,
// and watching a serial console log.
package vmmtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ImagesEnv names the directory holding images/ (e.g. /var/tmp/hearth-dev).
const ImagesEnv = "HEARTH_IMAGES_DIR"

// Images are the guest images of a data dir.
type Images struct {
	Kernel string // images/kernel/vmlinux
	Initrd string // images/kernel/initramfs* if present
	Tiny   string // images/tiny/rootfs.ext4
	Base   string // images/base/rootfs.ext4
}

// FindImages returns the images under $HEARTH_IMAGES_DIR or skips the test
// saying what is missing. Only the kernel is required; callers check the
// rootfs they need with RequireFile.
func FindImages(t testing.TB) Images {
	t.Helper()
	dir := os.Getenv(ImagesEnv)
	if dir == "" {
		t.Skipf("boots a real VM: needs %s=<data dir with images/> (e.g. /var/tmp/hearth-dev; build with hearth image build)", ImagesEnv)
	}
	im := Images{
		Kernel: filepath.Join(dir, "images", "kernel", "vmlinux"),
		Tiny:   filepath.Join(dir, "images", "tiny", "rootfs.ext4"),
		Base:   filepath.Join(dir, "images", "base", "rootfs.ext4"),
	}
	RequireFile(t, im.Kernel)
	for _, name := range []string{"initramfs.cpio.gz", "initramfs.img", "initramfs", "initrd.img", "initramfs.cpio"} {
		p := filepath.Join(dir, "images", "kernel", name)
		if _, err := os.Stat(p); err == nil {
			im.Initrd = p
			break
		}
	}
	return im
}

// RequireFile skips the test when path does not exist.
func RequireFile(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("needs %s (build the images with hearth image build): %v", path, err)
	}
}

// RequireQEMU skips the test when qemu-system-x86_64 is not installed.
func RequireQEMU(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("needs qemu-system-x86_64; install: apt-get install qemu-system-x86")
	}
}

// CopyFile copies src to a new file in dir (sparse-friendly: cp) and
// returns its path. Tests boot copies, never the shared image.
func CopyFile(t testing.TB, src, dir string) string {
	t.Helper()
	dst := filepath.Join(dir, filepath.Base(src))
	out, err := exec.Command("cp", "--sparse=always", "--reflink=auto", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("copy %s: %v: %s", src, err, out)
	}
	return dst
}

// WaitForConsole polls the console log until it contains marker after
// offset, the context ends, or exited is closed. It returns the log.
func WaitForConsole(ctx context.Context, path string, offset int64, marker string, exited <-chan struct{}) (string, error) {
	for {
		b, _ := os.ReadFile(path)
		if int64(len(b)) > offset && bytes.Contains(b[offset:], []byte(marker)) {
			return string(b), nil
		}
		select {
		case <-ctx.Done():
			return string(b), fmt.Errorf("console %s: %q not seen: %w", path, marker, ctx.Err())
		case <-exited:
			b, _ = os.ReadFile(path)
			if int64(len(b)) > offset && bytes.Contains(b[offset:], []byte(marker)) {
				return string(b), nil
			}
			return string(b), fmt.Errorf("console %s: VMM exited before %q", path, marker)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// BusyboxInitramfs writes an uncompressed newc cpio archive holding the
// static busybox and an /init shell script, and returns its path. It skips
// the test when no static busybox is installed.
func BusyboxInitramfs(t testing.TB, dir, initScript string) string {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("needs a static /bin/busybox; install: apt-get install busybox-static: %v", err)
	}
	if out, _ := exec.Command("file", "-L", "/bin/busybox").Output(); len(out) > 0 && !strings.Contains(string(out), "statically linked") && !strings.Contains(string(out), "static-pie") {
		t.Skip("needs a statically linked /bin/busybox; install: apt-get install busybox-static")
	}
	var buf bytes.Buffer
	w := &cpioWriter{w: &buf}
	w.dir("bin")
	w.dir("dev")
	w.dir("proc")
	w.dir("sys")
	w.dir("tmp")
	w.file("bin/busybox", 0o755, bb)
	w.file("init", 0o755, []byte(initScript))
	w.trailer()
	if w.err != nil {
		t.Fatal(w.err)
	}
	p := filepath.Join(dir, "initramfs.cpio")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cpioWriter writes the "newc" format the kernel unpacks.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

func (c *cpioWriter) entry(name string, mode uint32, data []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&0o040000 != 0 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	var b bytes.Buffer
	b.WriteString(hdr)
	b.WriteString(name)
	b.WriteByte(0)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	b.Write(data)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	_, c.err = c.w.Write(b.Bytes())
}

func (c *cpioWriter) dir(name string)                         { c.entry(name, 0o040755, nil) }
func (c *cpioWriter) file(name string, perm uint32, d []byte) { c.entry(name, 0o100000|perm, d) }
func (c *cpioWriter) trailer()                                { c.entry("TRAILER!!!", 0, nil) }

// CounterInit is an /init for BusyboxInitramfs: it draws a random secret
// (held only in the shell's memory) and prints "tick N SECRET" to the serial
// console every 200 ms, so a test can prove a restored guest continued the
// same process with the same memory.
const CounterInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
SECRET=$(cat /proc/sys/kernel/random/uuid)
echo "hearth-test: ready $SECRET"
i=0
while true; do
  i=$((i+1))
  echo "hearth-test: tick $i $SECRET"
  sleep 0.2
done
`

// GuestMAC is the MAC every sandbox's guest NIC has.
const GuestMAC = "02:fc:00:00:00:05"

// NetNSWithTap creates a network namespace holding an up tap device "tap0"
// addressed as the guest's gateway (169.254.0.22/30), removed at cleanup,
// and returns the namespace path and the tap name. It skips without root.
func NetNSWithTap(t testing.TB) (nsPath, tap string) {
	t.Helper()
	name := fmt.Sprintf("hearth-vmmtest-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("needs root and ip(8) for a netns with a tap: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	for _, args := range [][]string{
		{"tuntap", "add", "dev", "tap0", "mode", "tap"},
		{"addr", "add", "169.254.0.22/30", "dev", "tap0"},
		{"link", "set", "tap0", "up"},
		{"link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s %v: %v: %s", name, args, err, out)
		}
	}
	return filepath.Join("/run/netns", name), "tap0"
}
