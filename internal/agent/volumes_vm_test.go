//go:build vm

package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// TestVMVolumes: a volume served over NFS into two running sandboxes at
// once; a file written in one guest is on the host and in the other
// guest, and one written through the content API is in both; a sandbox
// with volumes pauses and resumes (twice) with its mount working after
// each resume (read and write, seen by the other sandbox); a mounted
// volume is not deleted; a sandbox spawned from a snapshot of one mounts
// the same volume. It also logs the throughput of a sequential
// write on the volume vs on the root disk.
func TestVMVolumes(t *testing.T) {
	e := newVMEnv(t, "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := e.client
	const vol = "vmvol1"
	if err := c.CreateVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	create := func(id, path string) {
		t.Helper()
		_, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
			SandboxID: id, TemplateID: "tiny", TemplateKind: sbx.KindBase,
			VCPUs: 1, MemoryMB: 256, DiskSizeMB: 2048, AccessToken: "tok-" + id,
			Volumes: []service.HostVolumeMount{{VolumeID: vol, Path: path}},
		})
		if err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
	}
	sh := func(id, script string) string {
		t.Helper()
		res, err := c.Exec(ctx, id, service.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", script}})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("%s: %q: %+v %v", id, script, res, err)
		}
		return res.Stdout
	}
	create("vmvola", "/mnt/data")
	pidA := vmmPID(t, e.data, "vmvola")

	sh("vmvola", "echo written-in-a > /mnt/data/a.txt && mkdir -p /mnt/data/dir && echo deep > /mnt/data/dir/b.txt")
	host, _ := e.agent.mgr.volumes().DataPath(vol)
	if b, err := os.ReadFile(filepath.Join(host, "a.txt")); err != nil || string(b) != "written-in-a\n" {
		t.Fatalf("host side of the volume: %q %v", b, err)
	}
	if _, err := c.WriteVolumeFile(ctx, vol, "/api.txt", strings.NewReader("from-the-api"), service.VolumeAttrs{}); err != nil {
		t.Fatal(err)
	}
	if got := sh("vmvola", "cat /mnt/data/api.txt; echo; stat -c %u /mnt/data/api.txt"); got != "from-the-api\n1000\n" {
		t.Fatalf("content API file in the guest: %q", got)
	}

	// A second sandbox, running at the same time, mounts it elsewhere.
	create("vmvolb", "/data")
	if got := sh("vmvolb", "cat /data/a.txt /data/dir/b.txt"); got != "written-in-a\ndeep\n" {
		t.Fatalf("second sandbox reads %q", got)
	}
	sh("vmvolb", "echo from-b > /data/b.txt")
	if got := sh("vmvola", "cat /mnt/data/b.txt"); got != "from-b\n" {
		t.Fatalf("first sandbox reads the second's file as %q", got)
	}
	rc, err := c.ReadVolumeFile(ctx, vol, "/b.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "from-b\n" {
		t.Fatalf("content API reads %q", b)
	}

	// Pause and resume: the guest's NFS client reconnects to the server
	// started again before it runs; what it wrote is there, and the mount
	// reads and writes.
	for round := range 2 {
		name := fmt.Sprintf("/mnt/data/round%d.txt", round)
		sh("vmvola", "echo before-pause-"+strconv.Itoa(round)+" > "+name)
		if err := c.PauseSandbox(ctx, "vmvola"); err != nil {
			t.Fatalf("pause %d with volumes: %v", round, err)
		}
		// The volume stays usable from the other sandbox meanwhile.
		sh("vmvolb", fmt.Sprintf("echo while-paused-%d > /data/paused%d.txt", round, round))
		if _, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: "vmvola", AccessToken: "tok-vmvola"}); err != nil {
			t.Fatalf("resume %d: %v", round, err)
		}
		want := fmt.Sprintf("before-pause-%d\nwhile-paused-%d\n", round, round)
		if got := sh("vmvola", fmt.Sprintf("cat %s /mnt/data/paused%d.txt", name, round)); got != want {
			t.Fatalf("after resume %d the volume reads %q, want %q", round, got, want)
		}
		sh("vmvola", fmt.Sprintf("echo after-resume-%d > /mnt/data/resumed%d.txt", round, round))
		if got := sh("vmvolb", fmt.Sprintf("cat /data/resumed%d.txt", round)); got != fmt.Sprintf("after-resume-%d\n", round) {
			t.Fatalf("the other sandbox reads the resumed one's file as %q", got)
		}
	}
	if err := c.DeleteVolume(ctx, vol); service.KindOf(err) != service.KindConflict {
		t.Fatalf("delete a mounted volume: %v, want a conflict", err)
	}

	// A snapshot template of a sandbox with volumes: its children mount
	// the same volume (their restored kernels reconnect to the server
	// their spawn starts), and write to it.
	if _, err := c.CreateSnapshot(ctx, "vmvola", "vmvoltpl"); err != nil {
		t.Fatalf("snapshot with volumes: %v", err)
	}
	if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: "vmvolc", TemplateID: "vmvoltpl", TemplateKind: sbx.KindSnapshot,
		VCPUs: 1, MemoryMB: 256, DiskSizeMB: 2048, AccessToken: "tok-vmvolc",
	}); err != nil {
		t.Fatalf("create from the snapshot: %v", err)
	}
	sh("vmvolc", "echo from-child > /mnt/data/child.txt")
	if got := sh("vmvolb", "cat /data/child.txt /data/resumed1.txt"); got != "from-child\nafter-resume-1\n" {
		t.Fatalf("the snapshot's child's write reads %q in another sandbox", got)
	}
	if err := c.DestroySandbox(ctx, "vmvolc"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSnapshot(ctx, "vmvoltpl"); err != nil {
		t.Fatal(err)
	}

	// Throughput of one sequential write, volume vs root disk, same guest.
	// busybox date has no %N: /proc/uptime counts in hundredths.
	secs := func(path string) float64 {
		out := sh("vmvola", "read s x </proc/uptime; dd if=/dev/zero of="+path+" bs=1M count=64 conv=fsync 2>/dev/null; read e x </proc/uptime; rm -f "+path+"; echo $s $e")
		var s, e float64
		if _, err := fmt.Sscan(out, &s, &e); err != nil || e <= s {
			t.Fatalf("timing output: %q", out)
		}
		return e - s
	}
	// Three rounds, alternating, so a slow moment of the host hits both.
	var root, volume float64
	for range 3 {
		root += secs("/home/user/big")
		volume += secs("/mnt/data/big")
	}
	t.Logf("VOLUME THROUGHPUT 3 x 64 MiB dd conv=fsync: root disk %.2fs (%.1f MiB/s), volume %.2fs (%.1f MiB/s): volume/root throughput ratio %.2f",
		root, 192/root, volume, 192/volume, root/volume)

	for _, id := range []string{"vmvola", "vmvolb"} {
		if err := c.DestroySandbox(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// The volume outlives its sandboxes.
	if b, err := os.ReadFile(filepath.Join(host, "b.txt")); err != nil || string(b) != "from-b\n" {
		t.Fatalf("volume after its sandboxes: %q %v", b, err)
	}
	if err := c.DeleteVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(host); !os.IsNotExist(err) {
		t.Fatalf("volume directory after delete: %v", err)
	}
	if err := e.agent.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.Close(); err != nil {
		t.Fatal(err)
	}
	assertNoLeaks(t, e.data, "vmvola", pidA)
}

// TestVMVolumesAgentCrash: after an agent crash (its NFS server dies with
// it) the new agent adopts a sandbox with a volume and serves the volume
// again; the guest, whose mount outlived the server, reads and writes it
// through the new one.
func TestVMVolumesAgentCrash(t *testing.T) {
	e := newVMEnv(t, "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const vol, id = "vmvolcrash", "vmvolcr1"
	if err := e.client.CreateVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: id, TemplateID: "tiny", VCPUs: 1, MemoryMB: 256, AccessToken: "tok",
		Volumes: []service.HostVolumeMount{{VolumeID: vol, Path: "/vol"}},
	}); err != nil {
		t.Fatal(err)
	}
	pid := vmmPID(t, e.data, id)
	vmExec(t, e.client, id, "echo before > /vol/before")

	a2, c2 := e.crashAndRestart(t, ctx, id)
	if l := a2.Manager().List(); len(l) != 1 || l[0].State != sbx.StateRunning {
		t.Fatalf("new agent lists %+v, want %s re-adopted and running", l, id)
	}
	if out := vmExec(t, c2, id, "cat /vol/before && echo after > /vol/after"); strings.TrimSpace(out) != "before" {
		t.Fatalf("volume in the adopted guest: %q", out)
	}
	host, _ := a2.Manager().volumes().DataPath(vol)
	if b, err := os.ReadFile(filepath.Join(host, "after")); err != nil || string(b) != "after\n" {
		t.Fatalf("write after the crash on the host: %q %v", b, err)
	}
	if err := c2.DestroySandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := c2.DeleteVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if err := a2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.Close(); err != nil {
		t.Fatal(err)
	}
	assertNoLeaks(t, e.data, id, pid)
}
