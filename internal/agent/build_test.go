package agent

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
)

// A build cut short by an agent crash leaves its VM running (VMMs outlive
// the agent) and staging files; the next start removes them.
func TestBuildLeftoversRemovedAtStart(t *testing.T) {
	h := newHarness(t, false)
	builds := filepath.Join(h.data, "builds")
	vmDir := filepath.Join(builds, "vms", "bld0123456789ab")
	if err := os.MkdirAll(filepath.Join(vmDir, "vm"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A stand-in VMM: a process whose command line names the VM's run dir,
	// as a real one's does.
	vmmProc := exec.Command("/bin/sh", "-c", "sleep 60; : "+vmDir+"/vm/disk")
	if err := vmmProc.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- vmmProc.Wait() }()
	if err := os.WriteFile(filepath.Join(vmDir, "vm", "vmm.pid"), []byte(strconv.Itoa(vmmProc.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(builds, "cache", "k.ext4.tmp-abc"), filepath.Join(builds, "work", "tree-1", "f")} {
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keep := filepath.Join(builds, "cache", "k.ext4")
	if err := os.WriteFile(keep, []byte("cached step"), 0o600); err != nil {
		t.Fatal(err)
	}

	h.newManager()

	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		vmmProc.Process.Kill()
		t.Fatal("the crashed build's VMM is still running")
	}
	for _, p := range []string{vmDir, filepath.Join(builds, "cache", "k.ext4.tmp-abc"), filepath.Join(builds, "work", "tree-1")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s survived the restart", p)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a finished cache entry went: %v", err)
	}
}

// A build's start-command sandbox is the agent's own: the control plane
// does not see it (its reconciler would destroy a sandbox it never made),
// and after a crash it is removed, not re-adopted.
func TestInternalSandboxesUnlistedAndDroppedAfterCrash(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	for _, sp := range []Spec{
		{ID: "user1", TemplateID: "base", VCPUs: 1, MemoryMB: 128, AccessToken: "t"},
		{ID: "bsbuild1", TemplateID: "base", VCPUs: 1, MemoryMB: 128, AccessToken: "t", Internal: true},
	} {
		if _, err := h.m.Create(ctx, sp); err != nil {
			t.Fatal(err)
		}
	}
	if l := h.m.List(); len(l) != 1 || l[0].ID != "user1" {
		t.Fatalf("List = %+v, want only user1", l)
	}
	// A new manager on the same data dir, as after a crash.
	m2 := h.newManager()
	if _, err := m2.Get("bsbuild1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("internal sandbox after a restart: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.data, "sandboxes", "bsbuild1")); err == nil {
		t.Error("internal sandbox's run dir survived the restart")
	}
}

func TestTemplateDisk(t *testing.T) {
	zero, free := 0, 500
	for _, tc := range []struct {
		name    string
		req     BuildRequest
		fsBytes int64
		want    int
		wantErr bool
	}{
		{"default", BuildRequest{}, 300 << 20, sbx.DefaultDiskSizeMB, false},
		{"default under a bigger file system", BuildRequest{}, 30000 << 20, 30000, false},
		{"explicit", BuildRequest{TemplateDiskMB: 4096}, 300 << 20, 4096, false},
		{"explicit wins over min free", BuildRequest{TemplateDiskMB: 4096, MinFreeDiskMB: &free}, 300 << 20, 4096, false},
		{"explicit smaller than the file system", BuildRequest{TemplateDiskMB: 1024}, 2000 << 20, 0, true},
		{"min free on top (rounded up to MiB)", BuildRequest{MinFreeDiskMB: &free}, 1000<<20 + 1, 1501, false},
		{"min free 0: the sandbox minimum", BuildRequest{MinFreeDiskMB: &zero}, 300 << 20, 1024, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := templateDisk(tc.req, tc.fsBytes)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("templateDisk = %d, %v; want %d (error: %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
