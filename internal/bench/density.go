package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
)

// DensityOptions configure a density run. Zero values take the defaults.
type DensityOptions struct {
	// N is the number of children spawned from the template (default 40).
	N int
	// Template is the template the snapshot template and the resume
	// guests start from (default base: it has python3).
	Template string
	// ColdN is the number of cold creates of the baseline (default 3).
	ColdN int
	// TemplateMB and TouchMB shape the template: a guest of TemplateMB
	// (default 512) with a process holding TouchMB (default 100) of
	// written heap when it is snapshotted.
	TemplateMB, TouchMB int
	// LargeMB/LargeTouchMB (default 2048/1536) and SmallMB (default 256)
	// are the guests whose resumes are compared; LargeMB < 0 skips that
	// stage.
	LargeMB, LargeTouchMB, SmallMB int
	// ExecN is the number of exec round trips per exec stage (default 20).
	ExecN int
	// ResumeN is the number of pause/resume cycles per guest (default 3).
	ResumeN int
	// Settle is how long the children sit before memory and CPU are read
	// (default 30 s: restored guests take a while to go quiet); IdleWindow is how long idle CPU is measured over
	// (default 30 s).
	Settle, IdleWindow time.Duration
	// OpTimeout bounds each API call (default 5 min).
	OpTimeout time.Duration
	// Proc is the procfs root the host figures are read from (default
	// /proc); the run must be on the agent's host for them to mean anything.
	Proc string
	Log  io.Writer // one line per measurement (nil: discard)
}

