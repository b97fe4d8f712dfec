package bench

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeProc writes a procfs tree: meminfo, stat and one dir per process
// with its cmdline (NUL-separated args) and stat.
func fakeProc(t *testing.T, memAvailKB string, cpuLine string, procs map[string][2]string) string {
	t.Helper()
	dir := t.TempDir()
	write := func(rel, s string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("meminfo", "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   "+memAvailKB+" kB\n")
	write("stat", cpuLine+"\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
	for pid, p := range procs {
		write(filepath.Join(pid, "cmdline"), p[0])
		write(filepath.Join(pid, "stat"), p[1])
	}
	return dir
}

// statLine is a /proc/<pid>/stat line whose comm is comm and whose utime
// and stime (fields 14 and 15) are ut and st.
func statLine(pid, comm, ut, st string) string {
	return pid + " (" + comm + ") S 1 1 1 0 -1 4194560 100 0 0 0 " + ut + " " + st + " 0 0 20 0 5 0 100 1000 100"
}

func TestHostProbe(t *testing.T) {
	t.Parallel()
	args := func(a ...string) string { return strings.Join(a, "\x00") + "\x00" }
	procs := map[string][2]string{
		"100": {args("/usr/bin/qemu-system-x86_64", "-name", "hearth-aaa", "-m", "512M"), statLine("100", "qemu-system-x86", "250", "50")},
		"101": {args("qemu-system-x86_64", "-name", "hearth-bbb"), statLine("101", "weird) (name", "7", "3")},
		"102": {args("/usr/bin/firecracker", "--id", "ccc"), statLine("102", "firecracker", "1", "1")},
		// Names a sandbox but is not a VMM (a shell, a tail of its log).
		"103": {args("tail", "-f", "/data/sandboxes/aaa/console.log", "hearth-aaa"), statLine("103", "tail", "9", "9")},
		// A VMM of a sandbox the run did not create.
		"104":  {args("qemu-system-x86_64", "-name", "hearth-zzz"), statLine("104", "qemu", "1", "1")},
		"self": {args("ignored"), statLine("1", "x", "0", "0")},
	}
	h := hostProbe{proc: fakeProc(t, "2048", "cpu  100 0 100 700 100 0 0 0 0 0", procs)}

	mem, err := h.memAvailable()
	if err != nil || mem != 2048<<10 {
		t.Errorf("memAvailable = %d, %v", mem, err)
	}
	pids := h.vmmPIDs([]string{"aaa", "bbb", "ccc", "missing"})
	slices.Sort(pids)
	if !slices.Equal(pids, []int{100, 101, 102}) {
		t.Errorf("vmmPIDs = %v", pids)
	}
	for _, tc := range []struct {
		pid  int
		want int64
	}{{100, 300}, {101, 10}, {102, 2}} {
		if got, err := h.cpuTicks(tc.pid); err != nil || got != tc.want {
			t.Errorf("cpuTicks(%d) = %d, %v; want %d", tc.pid, got, err, tc.want)
		}
	}
	if _, err := h.cpuTicks(999); err == nil {
		t.Error("cpuTicks of a missing process succeeded")
	}
	busy, total, err := h.hostTicks()
	if err != nil || busy != 200 || total != 1000 {
		t.Errorf("hostTicks = %d/%d, %v", busy, total, err)
	}

	// idleCPU over a short window of an unchanging tree: nothing used.
	per, hostBusy, err := h.idleCPU(context.Background(), pids, 10*time.Millisecond)
	if err != nil || per != 0 || hostBusy != 0 {
		t.Errorf("idleCPU = %v, %v, %v", per, hostBusy, err)
	}
	if _, _, err := h.idleCPU(context.Background(), nil, time.Millisecond); err == nil {
		t.Error("idleCPU of no processes succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := h.idleCPU(ctx, pids, time.Hour); err == nil {
		t.Error("idleCPU ignored its context")
	}
}

// TestIdleCPUOfThisProcess burns CPU in this process during the window
// and checks the figure sees it.
func TestIdleCPUOfThisProcess(t *testing.T) {
	t.Parallel()
	h := hostProbe{proc: "/proc"}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		x := 1.0
		for {
			select {
			case <-stop:
				_ = x
				return
			default:
				for range 1000 {
					x = math.Sqrt(x + 1)
				}
			}
		}
	}()
	per, _, err := h.idleCPU(context.Background(), []int{os.Getpid()}, 500*time.Millisecond)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	// A spinning goroutine gets some CPU over half a second even on a
	// loaded machine; the whole process cannot use more than every core.
	if per <= 0 || per > 100*float64(runtime.NumCPU())+1 {
		t.Errorf("CPU of a spinning process = %.1f%% of a core", per)
	}
}
