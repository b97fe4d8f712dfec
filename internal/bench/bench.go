// Package bench measures a running hearth through its public REST API, the
// way users see it: cold-boot create latency per template, exec round
// trips, pause/resume and create-from-snapshot where the server supports
// them.
//
// Machines here are shared and noisy, so every figure is reported with a
// ratio against another figure of the same run (exec against GET /healthz,
// base against tiny, snapshot and resume against cold boot), which
// transfers between machines far better than absolute times.
//
// Every sandbox it creates carries the metadata hearth-bench=<run id>, and
// the run ends (also on Ctrl-C or error) by destroying them and deleting
// its snapshot template, with a context of its own.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
)

// MetadataKey tags every sandbox a run creates.
const MetadataKey = "hearth-bench"

// Options configure a run. Zero values take the defaults.
type Options struct {
	// N is the number of sandboxes created per template (default 10).
	N int
	// Templates are the cold-boot templates, in order (default tiny, base).
	// The first one also hosts the exec, pause and snapshot stages.
	Templates []string
	// ExecN is the number of exec round trips (default 20).
	ExecN int
	// ExecCmd is the command timed by the exec stage (default "true").
	ExecCmd string
	// BaselineN is the number of GET /healthz round trips (default 20).
	BaselineN int
	// PauseN is the number of pause/resume cycles (default 3; <0 skips).
	PauseN int
	// NoSnapshot skips the create-from-snapshot stage.
	NoSnapshot bool
	// OpTimeout bounds each API call (default 5m): a create that hangs
	// fails the run instead of stalling it.
	OpTimeout time.Duration
	// Log receives one line per measurement (nil: discard).
	Log io.Writer
}

func (o *Options) defaults() {
	if o.N <= 0 {
		o.N = 10
	}
	if len(o.Templates) == 0 {
		o.Templates = []string{"tiny", "base"}
	}
	if o.ExecN <= 0 {
		o.ExecN = 20
	}
	if o.ExecCmd == "" {
		o.ExecCmd = "true"
	}
	if o.BaselineN <= 0 {
		o.BaselineN = 20
	}
	if o.PauseN == 0 {
		o.PauseN = 3
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = 5 * time.Minute
	}
}

// Report is a run's result.
type Report struct {
	URL       string    `json:"url"`
	RunID     string    `json:"run_id"`
	StartedAt time.Time `json:"started_at"`
	Seconds   float64   `json:"seconds"`
	HostCPUs  int       `json:"client_cpus"`
	N         int       `json:"n"`
	Stages    []Stage   `json:"stages"`
	Ratios    []Ratio   `json:"ratios"`
	// Figures are measurements that are not latencies (bench density).
	Figures []Figure `json:"figures,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	// Cleanup says what the final cleanup did or could not do.
	Cleanup string `json:"cleanup"`
}

// Stage looks a stage up by name.
func (r *Report) Stage(name string) (Stage, bool) {
	for _, s := range r.Stages {
		if s.Name == name {
			return s, true
		}
	}
	return Stage{}, false
}

// Figure looks a figure up by name.
func (r *Report) Figure(name string) (Figure, bool) {
	for _, f := range r.Figures {
		if f.Name == name {
			return f, true
		}
	}
	return Figure{}, false
}

// Figure is a measurement other than a latency: MiB per child, % of a core.
type Figure struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit,omitempty"`
	How   string  `json:"how,omitempty"`
}

// Stage names, shared by the report, the ratios and the tests.
const (
	StageHealthz      = "GET /healthz (baseline)"
	StageExec         = "exec round trip"
	StagePause        = "pause"
	StageResume       = "resume"
	StageSnapshot     = "snapshot create"
	StageFromSnapshot = "create from snapshot"
	StageDestroy      = "destroy"
)

// StageCreate names the cold-boot stage of a template.
func StageCreate(tpl string) string { return "create " + tpl + " (cold boot)" }

// runner holds one run's state.
type runner struct {
	c      *cli.Client
	o      Options
	md     map[string]string
	rep    *Report
	mu     sync.Mutex
	live   map[string]bool // sandboxes to destroy at the end
	snaps  []string        // snapshot templates to delete at the end
	destro []time.Duration
}

