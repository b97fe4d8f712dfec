package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat and /proc/stat
// (USER_HZ, 100 on every Linux architecture hearth runs on).
const userHZ = 100

// hostProbe reads the figures of the machine the bench runs on from
// procfs: they describe the agent's host only when the bench runs there.
type hostProbe struct{ proc string }

// memAvailable is MemAvailable of /proc/meminfo, in bytes.
func (h hostProbe) memAvailable() (int64, error) {
	b, err := os.ReadFile(filepath.Join(h.proc, "meminfo"))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no MemAvailable in meminfo")
}

// vmmPIDs finds the VMM process of each sandbox: the process whose command
// line names its ID (QEMU's -name hearth-<id>, Firecracker's --id <id>).
func (h hostProbe) vmmPIDs(ids []string) []int {
	ents, err := os.ReadDir(h.proc)
	if err != nil {
		return nil
	}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join(h.proc, e.Name(), "cmdline"))
		if err != nil || !isVMM(cmd) {
			continue
		}
		for _, arg := range bytes.Split(cmd, []byte{0}) {
			id := strings.TrimPrefix(string(arg), "hearth-")
			if want[id] {
				pids = append(pids, pid)
				delete(want, id) // one process per sandbox
				break
			}
		}
	}
	return pids
}

func isVMM(cmdline []byte) bool {
	exe, _, _ := bytes.Cut(cmdline, []byte{0})
	base := filepath.Base(string(exe))
	return strings.HasPrefix(base, "qemu-system") || strings.HasPrefix(base, "firecracker")
}

// cpuTicks is a process's utime+stime, in USER_HZ ticks.
func (h hostProbe) cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(filepath.Join(h.proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// fields after its closing parenthesis (state is field 3).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("pid %d: short stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	st, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return ut + st, nil
}

// hostTicks is the busy and total ticks of all CPUs in /proc/stat.
func (h hostProbe) hostTicks() (busy, total int64, err error) {
	b, err := os.ReadFile(filepath.Join(h.proc, "stat"))
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, errors.New("no cpu line in /proc/stat")
	}
	for i, s := range f[1:] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}

// idleCPU measures pids over window: their mean CPU use in % of one core,
// and the whole host's busy share in % of all its cores. A process that
// exits during the window fails the measurement.
func (h hostProbe) idleCPU(ctx context.Context, pids []int, window time.Duration) (perVM, hostBusy float64, err error) {
	if len(pids) == 0 {
		return 0, 0, errors.New("no processes to measure")
	}
	sum := func() (int64, error) {
		var t int64
		for _, p := range pids {
			v, err := h.cpuTicks(p)
			if err != nil {
				return 0, err
			}
			t += v
		}
		return t, nil
	}
	t0 := time.Now()
	a, err := sum()
	if err != nil {
		return 0, 0, err
	}
	hb0, ht0, err := h.hostTicks()
	if err != nil {
		return 0, 0, err
	}
	if err := sleepCtx(ctx, window); err != nil {
		return 0, 0, err
	}
	b, err := sum()
	if err != nil {
		return 0, 0, fmt.Errorf("a VMM exited while idle: %w", err)
	}
	hb1, ht1, err := h.hostTicks()
	if err != nil {
		return 0, 0, err
	}
	secs := time.Since(t0).Seconds()
	perVM = float64(b-a) / userHZ / secs / float64(len(pids)) * 100
	if ht1 > ht0 {
		hostBusy = float64(hb1-hb0) / float64(ht1-ht0) * 100
	}
	return perVM, hostBusy, nil
}
