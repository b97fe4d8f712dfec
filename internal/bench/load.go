package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/agent"
	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
)

// LoadOptions configure a load run. Zero values take the defaults.
type LoadOptions struct {
	Clients   int           // concurrent clients (default 4)
	Duration  time.Duration // how long clients start new cycles (default 60 s)
	MaxCycles int           // stop after this many cycles in all (0: no limit)
	Template  string        // default tiny
	// Pause adds pause and resume to every cycle (default on; NoPause off).
	NoPause   bool
	FileBytes int           // size of the file written and read back (default 64 KiB)
	OpTimeout time.Duration // bound on each API call (default 5 min)
	// DataDir, when set, is the agent's data dir on this machine: the run
	// takes a leak inventory of it before and after (agent.TakeInventory).
	DataDir string
	Log     io.Writer
}

// LoadReport is a load run's result.
type LoadReport struct {
	URL          string           `json:"url"`
	RunID        string           `json:"run_id"`
	Clients      int              `json:"clients"`
	Seconds      float64          `json:"seconds"`
	Cycles       int              `json:"cycles"`
	Operations   int              `json:"operations"`
	OpsPerSecond float64          `json:"ops_per_second"`
	Ops          []Stage          `json:"ops"`
	Errors       int              `json:"errors"`
	ErrorSamples []string         `json:"error_samples,omitempty"`
	Before       *agent.Inventory `json:"inventory_before,omitempty"`
	After        *agent.Inventory `json:"inventory_after,omitempty"`
	Leaked       []string         `json:"leaked,omitempty"`
}

// The operations of a cycle, in order.
const (
	OpCreate  = "create"
	OpExec    = "exec"
	OpWrite   = "file write"
	OpRead    = "file read"
	OpPause   = "pause"
	OpResume  = "resume"
	OpDestroy = "destroy"
)

type loadRun struct {
	c      *cli.Client
	o      LoadOptions
	md     map[string]string
	mu     sync.Mutex // guards the fields below
	lat    map[string][]time.Duration
	errs   []string
	cycles int
}

// Load runs o.Clients clients that each repeat create → exec → file write
// → file read (compared) → pause → resume → exec → destroy until
// o.Duration has passed, and reports throughput, latency per operation and
// every error. With o.DataDir it also compares the host's inventory before
// and after: anything added is a leak. The error is non-nil when any
// operation failed or anything leaked.
func Load(ctx context.Context, c *cli.Client, o LoadOptions) (LoadReport, error) {
	if o.Clients <= 0 {
		o.Clients = 4
	}
	if o.Duration <= 0 {
		o.Duration = time.Minute
	}
	if o.Template == "" {
		o.Template = "tiny"
	}
	if o.FileBytes <= 0 {
		o.FileBytes = 64 << 10
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = 5 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	id, err := randomID()
	if err != nil {
		return LoadReport{}, err
	}
	rep := LoadReport{URL: c.BaseURL, RunID: id, Clients: o.Clients}
	r := &loadRun{c: c, o: o, md: map[string]string{MetadataKey: id}, lat: map[string][]time.Duration{}}
	if o.DataDir != "" {
		in := agent.TakeInventory(o.DataDir)
		rep.Before = &in
	}
	start := time.Now()
	deadline := start.Add(o.Duration)
	var wg sync.WaitGroup
	for i := range o.Clients {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) && r.claimCycle() {
				r.cycle(ctx, i)
			}
		})
	}
	wg.Wait()
	rep.Seconds = time.Since(start).Seconds()
	r.sweep(context.WithoutCancel(ctx))

	for _, name := range []string{OpCreate, OpExec, OpWrite, OpRead, OpPause, OpResume, OpDestroy} {
		if ds := r.lat[name]; len(ds) > 0 {
			st := Summarize(name, ds)
			st.SamplesMS = nil // a long run has thousands
			rep.Ops = append(rep.Ops, st)
			rep.Operations += len(ds)
		}
	}
	rep.Cycles, rep.Errors = r.cycles, len(r.errs)
	rep.ErrorSamples = r.errs[:min(len(r.errs), 10)]
	if rep.Seconds > 0 {
		rep.OpsPerSecond = float64(rep.Operations) / rep.Seconds
	}
	if o.DataDir != "" {
		in := agent.TakeInventory(o.DataDir)
		rep.After = &in
		rep.Leaked = leaked(*rep.Before, in)
	}
	switch {
	case ctx.Err() != nil:
		return rep, ctx.Err()
	case rep.Errors > 0 || len(rep.Leaked) > 0:
		return rep, fmt.Errorf("load: %d errors, %d leaked items", rep.Errors, len(rep.Leaked))
	}
	return rep, nil
}

// claimCycle counts a cycle about to start; false once MaxCycles are taken.
func (r *loadRun) claimCycle() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.o.MaxCycles > 0 && r.cycles >= r.o.MaxCycles {
		return false
	}
	r.cycles++
	return true
}