// Run benchmarks the server c points at. It returns the report even when
// a stage failed (the error says which); cleanup always runs.
func Run(ctx context.Context, c *cli.Client, o Options) (rep Report, err error) {
	o.defaults()
	id, err := randomID()
	if err != nil {
		return rep, err
	}
	rep = Report{URL: c.BaseURL, RunID: id, StartedAt: time.Now().UTC(), HostCPUs: runtime.NumCPU(), N: o.N}
	r := &runner{c: boundedClient(c, o.OpTimeout), o: o, md: map[string]string{MetadataKey: id}, rep: &rep, live: map[string]bool{}}
	defer func() {
		rep.Cleanup = r.cleanup(ctx)
		rep.Seconds = time.Since(rep.StartedAt).Seconds()
	}()
	err = r.run(ctx)
	r.ratios()
	if err != nil && ctx.Err() != nil {
		err = ctx.Err() // the stage's own error only says it was cut short
	}
	return rep, err
}

// boundedClient is a copy of c whose every call gives up after timeout.
func boundedClient(c *cli.Client, timeout time.Duration) *cli.Client {
	bounded := *c
	hc := http.Client{}
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	hc.Timeout = timeout
	bounded.HTTP = &hc
	return &bounded
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.o.Log, format+"\n", args...)
}

func (r *runner) add(s Stage) {
	r.rep.Stages = append(r.rep.Stages, s)
	if s.Ok() {
		r.logf("  %-28s p50 %s  p95 %s  (n=%d)", s.Name, FormatMS(s.P50), FormatMS(s.P95), s.N)
	} else {
		r.logf("  %-28s skipped: %s", s.Name, s.Skipped)
	}
}

func (r *runner) run(ctx context.Context) error {
	// Baseline: the cheapest authenticated-free round trip through the
	// same HTTP stack and store.
	var hz []time.Duration
	for range r.o.BaselineN {
		t0 := time.Now()
		if err := r.c.Healthz(ctx); err != nil {
			return fmt.Errorf("GET /healthz: %w", err)
		}
		hz = append(hz, time.Since(t0))
	}
	r.add(Summarize(StageHealthz, hz))

	// Cold boots, one template after the other, one sandbox at a time
	// (latency, not throughput); each is destroyed before the next.
	for _, tpl := range r.o.Templates {
		if err := r.coldBoots(ctx, tpl); err != nil {
			return err
		}
	}
	if len(r.destro) > 0 {
		r.add(Summarize(StageDestroy, r.destro))
	}

	// One sandbox of the first template for the exec, snapshot and pause
	// stages.
	tpl := r.o.Templates[0]
	if st, _ := r.rep.Stage(StageCreate(tpl)); !st.Ok() {
		r.add(Skipped(StageExec, "no "+tpl+" sandbox"))
		return nil
	}
	sb, _, err := r.create(ctx, tpl)
	if err != nil {
		return fmt.Errorf("create the %s sandbox for exec: %w", tpl, err)
	}
	if err := r.exec(ctx, sb.ID); err != nil {
		return err
	}
	if !r.o.NoSnapshot {
		if err := r.snapshot(ctx, sb.ID, tpl); err != nil {
			return err
		}
	}
	if r.o.PauseN > 0 {
		if err := r.pauseResume(ctx, sb.ID); err != nil {
			return err
		}
	}
	return nil
}

// create creates one tagged sandbox and records it for cleanup.
func (r *runner) create(ctx context.Context, tpl string) (apiwire.Sandbox, time.Duration, error) {
	return r.createWith(ctx, apiwire.CreateSandbox{Template: tpl})
}

// createWith creates one sandbox of in's shape, tagged and with a timeout
// that outlives the run, and records it for cleanup.
func (r *runner) createWith(ctx context.Context, in apiwire.CreateSandbox) (apiwire.Sandbox, time.Duration, error) {
	timeout := 1800
	in.Metadata, in.TimeoutS = r.md, &timeout
	t0 := time.Now()
	sb, err := r.c.CreateSandbox(ctx, in)
	d := time.Since(t0)
	if err == nil {
		r.mu.Lock()
		r.live[sb.ID] = true
		r.mu.Unlock()
	}
	return sb, d, err
}

