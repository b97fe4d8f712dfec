package image

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestBuildTinyIdempotent builds the kernel, initramfs and tiny image into
// a fresh data dir from the apt registry, checks their contents, then
// builds again and checks that nothing was rebuilt. It downloads ~30 MB
// of packages, so it runs only when asked.
func TestBuildTinyIdempotent(t *testing.T) {
	if os.Getenv("HEARTH_IMAGE_BUILD_TEST") == "" {
		t.Skip("set HEARTH_IMAGE_BUILD_TEST=1 to build images from apt (needs root, apt, dpkg-deb, mkfs.ext4, go)")
	}
	if os.Geteuid() != 0 {
		t.Skip("image builds need root")
	}
	for _, tool := range []string{"apt-get", "dpkg-deb", "mkfs.ext4", "debugfs", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: run scripts/deps.sh", tool)
		}
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var log bytes.Buffer
	o := Options{DataDir: dir, Images: []string{Tiny}, Progress: &log}
	if err := Build(ctx, o); err != nil {
		t.Fatalf("first build: %v\n%s", err, log.String())
	}
	fi1, err := os.Stat(RootfsPath(dir, Tiny))
	if err != nil {
		t.Fatal(err)
	}
	k1, err := os.Stat(KernelPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPVHFile(KernelPath(dir)); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/etc/passwd": "user:x:1000:1000::/home/user:/bin/sh",
		"/bin/bash":   "exec /bin/sh",
		"/etc/group":  "user:x:1000:",
	} {
		out, err := exec.Command("debugfs", "-R", "cat "+path, RootfsPath(dir, Tiny)).Output()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("%s in tiny: %q (%v), want it to contain %q", path, out, err, want)
		}
	}
	for _, path := range []string{"/sbin/init", "/usr/bin/envd", "/bin/busybox", "/bin/sh", "/home/user"} {
		out, err := exec.Command("debugfs", "-R", "stat "+path, RootfsPath(dir, Tiny)).CombinedOutput()
		if err != nil || strings.Contains(string(out), "not found") {
			t.Errorf("%s missing from tiny: %s", path, out)
		}
	}
	imgs, err := List(dir)
	if err != nil || len(imgs) != 1 || imgs[0].Name != Tiny || imgs[0].Manifest.KernelVersion == "" {
		t.Fatalf("List = %+v, %v", imgs, err)
	}

	log.Reset()
	if err := Build(ctx, o); err != nil {
		t.Fatalf("second build: %v\n%s", err, log.String())
	}
	fi2, _ := os.Stat(RootfsPath(dir, Tiny))
	k2, _ := os.Stat(KernelPath(dir))
	if !fi2.ModTime().Equal(fi1.ModTime()) || !k2.ModTime().Equal(k1.ModTime()) {
		t.Fatalf("second build rebuilt artefacts:\n%s", log.String())
	}
	if strings.Count(log.String(), "up to date") != 2 {
		t.Fatalf("second build did not report reuse of kernel and tiny:\n%s", log.String())
	}
}

func checkPVHFile(p string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return checkPVH(b)
}