// cycle runs one sandbox through its life; the first failure ends it (the
// sandbox, if any, is destroyed).
func (r *loadRun) cycle(ctx context.Context, client int) {
	var id string
	step := func(name string, fn func(ctx context.Context) error) bool {
		octx, cancel := context.WithTimeout(ctx, r.o.OpTimeout)
		defer cancel()
		t0 := time.Now()
		err := fn(octx)
		d := time.Since(t0)
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil {
			r.errs = append(r.errs, fmt.Sprintf("client %d %s %s: %s", client, name, id, oneLine(err)))
			fmt.Fprintf(r.o.Log, "client %d: %s failed: %s\n", client, name, oneLine(err))
			return false
		}
		r.lat[name] = append(r.lat[name], d)
		return true
	}
	timeout := 900
	if !step(OpCreate, func(ctx context.Context) error {
		sb, err := r.c.CreateSandbox(ctx, apiwire.CreateSandbox{Template: r.o.Template, Metadata: r.md, TimeoutS: &timeout})
		id = sb.ID
		return err
	}) {
		return
	}
	defer func() {
		if !step(OpDestroy, func(ctx context.Context) error { return r.c.DeleteSandbox(ctx, id) }) {
			return
		}
		fmt.Fprintf(r.o.Log, "client %d: cycle of %s done\n", client, id)
	}()
	payload := make([]byte, r.o.FileBytes)
	_, _ = rand.Read(payload)
	execOK := func(ctx context.Context) error {
		res, err := r.c.Exec(ctx, id, apiwire.ExecRequest{Cmd: "echo", Args: []string{"ok"}})
		if err == nil && (res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != "ok") {
			err = fmt.Errorf("exec answered %+v", res)
		}
		return err
	}
	ok := step(OpExec, execOK) &&
		step(OpWrite, func(ctx context.Context) error {
			return r.c.WriteFile(ctx, id, "/tmp/load.bin", bytes.NewReader(payload), int64(len(payload)))
		}) &&
		step(OpRead, func(ctx context.Context) error {
			rc, _, err := r.c.ReadFile(ctx, id, "/tmp/load.bin")
			if err != nil {
				return err
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err == nil && !bytes.Equal(got, payload) {
				err = fmt.Errorf("read back %d bytes that differ from the %d written", len(got), len(payload))
			}
			return err
		})
	if !ok || r.o.NoPause {
		return
	}
	_ = step(OpPause, func(ctx context.Context) error { _, err := r.c.PauseSandbox(ctx, id); return err }) &&
		step(OpResume, func(ctx context.Context) error { _, err := r.c.ResumeSandbox(ctx, id); return err }) &&
		step(OpExec, execOK)
}

// sweep destroys whatever sandbox of this run is left (a failed destroy).
func (r *loadRun) sweep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	left, err := r.c.ListSandboxes(ctx, cli.SandboxFilter{Metadata: r.md})
	if err != nil {
		r.errs = append(r.errs, "list the run's sandboxes: "+oneLine(err))
		return
	}
	for _, sb := range left {
		if err := r.c.DeleteSandbox(ctx, sb.ID); err != nil && !isStatus(err, 404) {
			r.errs = append(r.errs, "sweep "+sb.ID+": "+oneLine(err))
		}
	}
}

// leaked lists what after holds that before did not.
func leaked(before, after agent.Inventory) []string {
	var out []string
	for _, l := range []struct {
		kind     string
		was, now []string
	}{
		{"vmm process", before.VMMs, after.VMMs},
		{"network namespace", before.Namespaces, after.Namespaces},
		{"link", before.Links, after.Links},
		{"loop device", before.Loops, after.Loops},
		{"mount", before.Mounts, after.Mounts},
		{"RAM file", before.RAMFiles, after.RAMFiles},
		{"run dir", before.RunDirs, after.RunDirs},
	} {
		for _, x := range l.now {
			if !slices.Contains(l.was, x) {
				out = append(out, l.kind+" "+x)
			}
		}
	}
	return out
}

// PrintLoad writes a load report as tables.
func PrintLoad(w io.Writer, rep LoadReport) error {
	fmt.Fprintf(w, "hearth bench load  %s  run %s  %d clients  %.0fs  %d cycles  %d operations  %.2f ops/s  errors %d\n\n",
		rep.URL, rep.RunID, rep.Clients, rep.Seconds, rep.Cycles, rep.Operations, rep.OpsPerSecond, rep.Errors)
	t := cli.NewTable(w, "operation", "n", "p50", "p99", "max")
	for _, s := range rep.Ops {
		t.Row(s.Name, fmt.Sprint(s.N), FormatMS(s.P50), FormatMS(s.P99), FormatMS(s.Max))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	for _, e := range rep.ErrorSamples {
		fmt.Fprintln(w, "error:", e)
	}
	if rep.Before != nil && rep.After != nil {
		fmt.Fprintln(w)
		it := cli.NewTable(w, "host inventory", "before", "after")
		b, a := *rep.Before, *rep.After
		for _, row := range []struct {
			name string
			b, a int
		}{
			{"VMM processes", len(b.VMMs), len(a.VMMs)},
			{"network namespaces", len(b.Namespaces), len(a.Namespaces)},
			{"links", len(b.Links), len(a.Links)},
			{"loop devices", len(b.Loops), len(a.Loops)},
			{"mounts", len(b.Mounts), len(a.Mounts)},
			{"RAM files", len(b.RAMFiles), len(a.RAMFiles)},
			{"run dirs", len(b.RunDirs), len(a.RunDirs)},
		} {
			it.Row(row.name, fmt.Sprint(row.b), fmt.Sprint(row.a))
		}
		if err := it.Flush(); err != nil {
			return err
		}
		if len(rep.Leaked) == 0 {
			fmt.Fprintln(w, "leaks: none")
		}
		for _, l := range rep.Leaked {
			fmt.Fprintln(w, "leaked:", l)
		}
	}
	return nil
}
