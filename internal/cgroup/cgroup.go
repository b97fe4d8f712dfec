// Package cgroup puts each sandbox's VMM in its own cgroup with memory, CPU
// and process-count limits. It speaks cgroup v2 (the unified hierarchy,
// Debian 12's default) and, where the controllers are still on v1
// hierarchies (hybrid hosts, some containers), v1.
//
// Groups live below the agent's own cgroup (read from /proc/self/cgroup),
// in a directory named by the Manager's name, so a systemd unit or a
// container that limits the agent limits its sandboxes too, and several
// agents on one host never share groups:
//
//	v2: <mount>/<agent's cgroup>/<name>/<sandbox>/{memory.max,cpu.max,pids.max}
//	v1: <mount>/<ctrl>/<agent's cgroup for ctrl>/<name>/<sandbox>/...
//
// On v2 the agent's cgroup must be able to hand controllers to children;
// when it has processes itself (cgroup v2's "no internal processes" rule),
// the agent moves them into a leaf "<name>-agent" first (what systemd's
// Delegate=yes units are expected to do).
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Limits of one group. Zero fields are left unlimited.
type Limits struct {
	MemoryBytes int64 // memory.max (v1: memory.limit_in_bytes)
	CPUs        int   // cpu.max "<CPUs*period> <period>" (v1: cfs quota)
	Pids        int   // pids.max
}

// cpuPeriodUS is the CFS period used for cpu.max.
const cpuPeriodUS = 100000

// Manager creates groups under one directory per controller hierarchy.
type Manager struct {
	v2   bool
	dirs map[string]string // v2: {"": dir}; v1: controller -> dir
}

// Group is one sandbox's cgroup.
type Group struct {
	v2   bool
	dirs map[string]string
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)

// New prepares <agent's cgroup>/<name> on this host's hierarchies. root is
// the cgroup file system mount ("" = /sys/fs/cgroup).
func New(root, name string) (*Manager, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("cgroup: name %q: want [a-zA-Z0-9_.-], at most 64", name)
	}
	if root == "" {
		root = "/sys/fs/cgroup"
	}
	self, err := readSelf("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return newV2(root, self[""], name, limitControllers)
	}
	m := &Manager{dirs: map[string]string{}}
	for _, c := range []string{"memory", "cpu", "pids"} { // the hierarchies a v1 Group spans
		mnt := filepath.Join(root, c)
		if _, err := os.Stat(filepath.Join(mnt, "cgroup.procs")); err != nil {
			return nil, fmt.Errorf("cgroup: no v2 hierarchy at %s and no v1 %s controller at %s: %w", root, c, mnt, err)
		}
		dir := filepath.Join(mnt, self[c], name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		m.dirs[c] = dir
	}
	return m, nil
}

// limitControllers are the controllers Limits need.
var limitControllers = []string{"memory", "cpu", "pids"}

// newV2 prepares <root>/<self>/<name> with the controllers want enabled
// for its groups (the tests pass the ones a hybrid host has on v2).
func newV2(root, self, name string, want []string) (*Manager, error) {
	parent := filepath.Join(root, self)
	avail, err := os.ReadFile(filepath.Join(parent, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	for _, c := range want {
		if !slices.Contains(strings.Fields(string(avail)), c) {
			return nil, fmt.Errorf("cgroup: controller %s is not available in %s (delegate it to the agent's unit: Delegate=yes)", c, parent)
		}
	}
	enable := func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+strings.Join(want, " +")), 0)
	}
	if err := enable(parent); err != nil {
		if !errors.Is(err, syscall.EBUSY) {
			return nil, fmt.Errorf("cgroup: enable controllers in %s: %w", parent, err)
		}
		// Processes in parent: move them (the agent, its threads and
		// children) into a leaf, then enable.
		leaf := filepath.Join(parent, name+"-agent")
		if err := os.MkdirAll(leaf, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		if err := moveAll(parent, leaf); err != nil {
			return nil, err
		}
		if err := enable(parent); err != nil {
			return nil, fmt.Errorf("cgroup: enable controllers in %s: %w", parent, err)
		}
	}
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	if err := enable(dir); err != nil {
		return nil, fmt.Errorf("cgroup: enable controllers in %s: %w", dir, err)
	}
	return &Manager{v2: true, dirs: map[string]string{"": dir}}, nil
}

// Create makes (or reuses) the group id with lim applied.
func (m *Manager) Create(id string, lim Limits) (*Group, error) {
	if !nameRE.MatchString(id) {
		return nil, fmt.Errorf("cgroup: group name %q", id)
	}
	g := &Group{v2: m.v2, dirs: map[string]string{}}
	for c, d := range m.dirs {
		dir := filepath.Join(d, id)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		g.dirs[c] = dir
	}
	if err := g.apply(lim); err != nil {
		_ = g.Remove()
		return nil, err
	}
	return g, nil
}

