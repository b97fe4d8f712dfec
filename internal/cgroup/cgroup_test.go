package cgroup

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestReadSelf(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "cgroup")
	os.WriteFile(p, []byte("12:pids:/a\n4:cpu,cpuacct:/b/c\n1:name=systemd:/\n0::/user.slice/x.scope\n"), 0o644)
	got, err := readSelf(p)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"pids": "/a", "cpu": "/b/c", "cpuacct": "/b/c", "": "/user.slice/x.scope"} {
		if got[k] != want {
			t.Errorf("%q = %q, want %q", k, got[k], want)
		}
	}
}

// TestGroupLimitsAndMembership runs on this host's real hierarchy (v2 or
// v1): limits are written, a process joins, the group goes away after it.
func TestGroupLimitsAndMembership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	name := fmt.Sprintf("hearth-test-%d", rand.IntN(1_000_000))
	m, err := New("", name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range m.dirs {
			os.Remove(d)
		}
	})
	g, err := m.Create("sb1", Limits{MemoryBytes: 256 << 20, CPUs: 2, Pids: 64})
	if err != nil {
		t.Fatal(err)
	}
	read := func(ctrl, file string) string {
		b, err := os.ReadFile(filepath.Join(g.dirs[ctrl], file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if m.v2 {
		if got := read("", "memory.max"); got != strconv.Itoa(256<<20) {
			t.Errorf("memory.max = %s", got)
		}
		if got := read("", "cpu.max"); got != "200000 100000" {
			t.Errorf("cpu.max = %s", got)
		}
		if got := read("", "pids.max"); got != "64" {
			t.Errorf("pids.max = %s", got)
		}
	} else {
		if got := read("memory", "memory.limit_in_bytes"); got != strconv.Itoa(256<<20) {
			t.Errorf("memory.limit_in_bytes = %s", got)
		}
		if got := read("cpu", "cpu.cfs_quota_us"); got != "200000" {
			t.Errorf("cpu.cfs_quota_us = %s", got)
		}
		if got := read("pids", "pids.max"); got != "64" {
			t.Errorf("pids.max = %s", got)
		}
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	if !strings.Contains(string(b), name+"/sb1") {
		t.Errorf("/proc/pid/cgroup = %s, want %s/sb1", b, name)
	}
	if err := m.Prune(func(string) bool { return false }); err == nil {
		t.Error("Prune removed a group with a process in it")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := m.Prune(func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create("sb2", Limits{Pids: 8}); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("sb2"); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("sb2"); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range m.dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("Close left %s: %v", d, err)
		}
	}
	for _, d := range g.Dirs() {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", d, err)
		}
	}
}
