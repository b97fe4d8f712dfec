package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/bench"
	"github.com/hearth-sandbox/hearth/internal/cli"
)

func newBenchCmd() *cobra.Command {
	var (
		f          apiFlags
		o          bench.Options
		dev        bool
		imagesFrom string
		noPause    bool
		quiet      bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a hearth server: cold boot, exec round trip, pause/resume, snapshots",
		Long: `Measure a running hearth over its REST API, as a user sees it:

  - cold-boot create latency (p50/p95 over --n sandboxes) per template
    (tiny and base), and create(base)/create(tiny);
  - exec round trip of ` + "`true`" + `, against a GET /healthz round trip;
  - pause/resume and create-from-snapshot against cold boot, where the server
    supports them (skipped with a note otherwise).

Figures are reported with ratios against other figures of the same run, which
hold on noisy machines better than absolute times. Every sandbox the run
creates is tagged hearth-bench=<run id> and destroyed at the end, also on
Ctrl-C.

With --dev it starts its own control plane + agent in a temporary data dir
(needs root and --images-from DIR with built images) and removes it after.`,
		Example: `  hearth bench --dev --images-from /var/tmp/hearth-dev
  hearth bench --url http://127.0.0.1:3000 --api-key e2b_... --n 20 -o json`,
		Args: exactArgs(0, "bench [--dev --images-from DIR | --url URL --api-key KEY] [--n N]"),
		RunE: explained(func(cmd *cobra.Command, _ []string) (err error) {
			ctx := cmd.Context()
			progress := cmd.ErrOrStderr()
			if quiet {
				progress = nil
			}
			o.Log = progress
			if noPause {
				o.PauseN = -1
			}
			c, _, closeDev, err := benchTarget(cmd, f, dev, imagesFrom, quiet)
			if err != nil {
				return err
			}
			defer func() { err = errors.Join(err, closeDev()) }()
			rep, runErr := bench.Run(ctx, c, o)
			if dev {
				rep.Notes = append(rep.Notes, "--dev: the server runs in this process, so the healthz baseline has no process hop")
			}
			return errors.Join(writeBenchReport(cmd, f, rep, quiet), runErr)
		}),
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.IntVarP(&o.N, "n", "n", 10, "sandboxes created per template")
	fl.StringSliceVar(&o.Templates, "templates", []string{"tiny", "base"}, "cold-boot templates; the first also runs the exec, pause and snapshot stages")
	fl.IntVar(&o.ExecN, "exec-n", 20, "exec round trips")
	fl.IntVar(&o.BaselineN, "baseline-n", 20, "GET /healthz round trips (the baseline)")
	fl.IntVar(&o.PauseN, "pause-n", 3, "pause/resume cycles")
	fl.BoolVar(&noPause, "no-pause", false, "skip pause/resume")
	fl.DurationVar(&o.OpTimeout, "op-timeout", 5*time.Minute, "give up on any single API call after this long")
	fl.BoolVar(&o.NoSnapshot, "no-snapshot", false, "skip create-from-snapshot")
	fl.BoolVar(&dev, "dev", false, "start an in-process hearth dev in a temp data dir and measure it")
	fl.StringVar(&imagesFrom, "images-from", "", "with --dev: a data dir with built guest images")
	fl.BoolVarP(&quiet, "quiet", "q", false, "no progress lines")
	cmd.AddCommand(newBenchLoadCmd(), newBenchDensityCmd())
	return cmd
}

// writeBenchReport writes a report as JSON (-o json) or tables (nothing
// for a run that measured nothing), after a blank line that separates the
// tables from the progress lines.
func writeBenchReport(cmd *cobra.Command, f apiFlags, rep bench.Report, quiet bool) error {
	if f.json() {
		return cli.WriteJSON(cmd.OutOrStdout(), rep)
	}
	if len(rep.Stages) == 0 {
		return nil
	}
	if !quiet {
		fmt.Fprintln(cmd.ErrOrStderr())
	}
	return bench.Print(cmd.OutOrStdout(), rep)
}

// benchTarget returns the client of the server a bench measures: an
// in-process hearth dev (dev, with its data dir for leak inventories), or
// the one --url/--api-key or `hearth login` names (no data dir). closeDev
// stops the dev stack (a no-op otherwise).
func benchTarget(cmd *cobra.Command, f apiFlags, dev bool, imagesFrom string, quiet bool) (c *cli.Client, dataDir string, closeDev func() error, err error) {
	closeDev = func() error { return nil }
	if !dev {
		if c, err = f.client(); err != nil {
			return nil, "", closeDev, err
		}
		if c.APIKey == "" && c.Token == "" {
			return nil, "", closeDev, cli.Usagef("run `hearth login`, pass --url and --api-key, or use --dev --images-from DIR", "no server to measure")
		}
		return c, "", closeDev, nil
	}
	if err := cli.CheckFormat(f.output); err != nil {
		return nil, "", closeDev, err
	}
	ctx := cmd.Context()
	sp := cli.StartSpinner(cmd.ErrOrStderr(), "Starting an in-process hearth dev", !quiet && cli.IsTerminal(cmd.ErrOrStderr()))
	d, err := bench.StartDev(ctx, imagesFrom, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn})))
	final := ""
	if !quiet && err == nil {
		final = "hearth dev on " + d.URL
	}
	sp.Stop(final)
	if err != nil {
		return nil, "", closeDev, err
	}
	closeDev = func() error {
		if err := d.Close(ctx); err != nil {
			return fmt.Errorf("stop the dev stack: %w", err)
		}
		return nil
	}
	return cli.NewClient(d.URL, d.APIKey, ""), d.DataDir(), closeDev, nil
}