func (g *Group) apply(lim Limits) error {
	type kv struct{ ctrl, file, val string }
	var w []kv
	if g.v2 {
		if lim.MemoryBytes > 0 {
			w = append(w, kv{"", "memory.max", strconv.FormatInt(lim.MemoryBytes, 10)},
				kv{"", "memory.swap.max", "0"})
		}
		if lim.CPUs > 0 {
			w = append(w, kv{"", "cpu.max", fmt.Sprintf("%d %d", lim.CPUs*cpuPeriodUS, cpuPeriodUS)})
		}
		if lim.Pids > 0 {
			w = append(w, kv{"", "pids.max", strconv.Itoa(lim.Pids)})
		}
	} else {
		if lim.MemoryBytes > 0 {
			w = append(w, kv{"memory", "memory.limit_in_bytes", strconv.FormatInt(lim.MemoryBytes, 10)})
		}
		if lim.CPUs > 0 {
			w = append(w, kv{"cpu", "cpu.cfs_period_us", strconv.Itoa(cpuPeriodUS)},
				kv{"cpu", "cpu.cfs_quota_us", strconv.Itoa(lim.CPUs * cpuPeriodUS)})
		}
		if lim.Pids > 0 {
			w = append(w, kv{"pids", "pids.max", strconv.Itoa(lim.Pids)})
		}
	}
	for _, x := range w {
		p := filepath.Join(g.dirs[x.ctrl], x.file)
		if err := os.WriteFile(p, []byte(x.val), 0); err != nil {
			// memory.swap.max is absent without swap accounting.
			if x.file == "memory.swap.max" && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return fmt.Errorf("cgroup: %s = %s: %w", p, x.val, err)
		}
	}
	return nil
}

// Add moves a process (all its threads) into the group.
func (g *Group) Add(pid int) error {
	for _, d := range g.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("cgroup: add %d to %s: %w", pid, d, err)
		}
	}
	return nil
}

// Dirs lists the group's directories (one on v2, one per controller on v1).
func (g *Group) Dirs() []string {
	var out []string
	for _, d := range g.dirs {
		out = append(out, d)
	}
	return out
}

// Remove deletes the group once its processes are gone (the kernel may
// take a moment to release a killed process's membership); missing is fine.
func (g *Group) Remove() error {
	var errs []error
	for _, d := range g.dirs {
		var err error
		for i := 0; i < 50; i++ {
			err = os.Remove(d)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				err = nil
				break
			}
			if !errors.Is(err, syscall.EBUSY) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cgroup: remove %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// Close removes the Manager's directories when no group is left in them
// (at agent shutdown; sandboxes paused across a restart keep theirs).
func (m *Manager) Close() error {
	for _, d := range m.dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.EBUSY) && !errors.Is(err, syscall.ENOTEMPTY) {
			return fmt.Errorf("cgroup: %w", err)
		}
	}
	return nil
}

// Remove deletes group id (its processes must be gone); missing is fine.
func (m *Manager) Remove(id string) error {
	if !nameRE.MatchString(id) {
		return fmt.Errorf("cgroup: group name %q", id)
	}
	g := &Group{v2: m.v2, dirs: map[string]string{}}
	for c, d := range m.dirs {
		g.dirs[c] = filepath.Join(d, id)
	}
	return g.Remove()
}

// Prune removes the groups of this Manager whose names keep does not
// contain (left by a crashed agent); groups with processes stay.
func (m *Manager) Prune(keep func(id string) bool) error {
	var errs []error
	for c, d := range m.dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range ents {
			if !e.IsDir() || keep(e.Name()) {
				continue
			}
			g := &Group{v2: m.v2, dirs: map[string]string{c: filepath.Join(d, e.Name())}}
			if err := g.Remove(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// readSelf parses /proc/self/cgroup: controller -> path ("" for v2).
func readSelf(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out, sc.Err()
}

// moveAll moves every process listed in from/cgroup.procs to to.
func moveAll(from, to string) error {
	for range 10 { // processes may fork meanwhile
		b, err := os.ReadFile(filepath.Join(from, "cgroup.procs"))
		if err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		pids := strings.Fields(string(b))
		if len(pids) == 0 {
			return nil
		}
		for _, p := range pids {
			// A process that exited meanwhile is fine.
			if err := os.WriteFile(filepath.Join(to, "cgroup.procs"), []byte(p), 0); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("cgroup: move %s to %s: %w", p, to, err)
			}
		}
	}
	return fmt.Errorf("cgroup: %s keeps gaining processes", from)
}