func (o *DensityOptions) defaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.N, 40)
	def(&o.ColdN, 3)
	def(&o.TemplateMB, 512)
	def(&o.TouchMB, 100)
	def(&o.LargeMB, 2048)
	def(&o.LargeTouchMB, 1536)
	def(&o.SmallMB, 256)
	def(&o.ExecN, 20)
	def(&o.ResumeN, 3)
	if o.Template == "" {
		o.Template = "base"
	}
	if o.Settle <= 0 {
		o.Settle = 30 * time.Second
	}
	if o.IdleWindow <= 0 {
		o.IdleWindow = 30 * time.Second
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = 5 * time.Minute
	}
	if o.Proc == "" {
		o.Proc = "/proc"
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Stage and figure names of a density run.
const (
	StageDensityCold      = "cold create"
	StageSpawn            = "spawn from template"
	StageSpawnCrowded     = "spawn from template (>= N/2 idle siblings)"
	StageExecSiblings     = "exec with N idle siblings"
	StageExecAlone        = "exec alone"
	StageResumeLarge      = "resume large guest"
	StageResumeSmall      = "resume small guest"
	StageFirstExec        = "first exec after resume"
	StageWarmExec         = "warm exec"
	FigureMemPerChild     = "host memory per idle child"
	FigureIdleCPU         = "idle CPU per VM"
	FigureHostBusy        = "host CPU busy during the idle window"
	FigureVMMsFound       = "VMM processes found"
	densityHeapReady      = "/tmp/hearth-bench-heap-ready"
	densityHeapScriptTmpl = `import sys, time
n = int(sys.argv[1]) << 20
b = bytearray(n)
for i in range(0, n, 4096):
    b[i:i+8] = i.to_bytes(8, "little")
open(sys.argv[2], "w").close()
time.sleep(1e9)
`
)

// densityRun holds one density run's state on top of a runner (create,
// destroy and cleanup by the run's metadata tag).
type densityRun struct {
	*runner
	o    DensityOptions
	host hostProbe
}

// Density measures how many sandboxes a host holds and what they cost:
// it snapshots a template guest with TouchMB of written heap, spawns N
// children of it and reports, against figures of the same run, spawn vs a
// cold create, host memory per idle child (MemAvailable delta / N), idle
// CPU per VM (the VMM processes' utime+stime in /proc), exec latency with
// N idle siblings vs alone, resume of a large guest vs a small one and the
// first exec after a resume vs a warm one. Host figures are read from this
// machine: run it on the agent's host. Everything it created is destroyed
// at the end, also on error or Ctrl-C.
func Density(ctx context.Context, c *cli.Client, o DensityOptions) (rep Report, err error) {
	o.defaults()
	id, err := randomID()
	if err != nil {
		return rep, err
	}
	rep = Report{URL: c.BaseURL, RunID: id, StartedAt: time.Now().UTC(), HostCPUs: runtime.NumCPU(), N: o.N}
	r := &densityRun{
		runner: &runner{c: boundedClient(c, o.OpTimeout), o: Options{Log: o.Log}, md: map[string]string{MetadataKey: id}, rep: &rep, live: map[string]bool{}},
		o:      o,
		host:   hostProbe{proc: o.Proc},
	}
	defer func() {
		rep.Cleanup = r.cleanup(ctx)
		rep.Seconds = time.Since(rep.StartedAt).Seconds()
	}()
	err = r.run(ctx)
	r.densityRatios()
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return rep, err
}

func (r *densityRun) run(ctx context.Context) error {
	o := r.o
	// Baseline: cold creates of the same shape as the template, on a host
	// without the children.
	var cold []time.Duration
	for i := range o.ColdN {
		sb, d, err := r.createWith(ctx, apiwire.CreateSandbox{Template: o.Template, MemoryMB: &o.TemplateMB})
		if err != nil {
			return fmt.Errorf("cold create %d/%d: %w", i+1, o.ColdN, err)
		}
		cold = append(cold, d)
		r.logf("cold create %d/%d: %s", i+1, o.ColdN, FormatMS(ms(d)))
		if err := r.destroy(ctx, sb.ID); err != nil {
			return err
		}
	}
	r.add(Summarize(StageDensityCold, cold))

	tpl, err := r.makeTemplate(ctx)
	if err != nil {
		return err
	}
	if err := r.children(ctx, tpl); err != nil {
		return err
	}
	if o.LargeMB < 0 {
		r.add(Skipped(StageResumeLarge, "--large-mb < 0"))
		return nil
	}
	return r.resumes(ctx)
}

// makeTemplate boots a TemplateMB guest, has a process write TouchMB of
// heap and stay, and snapshots it as a template (the source is destroyed).
func (r *densityRun) makeTemplate(ctx context.Context) (string, error) {
	o := r.o
	sb, _, err := r.createWith(ctx, apiwire.CreateSandbox{Template: o.Template, MemoryMB: &o.TemplateMB})
	if err != nil {
		return "", fmt.Errorf("create the template guest: %w", err)
	}
	if err := r.touchHeap(ctx, sb.ID, o.TouchMB); err != nil {
		return "", err
	}
	name := "bench-density-" + r.rep.RunID
	t0 := time.Now()
	if _, err := r.c.CreateSnapshot(ctx, sb.ID, name); err != nil {
		return "", fmt.Errorf("snapshot the template guest: %w", err)
	}
	r.snaps = append(r.snaps, name)
	r.logf("template %s (%d MiB guest, %d MiB heap): snapshot in %s", name, o.TemplateMB, o.TouchMB, FormatMS(ms(time.Since(t0))))
	return name, r.destroy(ctx, sb.ID)
}

// touchHeap starts a guest process that writes mb MiB of heap (every page)
// and sleeps, and returns once it has.
func (r *densityRun) touchHeap(ctx context.Context, id string, mb int) error {
	script := `python3 -c "$1" "$2" "$3" >/dev/null 2>&1 </dev/null &
while [ ! -e "$3" ]; do sleep 0.2; done`
	res, err := r.c.Exec(ctx, id, apiwire.ExecRequest{
		Cmd: "sh", Args: []string{"-c", script, "sh", densityHeapScriptTmpl, strconv.Itoa(mb), densityHeapReady}, TimeoutS: 600,
	})
	if err == nil && res.ExitCode != 0 {
		err = fmt.Errorf("exit code %d: %s", res.ExitCode, res.Stderr)
	}
	if err != nil {
		return fmt.Errorf("write %d MiB of heap in %s: %w", mb, id, err)
	}
	return nil
}

// children spawns N children of tpl, then measures memory and idle CPU,
// exec with the siblings, and exec alone once the siblings are destroyed.
func (r *densityRun) children(ctx context.Context, tpl string) error {
	o := r.o
	memBefore, memErr := r.host.memAvailable()
	var ids []string
	var spawn []time.Duration
	for i := range o.N {
		sb, d, err := r.createWith(ctx, apiwire.CreateSandbox{Template: tpl})
		if err != nil {
			r.partial(StageSpawn, spawn)
			return fmt.Errorf("spawn %d/%d: %w", i+1, o.N, err)
		}
		ids = append(ids, sb.ID)
		spawn = append(spawn, d)
		r.logf("spawn %d/%d: %s (%s)", i+1, o.N, FormatMS(ms(d)), sb.ID)
	}
	r.add(Summarize(StageSpawn, spawn))
	r.add(Summarize(StageSpawnCrowded, spawn[o.N/2:]))

	r.logf("letting %d children settle for %s", o.N, o.Settle)
	if err := sleepCtx(ctx, o.Settle); err != nil {
		return err
	}
	pids := r.host.vmmPIDs(ids)
	r.figure(FigureVMMsFound, float64(len(pids)), "", fmt.Sprintf("of %d children, by sandbox ID in %s/*/cmdline", o.N, o.Proc))
	local := len(pids) > 0
	if !local {
		r.rep.Notes = append(r.rep.Notes, "no VMM process of the children on this machine: host memory and idle CPU are not measured (run the bench on the agent's host)")
	}
	if local && memErr == nil {
		if memAfter, err := r.host.memAvailable(); err == nil {
			per := float64(memBefore-memAfter) / float64(o.N) / (1 << 20)
			r.figure(FigureMemPerChild, per, "MiB", fmt.Sprintf("MemAvailable delta / %d; template guest %d MiB with %d MiB heap", o.N, o.TemplateMB, o.TouchMB))
		}
	}
	if local {
		r.logf("measuring idle CPU of %d VMMs over %s", len(pids), o.IdleWindow)
		cpu, busy, err := r.host.idleCPU(ctx, pids, o.IdleWindow)
		if err != nil {
			return err
		}
		r.figure(FigureIdleCPU, cpu, "% of a core", fmt.Sprintf("utime+stime of %d VMM processes over %s, per VM", len(pids), o.IdleWindow))
		r.figure(FigureHostBusy, busy, "% of all cores", "/proc/stat; includes everything else on the host")
	}

	ds, err := r.execN(ctx, ids[0], o.ExecN)
	if err != nil {
		return err
	}
	r.add(Summarize(StageExecSiblings, ds))
	for _, id := range ids[1:] {
		if err := r.destroy(ctx, id); err != nil {
			return err
		}
	}
	if err := sleepCtx(ctx, o.Settle/2); err != nil {
		return err
	}
	if ds, err = r.execN(ctx, ids[0], o.ExecN); err != nil {
		return err
	}
	r.add(Summarize(StageExecAlone, ds))
	return r.destroy(ctx, ids[0])
}

// resumes compares pause/resume of a LargeMB guest with LargeTouchMB of
// heap against a SmallMB one, and the first exec after each resume of the
// large guest against warm execs.
func (r *densityRun) resumes(ctx context.Context) error {
	o := r.o
	large, _, err := r.createWith(ctx, apiwire.CreateSandbox{Template: o.Template, MemoryMB: &o.LargeMB})
	if err != nil {
		return fmt.Errorf("create the %d MiB guest: %w", o.LargeMB, err)
	}
	r.logf("writing %d MiB of heap in the %d MiB guest", o.LargeTouchMB, o.LargeMB)
	if err := r.touchHeap(ctx, large.ID, o.LargeTouchMB); err != nil {
		return err
	}
	small, _, err := r.createWith(ctx, apiwire.CreateSandbox{Template: o.Template, MemoryMB: &o.SmallMB})
	if err != nil {
		return fmt.Errorf("create the %d MiB guest: %w", o.SmallMB, err)
	}
	var lr, sr, first, warm []time.Duration
	for i := range o.ResumeN {
		d, err := r.pauseResume1(ctx, large.ID)
		if err != nil {
			return err
		}
		lr = append(lr, d)
		t0 := time.Now()
		if err := r.exec1(ctx, large.ID); err != nil {
			return fmt.Errorf("first exec after resume: %w", err)
		}
		first = append(first, time.Since(t0))
		ws, err := r.execN(ctx, large.ID, 5)
		if err != nil {
			return err
		}
		warm = append(warm, ws...)
		if d, err = r.pauseResume1(ctx, small.ID); err != nil {
			return err
		}
		sr = append(sr, d)
		r.logf("resume %d/%d: large %s (first exec %s), small %s", i+1, o.ResumeN, FormatMS(ms(lr[i])), FormatMS(ms(first[i])), FormatMS(ms(d)))
	}
	r.add(Summarize(StageResumeLarge, lr))
	r.add(Summarize(StageResumeSmall, sr))
	r.add(Summarize(StageFirstExec, first))
	r.add(Summarize(StageWarmExec, warm))
	return nil
}

// pauseResume1 pauses id and returns how long its resume took.
func (r *densityRun) pauseResume1(ctx context.Context, id string) (time.Duration, error) {
	if _, err := r.c.PauseSandbox(ctx, id); err != nil {
		return 0, fmt.Errorf("pause %s: %w", id, err)
	}
	t0 := time.Now()
	if _, err := r.c.ResumeSandbox(ctx, id); err != nil {
		return 0, fmt.Errorf("resume %s: %w", id, err)
	}
	return time.Since(t0), nil
}

func (r *densityRun) exec1(ctx context.Context, id string) error {
	res, err := r.c.Exec(ctx, id, apiwire.ExecRequest{Cmd: "true"})
	if err == nil && res.ExitCode != 0 {
		err = fmt.Errorf("exit code %d: %s", res.ExitCode, res.Stderr)
	}
	if err != nil {
		return fmt.Errorf("exec true in %s: %w", id, err)
	}
	return nil
}

func (r *densityRun) execN(ctx context.Context, id string, n int) ([]time.Duration, error) {
	ds := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if err := r.exec1(ctx, id); err != nil {
			return nil, err
		}
		ds = append(ds, time.Since(t0))
	}
	return ds, nil
}