func (r *runner) destroy(ctx context.Context, id string) error {
	t0 := time.Now()
	if err := r.c.DeleteSandbox(ctx, id); err != nil {
		return fmt.Errorf("destroy %s: %w", id, err)
	}
	r.destro = append(r.destro, time.Since(t0))
	r.mu.Lock()
	delete(r.live, id)
	r.mu.Unlock()
	return nil
}

func (r *runner) coldBoots(ctx context.Context, tpl string) error {
	name := StageCreate(tpl)
	var ds []time.Duration
	for i := range r.o.N {
		sb, d, err := r.create(ctx, tpl)
		if err != nil {
			if i == 0 && isStatus(err, http.StatusNotFound, http.StatusBadRequest) {
				r.add(Skipped(name, "template unavailable: "+oneLine(err)))
				return nil
			}
			r.partial(name, ds)
			return fmt.Errorf("%s %d/%d: %w", name, i+1, r.o.N, err)
		}
		ds = append(ds, d)
		r.logf("%s %d/%d: %s (%s)", name, i+1, r.o.N, FormatMS(ms(d)), sb.ID)
		if err := r.destroy(ctx, sb.ID); err != nil {
			r.partial(name, ds)
			return err
		}
	}
	r.add(Summarize(name, ds))
	return nil
}

// partial records the samples of a stage cut short, so an interrupted
// run still reports what it measured.
func (r *runner) partial(name string, ds []time.Duration) {
	if len(ds) > 0 {
		r.add(Summarize(name+" (partial)", ds))
	}
}

func (r *runner) exec(ctx context.Context, id string) error {
	var ds []time.Duration
	for range r.o.ExecN {
		t0 := time.Now()
		res, err := r.c.Exec(ctx, id, apiwire.ExecRequest{Cmd: r.o.ExecCmd})
		if err != nil {
			return fmt.Errorf("exec %s: %w", r.o.ExecCmd, err)
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("exec %s: exit code %d: %s", r.o.ExecCmd, res.ExitCode, res.Stderr)
		}
		ds = append(ds, time.Since(t0))
	}
	r.add(Summarize(StageExec, ds))
	return nil
}

// optional reports whether err means "the server cannot do this", which
// skips a stage instead of failing the run.
func optional(err error) bool {
	return isStatus(err, http.StatusNotImplemented, http.StatusConflict, http.StatusServiceUnavailable, http.StatusBadRequest, http.StatusInternalServerError)
}

func (r *runner) snapshot(ctx context.Context, id, tpl string) error {
	name := "bench-" + r.rep.RunID
	t0 := time.Now()
	_, err := r.c.CreateSnapshot(ctx, id, name)
	d := time.Since(t0)
	if err != nil {
		if optional(err) && ctx.Err() == nil {
			r.add(Skipped(StageSnapshot, "server refused: "+oneLine(err)))
			r.add(Skipped(StageFromSnapshot, "no snapshot template"))
			return nil
		}
		return fmt.Errorf("snapshot: %w", err)
	}
	r.snaps = append(r.snaps, name)
	r.add(Summarize(StageSnapshot, []time.Duration{d}))
	var ds []time.Duration
	for i := range r.o.N {
		sb, d, err := r.create(ctx, name)
		if err != nil {
			if i == 0 && optional(err) && ctx.Err() == nil {
				r.add(Skipped(StageFromSnapshot, "server refused: "+oneLine(err)))
				return nil
			}
			return fmt.Errorf("%s %d/%d: %w", StageFromSnapshot, i+1, r.o.N, err)
		}
		ds = append(ds, d)
		r.logf("%s %d/%d: %s (%s)", StageFromSnapshot, i+1, r.o.N, FormatMS(ms(d)), sb.ID)
		if err := r.destroy(ctx, sb.ID); err != nil {
			return err
		}
	}
	r.add(Summarize(StageFromSnapshot, ds))
	return nil
}