func newBenchLoadCmd() *cobra.Command {
	var (
		f          apiFlags
		o          bench.LoadOptions
		dev        bool
		imagesFrom string
		quiet      bool
	)
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Load a hearth server: concurrent create/exec/file/pause/resume/destroy cycles",
		Long: `Run --clients concurrent clients for --duration, each repeating one sandbox's
life: create, exec, write a file and read it back (compared), pause, resume,
exec, destroy. Prints throughput, p50/p99 latency per operation and every
error, and exits non-zero when any operation failed.

With --dev (an in-process hearth dev) or --data-dir (the agent's data dir on
this machine) it also takes an inventory of what the host holds for the
agent (VMM processes, network namespaces and links, loop devices, mounts,
RAM files, run dirs) before and after: anything left behind is a leak and
fails the run too.`,
		Example: `  hearth bench load --dev --images-from /var/tmp/hearth-test --clients 4 --duration 2m
  hearth bench load --url http://127.0.0.1:3000 --api-key e2b_... --data-dir /var/lib/hearth`,
		Args: exactArgs(0, "bench load [--dev --images-from DIR | --url URL --api-key KEY] [--clients N] [--duration D]"),
		RunE: explained(func(cmd *cobra.Command, _ []string) (err error) {
			if !quiet {
				o.Log = cmd.ErrOrStderr()
			}
			c, dataDir, closeDev, err := benchTarget(cmd, f, dev, imagesFrom, quiet)
			if err != nil {
				return err
			}
			defer func() { err = errors.Join(err, closeDev()) }()
			if dataDir != "" {
				o.DataDir = dataDir
			}
			rep, runErr := bench.Load(cmd.Context(), c, o)
			if f.json() {
				if err := cli.WriteJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else if err := bench.PrintLoad(cmd.OutOrStdout(), rep); err != nil {
				return err
			}
			return runErr
		}),
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.IntVar(&o.Clients, "clients", 4, "concurrent clients")
	fl.DurationVar(&o.Duration, "duration", time.Minute, "how long clients start new cycles")
	fl.IntVar(&o.MaxCycles, "max-cycles", 0, "stop after this many cycles in all (0: only --duration)")
	fl.StringVar(&o.Template, "template", "tiny", "template of the sandboxes")
	fl.BoolVar(&o.NoPause, "no-pause", false, "leave pause and resume out of the cycle")
	fl.DurationVar(&o.OpTimeout, "op-timeout", 5*time.Minute, "give up on any single API call after this long")
	fl.StringVar(&o.DataDir, "data-dir", "", "the agent's data dir on this machine, for the leak inventory")
	fl.BoolVar(&dev, "dev", false, "start an in-process hearth dev in a temp data dir and load it")
	fl.StringVar(&imagesFrom, "images-from", "", "with --dev: a data dir with built guest images")
	fl.BoolVarP(&quiet, "quiet", "q", false, "no progress lines")
	return cmd
}

func newBenchDensityCmd() *cobra.Command {
	var (
		f          apiFlags
		o          bench.DensityOptions
		dev        bool
		imagesFrom string
		quiet      bool
	)
	cmd := &cobra.Command{
		Use:   "density",
		Short: "Measure density: N children of a snapshot template, their memory, idle CPU, exec and resume",
		Long: `Snapshot a template guest (--template-mb of RAM with --touch-mb of heap
written by a process that stays), spawn --n children of it and report, as
ratios against figures of the same run:

  - spawn p50 (all children, and with at least N/2 idle siblings) vs a
    cold create of the same shape;
  - host memory per idle child (MemAvailable delta / N) and idle CPU per VM
    (% of a core: the VMM processes' utime+stime over --idle-window);
  - exec p50 with N idle siblings vs alone (the siblings destroyed);
  - resume of a --large-mb guest with --large-touch-mb written vs a
    --small-mb guest, and the first exec after a resume vs a warm exec.

Host memory and CPU are read from this machine's /proc: run it on the
agent's host (with --dev it always is). Everything the run creates is
tagged hearth-bench=<run id> and destroyed at the end, also on error and
Ctrl-C.`,
		Example: `  hearth bench density --url http://127.0.0.1:3000 --api-key e2b_... --n 40
  hearth bench density --dev --images-from /var/tmp/hearth-test --n 2 -o json`,
		Args: exactArgs(0, "bench density [--dev --images-from DIR | --url URL --api-key KEY] [--n N]"),
		RunE: explained(func(cmd *cobra.Command, _ []string) (err error) {
			if !quiet {
				o.Log = cmd.ErrOrStderr()
			}
			c, _, closeDev, err := benchTarget(cmd, f, dev, imagesFrom, quiet)
			if err != nil {
				return err
			}
			defer func() { err = errors.Join(err, closeDev()) }()
			rep, runErr := bench.Density(cmd.Context(), c, o)
			return errors.Join(writeBenchReport(cmd, f, rep, quiet), runErr)
		}),
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.IntVarP(&o.N, "n", "n", 40, "children spawned from the template")
	fl.StringVar(&o.Template, "template", "base", "template the guests boot from (needs python3)")
	fl.IntVar(&o.ColdN, "cold-n", 3, "cold creates of the baseline")
	fl.IntVar(&o.TemplateMB, "template-mb", 512, "memory of the template guest, MiB")
	fl.IntVar(&o.TouchMB, "touch-mb", 100, "heap written in the template guest before the snapshot, MiB")
	fl.IntVar(&o.LargeMB, "large-mb", 2048, "memory of the large resume guest, MiB (negative: skip the resume stage)")
	fl.IntVar(&o.LargeTouchMB, "large-touch-mb", 1536, "heap written in the large guest, MiB")
	fl.IntVar(&o.SmallMB, "small-mb", 256, "memory of the small resume guest, MiB")
	fl.IntVar(&o.ExecN, "exec-n", 20, "exec round trips per exec stage")
	fl.IntVar(&o.ResumeN, "resume-n", 3, "pause/resume cycles per resume guest")
	fl.DurationVar(&o.Settle, "settle", 30*time.Second, "wait after the children are up before reading memory and CPU (restored guests take ~20-60 s to go quiet)")
	fl.DurationVar(&o.IdleWindow, "idle-window", 30*time.Second, "how long idle CPU is measured")
	fl.DurationVar(&o.OpTimeout, "op-timeout", 5*time.Minute, "give up on any single API call after this long")
	fl.BoolVar(&dev, "dev", false, "start an in-process hearth dev in a temp data dir and measure it")
	fl.StringVar(&imagesFrom, "images-from", "", "with --dev: a data dir with built guest images")
	fl.BoolVarP(&quiet, "quiet", "q", false, "no progress lines")
	return cmd
}
