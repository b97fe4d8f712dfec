//go:build vm

package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/sandboxsnap"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// TestVMPauseOnFullDiskKeepsSnapshot: the sandbox's snapshot directory is
// a small ext4 file system in a loop file. Once it is full, a pause fails
// with ENOSPC, said in the error; the sandbox keeps running (same VM) and
// its previous snapshot stays committed. With space again, the next pause
// succeeds and resumes to the latest state.
func TestVMPauseOnFullDiskKeepsSnapshot(t *testing.T) {
	e := newVMEnv(t, "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.client
	const id = "vmfull1"
	snapDir := filepath.Join(e.data, "sandboxes", id, "snapshot")
	if err := os.MkdirAll(snapDir, 0o700); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "small.ext4")
	for _, args := range [][]string{
		// Room for the snapshot twice over and a diff: a lazily resumed
		// sandbox's directory holds its memory in the store and in the RAM
		// file the next resume maps (sandboxsnap).
		{"truncate", "-s", "384M", img},
		{"mkfs.ext4", "-q", "-F", img},
		{"mount", "-o", "loop", img, snapDir},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-d", snapDir).Run() })

	if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: id, TemplateID: "tiny", TemplateKind: sbx.KindBase,
		VCPUs: 1, MemoryMB: 256, DiskSizeMB: 1024, AccessToken: "tok-" + id,
	}); err != nil {
		t.Fatal(err)
	}
	vmExec(t, c, id, "echo one > $HOME/one")
	if err := c.PauseSandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
	first, err := sandboxsnap.Stat(snapDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: id, AccessToken: "tok-" + id}); err != nil {
		t.Fatal(err)
	}
	// Fill the file system, then give the guest fresh memory to save.
	filler := filepath.Join(snapDir, "filler")
	if out, err := exec.Command("sh", "-c", `dd if=/dev/zero of="$0" bs=1M 2>/dev/null; sync`, filler).CombinedOutput(); err != nil && !strings.Contains(string(out), "No space") {
		t.Logf("fill: %v %s", err, out)
	}
	vmExec(t, c, id, "echo two > $HOME/two; dd if=/dev/urandom of=/dev/shm/noise bs=1048576 count=32 2>/dev/null")
	pid := vmmPID(t, e.data, id)
	err = c.PauseSandbox(ctx, id)
	if err == nil {
		t.Fatal("pause on a full file system succeeded")
	}
	// Go says "no space left on device", QEMU (which writes the device
	// state) "No space left on device".
	if !strings.Contains(strings.ToLower(err.Error()), "no space left on device") {
		t.Fatalf("pause error %q does not say the disk is full", err)
	}
	if in, err := e.agent.Manager().Get(id); err != nil || in.State != sbx.StateRunning {
		t.Fatalf("after the failed pause: %+v %v, want running", in, err)
	}
	if got := vmmPID(t, e.data, id); got != pid {
		t.Fatalf("VMM pid %d after the failed pause, was %d", got, pid)
	}
	if out := vmExec(t, c, id, "cat $HOME/one $HOME/two"); out != "one\ntwo\n" {
		t.Fatalf("guest after the failed pause: %q", out)
	}
	if now, err := sandboxsnap.Stat(snapDir); err != nil || now.Seq != first.Seq || !sandboxsnap.Committed(snapDir) {
		t.Fatalf("snapshot after the failed pause: %+v %v, want seq %d intact", now, err, first.Seq)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := c.PauseSandbox(ctx, id); err != nil {
		t.Fatalf("pause with space again: %v", err)
	}
	if _, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: id, AccessToken: "tok-" + id}); err != nil {
		t.Fatal(err)
	}
	if out := vmExec(t, c, id, "cat $HOME/one $HOME/two; wc -c < /dev/shm/noise"); out != "one\ntwo\n33554432\n" {
		t.Fatalf("guest after pause/resume: %q", out)
	}
	// The snapshot dir is a mount point: unmount it before the destroy
	// removes the run dir. Pause first: a lazily resumed VM maps its RAM
	// file from there.
	if err := c.PauseSandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("umount", "-d", snapDir).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v %s", err, out)
	}
	if err := c.DestroySandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
}