func (r *runner) pauseResume(ctx context.Context, id string) error {
	var ps, rs []time.Duration
	for i := range r.o.PauseN {
		t0 := time.Now()
		_, err := r.c.PauseSandbox(ctx, id)
		d := time.Since(t0)
		if err != nil {
			if i == 0 && optional(err) && ctx.Err() == nil {
				r.add(Skipped(StagePause, "server refused: "+oneLine(err)))
				r.add(Skipped(StageResume, "not paused"))
				return nil
			}
			return fmt.Errorf("pause %d/%d: %w", i+1, r.o.PauseN, err)
		}
		ps = append(ps, d)
		t0 = time.Now()
		if _, err := r.c.ResumeSandbox(ctx, id); err != nil {
			return fmt.Errorf("resume %d/%d: %w", i+1, r.o.PauseN, err)
		}
		rs = append(rs, time.Since(t0))
		r.logf("pause/resume %d/%d: %s / %s", i+1, r.o.PauseN, FormatMS(ms(ps[i])), FormatMS(ms(rs[i])))
		// The sandbox must really be back, or resume figures mean nothing.
		if res, err := r.c.Exec(ctx, id, apiwire.ExecRequest{Cmd: r.o.ExecCmd}); err != nil || res.ExitCode != 0 {
			return fmt.Errorf("exec after resume %d: %v (exit %d)", i+1, err, res.ExitCode)
		}
	}
	r.add(Summarize(StagePause, ps))
	r.add(Summarize(StageResume, rs))
	return nil
}

// ratios adds every ratio whose two stages were measured.
func (r *runner) ratios() {
	get := func(n string) Stage { s, _ := r.rep.Stage(n); return s }
	tpls := r.o.Templates
	first := get(StageCreate(tpls[0]))
	add := func(name string, a, b Stage) {
		if q, ok := RatioOf(name, a, b); ok {
			r.rep.Ratios = append(r.rep.Ratios, q)
		}
	}
	for _, t := range tpls[1:] {
		add("create("+t+") / create("+tpls[0]+")", get(StageCreate(t)), first)
	}
	add("exec RTT / healthz RTT", get(StageExec), get(StageHealthz))
	add("create("+tpls[0]+") / exec RTT", first, get(StageExec))
	add("create(snapshot) / create("+tpls[0]+")", get(StageFromSnapshot), first)
	add("resume / create("+tpls[0]+")", get(StageResume), first)
	add("pause / create("+tpls[0]+")", get(StagePause), first)
}

// cleanup destroys what the run created, with its own deadline so it also
// runs after Ctrl-C. Sandboxes whose create was interrupted are found by
// their metadata tag.
func (r *runner) cleanup(parent context.Context) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), 2*time.Minute)
	defer cancel()
	var failed []string
	destroyed := 0
	for pass := 0; pass < 5; pass++ {
		r.mu.Lock()
		ids := make([]string, 0, len(r.live))
		for id := range r.live {
			ids = append(ids, id)
		}
		r.mu.Unlock()
		if sbs, err := r.c.ListSandboxes(ctx, cli.SandboxFilter{Metadata: r.md}); err == nil {
			for _, sb := range sbs {
				if sb.Status != "stopped" && !r.live[sb.ID] {
					ids = append(ids, sb.ID)
				}
			}
		}
		if len(ids) == 0 {
			break
		}
		failed = failed[:0]
		for _, id := range ids {
			if err := r.c.DeleteSandbox(ctx, id); err != nil && !isStatus(err, http.StatusNotFound) {
				failed = append(failed, id+": "+oneLine(err))
				continue
			}
			destroyed++
			r.mu.Lock()
			delete(r.live, id)
			r.mu.Unlock()
		}
		if len(failed) == 0 {
			// One more pass lists again: a create interrupted in flight
			// may only now show up.
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	for _, s := range r.snaps {
		if err := r.c.DeleteSnapshot(ctx, s); err != nil && !isStatus(err, http.StatusNotFound) {
			failed = append(failed, "snapshot "+s+": "+oneLine(err))
		}
	}
	msg := fmt.Sprintf("destroyed %d sandbox(es), deleted %d snapshot template(s)", destroyed, len(r.snaps))
	if len(failed) > 0 {
		msg += "; FAILED: " + strings.Join(failed, "; ")
	}
	return msg
}

func isStatus(err error, statuses ...int) bool {
	var ae *cli.APIError
	if !errors.As(err, &ae) {
		return false
	}
	for _, s := range statuses {
		if ae.Status == s {
			return true
		}
	}
	return false
}

func oneLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func randomID() (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
