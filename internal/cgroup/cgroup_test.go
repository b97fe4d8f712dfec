package cgroup

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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

// TestV2OnUnifiedMount runs the cgroup v2 code on a real cgroup2
// hierarchy. On a hybrid host (memory, cpu and pids bound to v1, as on
// the machine this was written on) the unified mount has none of the
// limit controllers, so it runs with the controllers the hierarchy does
// have: the controller check, enabling them in subtree_control, the "no
// internal processes" move of the parent's processes into the -agent
// leaf, group creation, membership, Remove, Prune and Close all run for
// real; the limit files are checked by TestV2LimitFiles instead.
func TestV2OnUnifiedMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	root := ""
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			root = p
			break
		}
	}
	if root == "" {
		t.Skip("no cgroup2 hierarchy mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified")
	}
	b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	ctrls := strings.Fields(string(b))
	if len(ctrls) == 0 {
		t.Skipf("%s has no controllers to enable", root)
	}
	t.Logf("cgroup2 at %s with controllers %v (limit controllers on v2: %v)", root, ctrls, func() []string {
		var on []string
		for _, c := range limitControllers {
			if slices.Contains(ctrls, c) {
				on = append(on, c)
			}
		}
		return on
	}())
	// Delegate the controllers to the test's groups as systemd does for a
	// Delegate=yes unit (undone at the end when the test turned them on).
	rootCtl := filepath.Join(root, "cgroup.subtree_control")
	before, err := os.ReadFile(rootCtl)
	if err != nil {
		t.Fatal(err)
	}
	var added []string
	for _, c := range ctrls {
		if !slices.Contains(strings.Fields(string(before)), c) {
			added = append(added, c)
		}
	}
	if len(added) > 0 {
		if err := os.WriteFile(rootCtl, []byte("+"+strings.Join(added, " +")), 0); err != nil {
			t.Skipf("cannot enable %v in %s: %v", added, rootCtl, err)
		}
	}
	// The agent's own cgroup: a test group holding a process, as a
	// systemd unit's group holds the agent.
	self := fmt.Sprintf("/hearth-v2test-%d", rand.IntN(1_000_000))
	parent := filepath.Join(root, self)
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	agentProc := exec.Command("sleep", "60")
	if err := agentProc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agentProc.Process.Kill()
		agentProc.Wait()
		// Deepest first; the kernel may take a moment to release a
		// killed process.
		for _, d := range []string{"hearth-x/sb1", "hearth-x/stale", "hearth-x", "hearth-x-agent", ""} {
			(&Group{dirs: map[string]string{"": filepath.Join(parent, d)}}).Remove()
		}
		if len(added) > 0 {
			os.WriteFile(rootCtl, []byte("-"+strings.Join(added, " -")), 0)
		}
	})
	if err := os.WriteFile(filepath.Join(parent, "cgroup.procs"), []byte(strconv.Itoa(agentProc.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}

	m, err := newV2(root, self, "hearth-x", ctrls)
	if err != nil {
		t.Fatal(err)
	}
	if got := procCgroupV2(t, agentProc.Process.Pid); got != self+"/hearth-x-agent" {
		t.Errorf("the parent's process is in %q, want it moved to the -agent leaf", got)
	}
	for _, d := range []string{parent, m.dirs[""]} {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.subtree_control"))
		if strings.Join(strings.Fields(string(b)), " ") != strings.Join(ctrls, " ") {
			t.Errorf("%s/cgroup.subtree_control = %q, want %v", d, b, ctrls)
		}
	}
	g, err := m.Create("sb1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	vmm := exec.Command("sleep", "60")
	if err := vmm.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(vmm.Process.Pid); err != nil {
		vmm.Process.Kill()
		t.Fatal(err)
	}
	if got := procCgroupV2(t, vmm.Process.Pid); got != self+"/hearth-x/sb1" {
		t.Errorf("VMM in %q, want %s/hearth-x/sb1", got, self)
	}
	if _, err := m.Create("stale", Limits{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Prune(func(id string) bool { return id == "sb1" }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(m.dirs[""], "stale")); !os.IsNotExist(err) {
		t.Errorf("Prune kept the stale group: %v", err)
	}
	vmm.Process.Kill()
	vmm.Wait()
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.dirs[""]); !os.IsNotExist(err) {
		t.Errorf("Close left %s", m.dirs[""])
	}
}

// procCgroupV2 is a process's path in the unified hierarchy.
func procCgroupV2(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	return ""
}

// TestV2LimitFiles checks what a v2 group writes for its limits, in a
// plain directory: a kernel hierarchy with memory, cpu and pids on v2 is
// not available on hybrid hosts.
func TestV2LimitFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g := &Group{v2: true, dirs: map[string]string{"": dir}}
	if err := g.apply(Limits{MemoryBytes: 768 << 20, CPUs: 2, Pids: 256}); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"memory.max": strconv.Itoa(768 << 20), "memory.swap.max": "0", "cpu.max": "200000 100000", "pids.max": "256",
	} {
		if b, err := os.ReadFile(filepath.Join(dir, file)); err != nil || string(b) != want {
			t.Errorf("%s = %q (%v), want %q", file, b, err, want)
		}
	}
}
