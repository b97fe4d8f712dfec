package image_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/deploy/internal/buildtest"
	"github.com/hearth-sandbox/hearth/deploy/pkg/image"
)

func podman(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "podman", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// The image, built without a daemon, loads into Debian's podman and the
// control plane in it answers /healthz.
func TestImageRunsUnderPodman(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("podman is not installed: scripts/deps.sh installs it")
	}
	tar := filepath.Join(t.TempDir(), "hearth-image.tar")
	tag := fmt.Sprintf("localhost/hearth-test:%d", time.Now().UnixNano())
	if err := image.Write(image.Options{Binary: buildtest.Hearth(t), Tag: tag, Out: tar}); err != nil {
		t.Fatal(err)
	}
	podman(t, "load", "-i", tar)
	t.Cleanup(func() { _, _ = exec.Command("podman", "rmi", "-f", tag).CombinedOutput() })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// This machine's constraints, not the image's: crun cannot run under
	// hybrid cgroups (runc can), rlimits may only be lowered, and the host
	// network keeps the test on loopback without a CNI setup.
	id := podman(t, "--runtime", "runc", "run", "-d", "--rm", "--network", "host",
		"--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
		"-e", "HEARTH_LISTEN="+addr, tag)
	t.Cleanup(func() { _, _ = exec.Command("podman", "--runtime", "runc", "rm", "-f", "-t", "2", id).CombinedOutput() })

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), `"ok"`) {
				t.Fatalf("/healthz: %d %s", resp.StatusCode, body)
			}
			break
		}
		if time.Now().After(deadline) {
			logs, _ := exec.Command("podman", "logs", id).CombinedOutput()
			t.Fatalf("/healthz did not answer in 30 s: %v\n%s", err, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	user := podman(t, "image", "inspect", "--format", "{{.Config.User}}", tag)
	if user != fmt.Sprintf("%d:%d", image.UID, image.UID) {
		t.Errorf("image user %q, want the unprivileged %d", user, image.UID)
	}
}
