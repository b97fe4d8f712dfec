//go:build vm

package agent

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/sandboxsnap"
	"github.com/hearth-sandbox/hearth/internal/service"
	"golang.org/x/sys/unix"
)

// BenchmarkVMLazyRestore measures, in one run, the restore paths of the
// QEMU driver before (EagerRestore: every resume and spawn copies the
// snapshot into a RAM file of its own) and after lazy restore (the
// snapshot's RAM file mapped copy-on-write), and reports ratios:
//
//   - resume of a 2 GiB guest with ~1.5 GiB touched vs a 256 MiB guest;
//   - host memory per child of a 512 MiB template with ~100 MiB of touched
//     heap (HEARTH_BENCH_CHILDREN children, default 4), lazy vs eager;
//   - the first exec after a resume vs a warm exec.
//
// Run: HEARTH_IMAGES_DIR=... go test -tags vm -run '^$' -bench VMLazyRestore -benchtime 1x ./internal/agent
func BenchmarkVMLazyRestore(b *testing.B) {
	children := 4
	if v, err := strconv.Atoi(os.Getenv("HEARTH_BENCH_CHILDREN")); err == nil && v > 0 {
		children = v
	}
	for b.Loop() {
		eager := measureRestore(b, true, children)
		lazy := measureRestore(b, false, children)
		b.ReportMetric(eager.resumeBig.Seconds()*1000, "eager-resume-2g-ms")
		b.ReportMetric(eager.resumeSmall.Seconds()*1000, "eager-resume-256m-ms")
		b.ReportMetric(lazy.resumeBig.Seconds()*1000, "lazy-resume-2g-ms")
		b.ReportMetric(lazy.resumeSmall.Seconds()*1000, "lazy-resume-256m-ms")
		b.ReportMetric(ratio(eager.resumeBig, eager.resumeSmall), "eager-2g/256m")
		b.ReportMetric(ratio(lazy.resumeBig, lazy.resumeSmall), "lazy-2g/256m")
		b.ReportMetric(float64(eager.childMem)/(1<<20), "eager-child-MiB")
		b.ReportMetric(float64(lazy.childMem)/(1<<20), "lazy-child-MiB")
		b.ReportMetric(float64(lazy.childMem)/float64(eager.childMem), "child-mem-lazy/eager")
		b.ReportMetric(float64(eager.availDelta)/(1<<20), "eager-memavail-per-child-MiB")
		b.ReportMetric(float64(lazy.availDelta)/(1<<20), "lazy-memavail-per-child-MiB")
		b.ReportMetric(ratio(eager.firstExec, eager.warmExec), "eager-first/warm-exec")
		b.ReportMetric(ratio(lazy.firstExec, lazy.warmExec), "lazy-first/warm-exec")
		b.ReportMetric(lazy.warmExec.Seconds()*1000, "lazy-warm-exec-ms")
		b.ReportMetric(lazy.firstExec.Seconds()*1000, "lazy-first-exec-ms")
		b.ReportMetric(lazy.pauseBig.Seconds()*1000, "lazy-pause-2g-ms")
		b.ReportMetric(ratio(lazy.coldFirst, lazy.warmExec), "cold-first/warm-exec")
		b.ReportMetric(ratio(lazy.coldPrefetched, lazy.warmExec), "cold-prefetched-first/warm-exec")
		b.ReportMetric(eager.pauseBig.Seconds()*1000, "eager-pause-2g-ms")
	}
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

type restoreFigures struct {
	resumeSmall, resumeBig time.Duration // medians
	pauseBig               time.Duration
	warmExec, firstExec    time.Duration // medians
	coldFirst              time.Duration // first exec, RAM file evicted, no prefetch
	coldPrefetched         time.Duration // the same with the working set read ahead
	childMem               int64         // accounted host memory per child
	availDelta             int64         // MemAvailable drop per child
}

func benchExec(b *testing.B, e *vmEnv, id, script string) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t0 := time.Now()
	res, err := e.client.Exec(ctx, id, service.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", script}})
	if err != nil || res.ExitCode != 0 {
		b.Fatalf("exec %q: %+v %v", script, res, err)
	}
	return time.Since(t0)
}

func median(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}

func measureRestore(b *testing.B, eager bool, children int) (f restoreFigures) {
	mode := "lazy"
	if eager {
		mode = "eager"
	}
	e := newVMEnvWith(b, func(o *Options) {
		s, err := sandboxsnap.New(sandboxsnap.Options{Driver: o.Driver.(sandboxsnap.Driver), DataDir: o.DataDir, Logger: o.Logger, EagerRestore: eager})
		if err != nil {
			b.Fatal(err)
		}
		o.Snapshots = s
	}, "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	c := e.client
	create := func(id, tpl string, kind sbx.TemplateKind, memMB int) {
		b.Helper()
		if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
			SandboxID: id, TemplateID: tpl, TemplateKind: kind,
			VCPUs: 1, MemoryMB: memMB, DiskSizeMB: 4096, AccessToken: "tok-" + id,
		}); err != nil {
			b.Fatal(err)
		}
	}
	pauseResume := func(id string) (pause, resume time.Duration) {
		b.Helper()
		t0 := time.Now()
		if err := c.PauseSandbox(ctx, id); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: id, AccessToken: "tok-" + id}); err != nil {
			b.Fatal(err)
		}
		return t1.Sub(t0), time.Since(t1)
	}
	// fill writes n MiB of non-zero data into guest memory (tmpfs, then the
	// page cache of a disk file for what tmpfs cannot hold).
	fill := func(id string, shmMB, cacheMB int) {
		benchExec(b, e, id, fmt.Sprintf(`head -c 1048576 /dev/urandom > /dev/shm/r
i=0; while [ $i -lt %d ]; do cat /dev/shm/r; i=$((i+1)); done > /dev/shm/fill
i=0; while [ $i -lt %d ]; do cat /dev/shm/r; i=$((i+1)); done > $HOME/fill`, shmMB, cacheMB))
	}

	// Small guest: resumes, warm execs, first exec after resume.
	create(mode+"s", "tiny", sbx.KindBase, 256)
	var small, first, warm []time.Duration
	for range 3 {
		_, r := pauseResume(mode + "s")
		small = append(small, r)
		first = append(first, benchExec(b, e, mode+"s", "true"))
		for range 3 {
			warm = append(warm, benchExec(b, e, mode+"s", "true"))
		}
	}
	f.resumeSmall, f.firstExec, f.warmExec = median(small), median(first), median(warm)
	// What the first exec after a resume waits for: host page faults of
	// QEMU (guest pages coming in) during it and during a warm exec.
	pauseResume(mode + "s")
	pid := readPIDFile(filepath.Join(e.data, "sandboxes", mode+"s", "vm", "vmm.pid"))
	m0, j0 := procFaults(pid)
	benchExec(b, e, mode+"s", "true")
	m1, j1 := procFaults(pid)
	benchExec(b, e, mode+"s", "true")
	m2, j2 := procFaults(pid)
	b.Logf("%s: QEMU page faults during the first exec after resume: %d minor, %d major; during a warm exec: %d minor, %d major", mode, m1-m0, j1-j0, m2-m1, j2-j1)
	if !eager {
		f.coldFirst, f.coldPrefetched = coldFirstExec(b, e, mode+"s", 3)
	}

	// Big guest: 2 GiB with ~1.5 GiB touched.
	create(mode+"b", "tiny", sbx.KindBase, 2048)
	fill(mode+"b", 1000, 500)
	used := strings.TrimSpace(benchExec2(b, e, mode+"b", "free -m | awk '/Mem:/ {print $3 \"+\" $6 \" MiB used+cache\"}'"))
	var big, bigPause []time.Duration
	for range 3 {
		p, r := pauseResume(mode + "b")
		big, bigPause = append(big, r), append(bigPause, p)
	}
	f.resumeBig, f.pauseBig = median(big), median(bigPause)
	b.Logf("%s: 2 GiB guest (%s): resume %v, pause %v; 256 MiB guest: resume %v", mode, used, big, bigPause, small)
	for _, id := range []string{mode + "s", mode + "b"} {
		if err := c.DestroySandbox(ctx, id); err != nil {
			b.Fatal(err)
		}
	}

	// Template children: 512 MiB guest, ~100 MiB of touched heap.
	src, tpl := mode+"src", mode+"tpl"
	create(src, "tiny", sbx.KindBase, 512)
	fill(src, 100, 0)
	if _, err := c.CreateSnapshot(ctx, src, tpl); err != nil {
		b.Fatal(err)
	}
	if err := c.DestroySandbox(ctx, src); err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	avail0 := memAvailable(b)
	var pids []int
	for i := range children {
		id := fmt.Sprintf("%sk%d", mode, i)
		create(id, tpl, sbx.KindSnapshot, 512)
		benchExec(b, e, id, "cat /dev/shm/fill > /dev/null")
		pids = append(pids, readPIDFile(filepath.Join(e.data, "sandboxes", id, "vm", "vmm.pid")))
	}
	time.Sleep(3 * time.Second)
	avail1 := memAvailable(b)
	f.availDelta = (avail0 - avail1) / int64(children)
	var anon, shm int64
	for i, pid := range pids {
		sm := smapsRollup(pid)
		anon += sm["Anonymous"] << 10
		shm += allocated(b, filepath.Join(e.agentMemoryDir(b), fmt.Sprintf("%sk%d.ram", mode, i)))
	}
	shared := int64(0)
	if !eager {
		ents, _ := filepath.Glob(filepath.Join(e.data, "templates", tpl, "snapshot", "ram-*"))
		for _, p := range ents {
			shared += allocated(b, p)
		}
	}
	f.childMem = (anon + shm + shared) / int64(children)
	b.Logf("%s: %d children of a 512 MiB template: QEMU anonymous %d MiB, own RAM files %d MiB, shared template RAM file %d MiB => %d MiB per child; MemAvailable fell %d MiB per child",
		mode, children, anon>>20, shm>>20, shared>>20, f.childMem>>20, f.availDelta>>20)
	for i := range children {
		if err := c.DestroySandbox(ctx, fmt.Sprintf("%sk%d", mode, i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.DeleteSnapshot(ctx, tpl); err != nil {
		b.Fatal(err)
	}
	if err := e.agent.Close(); err != nil {
		b.Fatal(err)
	}
	return f
}

func benchExec2(b *testing.B, e *vmEnv, id, script string) string {
	b.Helper()
	res, err := e.client.Exec(context.Background(), id, service.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", script}})
	if err != nil {
		b.Fatal(err)
	}
	return res.Stdout
}

// agentMemoryDir is where the agent keeps running QEMU guests' shared RAM
// files (eager restores and booted sandboxes).
func (e *vmEnv) agentMemoryDir(b *testing.B) string {
	dir, err := sandboxsnap.DefaultMemoryDir(e.data)
	if err != nil {
		b.Fatal(err)
	}
	return dir
}

// allocated is the memory or disk a file holds (0 if absent).
func allocated(b *testing.B, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

func memAvailable(b *testing.B) int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	b.Fatal("no MemAvailable")
	return 0
}

// BenchmarkVMKSM measures what KSM would cost and save for children of one
// template restored lazily: HEARTH_BENCH_CHILDREN children (default 4) of
// a 512 MiB template with ~100 MiB touched heap run idle, each having
// written the same 20 MiB; then KSM runs for 30 s at the kernel's default
// pace (100 pages per 20 ms) and ksmd's CPU time, the children's QEMU CPU
// time and the memory KSM merged are read. KSM is a host-wide setting: the
// benchmark restores it (and unmerges) at the end, and runs only with
// HEARTH_BENCH_KSM=1.
func BenchmarkVMKSM(b *testing.B) {
	if os.Getenv("HEARTH_BENCH_KSM") != "1" {
		b.Skip("changes the host's KSM setting for 30 s: set HEARTH_BENCH_KSM=1")
	}
	children := 4
	if v, err := strconv.Atoi(os.Getenv("HEARTH_BENCH_CHILDREN")); err == nil && v > 0 {
		children = v
	}
	const ksm = "/sys/kernel/mm/ksm/"
	prevRun, err := os.ReadFile(ksm + "run")
	if err != nil {
		b.Skipf("no KSM: %v", err)
	}
	ksmd := findProc(b, "ksmd")
	for b.Loop() {
		e := newVMEnv(b, "tiny")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		c := e.client
		create := func(id, tpl string, kind sbx.TemplateKind) {
			if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
				SandboxID: id, TemplateID: tpl, TemplateKind: kind,
				VCPUs: 1, MemoryMB: 512, DiskSizeMB: 2048, AccessToken: "tok-" + id,
			}); err != nil {
				b.Fatal(err)
			}
		}
		create("ksmsrc", "tiny", sbx.KindBase)
		benchExec(b, e, "ksmsrc", `head -c 1048576 /dev/urandom > /dev/shm/r
i=0; while [ $i -lt 100 ]; do cat /dev/shm/r; i=$((i+1)); done > /dev/shm/fill`)
		if _, err := c.CreateSnapshot(ctx, "ksmsrc", "ksmtpl"); err != nil {
			b.Fatal(err)
		}
		if err := c.DestroySandbox(ctx, "ksmsrc"); err != nil {
			b.Fatal(err)
		}
		var pids []int
		for i := range children {
			id := fmt.Sprintf("ksmk%d", i)
			create(id, "ksmtpl", sbx.KindSnapshot)
			// The same 20 MiB in every child: private copies KSM can merge.
			benchExec(b, e, id, "head -c 20971520 /dev/zero | tr '\\0' x > /dev/shm/same")
			pids = append(pids, readPIDFile(filepath.Join(e.data, "sandboxes", id, "vm", "vmm.pid")))
		}
		time.Sleep(3 * time.Second)
		cpu := func() (k, q time.Duration) {
			k = procCPU(ksmd)
			for _, p := range pids {
				q += procCPU(p)
			}
			return k, q
		}
		write := func(name, v string) {
			if err := os.WriteFile(ksm+name, []byte(v), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		_, q0 := cpu()
		t0 := time.Now()
		time.Sleep(30 * time.Second)
		_, qIdle := cpu()
		idleWall := time.Since(t0)
		k1, q1 := cpu()
		write("run", "1")
		t1 := time.Now()
		time.Sleep(30 * time.Second)
		k2, q2 := cpu()
		wall := time.Since(t1)
		sharing := readInt(b, ksm+"pages_sharing")
		write("run", "2")
		write("run", strings.TrimSpace(string(prevRun)))
		ksmCPU := float64(k2-k1) / float64(wall)
		b.ReportMetric(100*ksmCPU, "ksmd-%core")
		b.ReportMetric(100*float64(qIdle-q0)/float64(idleWall)/float64(children), "qemu-idle-%core/vm")
		b.ReportMetric(100*float64(q2-q1)/float64(wall)/float64(children), "qemu-with-ksm-%core/vm")
		b.ReportMetric(float64(sharing*4096)/(1<<20)/float64(children), "ksm-saved-MiB/child")
		b.Logf("KSM 30 s: ksmd %v CPU, %d pages sharing; %d children's QEMU: %v CPU without KSM, %v with", k2-k1, sharing, children, qIdle-q0, q2-q1)
		for i := range children {
			_ = c.DestroySandbox(ctx, fmt.Sprintf("ksmk%d", i))
		}
		_ = c.DeleteSnapshot(ctx, "ksmtpl")
		_ = e.agent.Close()
		cancel()
	}
}

// coldFirstExec measures working-set prefetch with the RAM file out of
// the page cache (as after memory pressure or a reboot): the first exec
// after a resume of sandbox id without and with the recorded working set
// read ahead, n times each, interleaved; it returns the medians.
func coldFirstExec(b *testing.B, e *vmEnv, id string, n int) (without, with time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	snapDir := filepath.Join(e.data, "sandboxes", id, "snapshot")
	cold := func(prefetch bool) time.Duration {
		time.Sleep(4 * time.Second) // the last resume's working set is recorded
		if err := e.client.PauseSandbox(ctx, id); err != nil {
			b.Fatal(err)
		}
		evictRAMFiles(b, snapDir)
		if !prefetch {
			os.Remove(filepath.Join(snapDir, "workingset"))
		}
		if _, err := e.client.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: id, AccessToken: "tok-" + id}); err != nil {
			b.Fatal(err)
		}
		return benchExec(b, e, id, "true")
	}
	var wo, wi []time.Duration
	for range n {
		wo = append(wo, cold(false))
		wi = append(wi, cold(true))
	}
	b.Logf("first exec after a resume with the RAM file evicted: without prefetch %v, with %v", wo, wi)
	return median(wo), median(wi)
}

// BenchmarkVMPrefetchCold is coldFirstExec alone on a 256 MiB guest, with
// HEARTH_BENCH_N (default 6) samples of each.
func BenchmarkVMPrefetchCold(b *testing.B) {
	n := 6
	if v, err := strconv.Atoi(os.Getenv("HEARTH_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	for b.Loop() {
		e := newVMEnv(b, "tiny")
		if _, err := e.client.CreateSandbox(context.Background(), service.CreateSandboxRequest{
			SandboxID: "pfc", TemplateID: "tiny", TemplateKind: sbx.KindBase,
			VCPUs: 1, MemoryMB: 256, DiskSizeMB: 2048, AccessToken: "tok-pfc",
		}); err != nil {
			b.Fatal(err)
		}
		var warm []time.Duration
		for range 5 {
			warm = append(warm, benchExec(b, e, "pfc", "true"))
		}
		without, with := coldFirstExec(b, e, "pfc", n)
		b.ReportMetric(ratio(without, median(warm)), "cold-first/warm-exec")
		b.ReportMetric(ratio(with, median(warm)), "cold-prefetched-first/warm-exec")
		b.ReportMetric(ratio(with, without), "prefetched/not")
		_ = e.agent.Close()
	}
}

// procFaults returns a process's minor and major page faults (fields 10
// and 12).
func procFaults(pid int) (minor, major int64) {
	f := procStat(pid)
	if len(f) < 10 {
		return 0, 0
	}
	minor, _ = strconv.ParseInt(f[7], 10, 64)
	major, _ = strconv.ParseInt(f[9], 10, 64)
	return minor, major
}

// evictRAMFiles drops the RAM files of a snapshot directory from the page
// cache (written back first), as memory pressure would.
func evictRAMFiles(b *testing.B, dir string) {
	paths, _ := filepath.Glob(filepath.Join(dir, "ram-*"))
	if len(paths) == 0 {
		b.Fatalf("no RAM file in %s", dir)
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func findProc(b *testing.B, comm string) int {
	ents, _ := os.ReadDir("/proc")
	for _, en := range ents {
		pid, err := strconv.Atoi(en.Name())
		if err != nil {
			continue
		}
		if c, _ := os.ReadFile("/proc/" + en.Name() + "/comm"); strings.TrimSpace(string(c)) == comm {
			return pid
		}
	}
	b.Skipf("no %s process", comm)
	return 0
}

// procStat returns the fields of /proc/PID/stat after the command name:
// element 0 is field 3 (the state).
func procStat(pid int) []string {
	s, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	rest := string(s)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+2:]
	}
	return strings.Fields(rest)
}

// procCPU is a process's user+system CPU time (fields 14 and 15, clock
// ticks of 10 ms).
func procCPU(pid int) time.Duration {
	f := procStat(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

func readInt(b *testing.B, path string) int64 {
	s, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(s)), 10, 64)
	return n
}