func (r *densityRun) figure(name string, v float64, unit, how string) {
	r.rep.Figures = append(r.rep.Figures, Figure{Name: name, Value: v, Unit: unit, How: how})
	r.logf("  %-36s %.2f %s", name, v, unit)
}

func (r *densityRun) densityRatios() {
	get := func(n string) Stage { s, _ := r.rep.Stage(n); return s }
	add := func(name string, a, b Stage) {
		if q, ok := RatioOf(name, a, b); ok {
			r.rep.Ratios = append(r.rep.Ratios, q)
		}
	}
	add("spawn / cold create", get(StageSpawn), get(StageDensityCold))
	add("spawn (>= N/2 siblings) / cold create", get(StageSpawnCrowded), get(StageDensityCold))
	add("exec with N idle siblings / exec alone", get(StageExecSiblings), get(StageExecAlone))
	add("resume large / resume small", get(StageResumeLarge), get(StageResumeSmall))
	add("first exec after resume / warm exec", get(StageFirstExec), get(StageWarmExec))
	if f, ok := r.rep.Figure(FigureMemPerChild); ok && r.o.TemplateMB > 0 {
		r.rep.Ratios = append(r.rep.Ratios, Ratio{Name: "memory per child / template guest memory", Value: f.Value / float64(r.o.TemplateMB), Of: FigureMemPerChild, Over: "template guest memory"})
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
