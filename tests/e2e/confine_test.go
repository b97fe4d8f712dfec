//go:build vm

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestVMMConfined reads a running sandbox's VMM from /proc and its cgroup:
// an unprivileged uid, QEMU's seccomp filter (Seccomp: 2), and memory, CPU
// and pids limits sized from the sandbox. It logs the VMM's memory peak
// above guest RAM (what the overhead in memory.max must cover).
func TestVMMConfined(t *testing.T) {
	a := newAPI(t)
	sb := a.create(map[string]any{"template": "base", "vcpus": 1, "memory_mb": 512})
	logConsoleOnFailure(t, sb.ID)
	// Touch most of the guest's RAM, so the peak below is guest RAM plus
	// what QEMU itself needs.
	if r := a.exec(sb.ID, "python3", "-c", "x = bytearray(b'\\x01') * (400 << 20); print('ok')"); strings.TrimSpace(r.Stdout) != "ok" {
		t.Fatalf("workload: %+v", r)
	}
	pid := vmmPID(t, sb.ID)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	field := func(name string) string {
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, name+":"); ok {
				return strings.Fields(v)[0]
			}
		}
		t.Fatalf("no %s in /proc/%d/status", name, pid)
		return ""
	}
	if uid := field("Uid"); uid == "0" {
		t.Errorf("VMM runs as root")
	}
	if gid := field("Gid"); gid == "0" {
		t.Errorf("VMM runs with gid 0")
	}
	if c := field("CapEff"); c != "0000000000000000" {
		t.Errorf("VMM has capabilities %s", c)
	}
	if s := field("Seccomp"); s != "2" {
		t.Errorf("Seccomp: %s, want 2 (filter mode)", s)
	}

	cg := cgroupFiles(t, pid)
	read := func(ctrl, file string) int64 {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(cg[ctrl], file))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.Fields(string(b))[0]
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("%s/%s = %q", cg[ctrl], file, b)
		}
		return n
	}
	guest := int64(512) << 20
	var limit, peak, quota, period, pids int64
	if dir, v2 := cg[""]; v2 && dir != "" {
		limit, peak, pids = read("", "memory.max"), read("", "memory.peak"), read("", "pids.max")
		b, _ := os.ReadFile(filepath.Join(dir, "cpu.max"))
		fmt.Sscan(string(b), &quota, &period)
	} else {
		limit, peak = read("memory", "memory.limit_in_bytes"), read("memory", "memory.max_usage_in_bytes")
		quota, period = read("cpu", "cpu.cfs_quota_us"), read("cpu", "cpu.cfs_period_us")
		pids = read("pids", "pids.max")
	}
	if limit <= guest || limit > guest+(1<<30) {
		t.Errorf("memory limit %d, want guest RAM %d plus an overhead below 1 GiB", limit, guest)
	}
	if quota != period || period <= 0 {
		t.Errorf("cpu quota %d per %d µs, want one CPU", quota, period)
	}
	if pids <= 0 || pids > 4096 {
		t.Errorf("pids.max %d", pids)
	}
	t.Logf("VMM uid %s; memory limit %d MiB, peak %d MiB (guest RAM 512 MiB, overhead peak %d MiB)",
		field("Uid"), limit>>20, peak>>20, (peak-guest)>>20)
}

// cgroupFiles maps a process's cgroup controllers ("" on v2) to their
// directories under /sys/fs/cgroup.
func cgroupFiles(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
				out[""] = filepath.Join("/sys/fs/cgroup", parts[2])
			}
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = filepath.Join("/sys/fs/cgroup", c, parts[2])
		}
	}
	return out
}
