package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/buildcontext"
	"github.com/hearth-sandbox/hearth/internal/cli"
)

func newTemplateCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:     "template",
		Aliases: []string{"templates", "tpl"},
		Short:   "Build, list and delete the templates sandboxes start from",
	}
	f.register(cmd)
	cmd.AddCommand(newTemplateBuildCmd(&f), newTemplateRmCmd(&f), newTemplateLogsCmd(&f))
	cmd.AddCommand(&cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List your team's templates and the platform's",
		Args:    exactArgs(0, "template ls"),
		RunE: explained(func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			ts, err := c.ListTemplates(cmd.Context())
			if err != nil {
				return err
			}
			return printTemplates(cmd.OutOrStdout(), f, ts)
		}),
	})
	return cmd
}

func printTemplates(w io.Writer, f apiFlags, ts []apiwire.Template) error {
	if f.json() {
		return cli.WriteJSON(w, nonNil(ts))
	}
	now := time.Now()
	t := cli.NewTable(w, "name", "kind", "status", "scope", "resources", "source", "age", "id")
	for _, tp := range ts {
		scope := "team"
		if tp.Platform {
			scope = "platform"
		}
		src := tp.SourceSandboxID
		if tp.StartCmd != "" {
			src = "start: " + tp.StartCmd
		}
		if src == "" {
			src = "-"
		}
		status := tp.BuildStatus
		if status == "" {
			status = "ready"
		}
		t.Row(tp.Name, tp.Kind, status, scope, cli.Resources(tp.VCPUs, tp.MemoryMB, tp.DiskSizeMB), src, cli.Age(now, tp.CreatedAt), tp.ID)
	}
	return t.Flush()
}

func newSnapshotCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:     "snapshot",
		Aliases: []string{"snapshots", "snap"},
		Short:   "Snapshot templates: freeze a sandbox and start new ones from it without booting",
	}
	f.register(cmd)
	create := &cobra.Command{
		Use:   "create SANDBOX NAME",
		Short: "Snapshot a running or paused sandbox into the template NAME",
		Example: `  hearth snapshot create $ID py-ready
  hearth sandbox create --template py-ready`,
		Args: exactArgs(2, "snapshot create SANDBOX NAME"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			sp := cli.StartSpinner(cmd.ErrOrStderr(), "Snapshotting "+args[0], !f.json() && cli.IsTerminal(cmd.ErrOrStderr()))
			t, err := c.CreateSnapshot(cmd.Context(), args[0], args[1])
			el := sp.Stop("")
			if err != nil {
				return err
			}
			return printDone(cmd, f, t, fmt.Sprintf("Snapshot template %s created from %s (%.1fs); start sandboxes with: hearth sandbox create --template %s", t.Name, args[0], el.Seconds(), t.Name))
		}),
	}
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List snapshot templates",
		Args:    exactArgs(0, "snapshot ls"),
		RunE: explained(func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			ts, err := c.ListSnapshots(cmd.Context())
			if err != nil {
				return err
			}
			return printTemplates(cmd.OutOrStdout(), f, ts)
		}),
	}
	rm := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete a snapshot template (refused while paused sandboxes depend on it)",
		Args:    exactArgs(1, "snapshot rm NAME"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			if err := c.DeleteSnapshot(cmd.Context(), args[0]); err != nil {
				return err
			}
			return printDone(cmd, f, map[string]string{"deleted": args[0]}, "Deleted snapshot template "+args[0])
		}),
	}
	cmd.AddCommand(create, ls, rm)
	return cmd
}

func newTemplateBuildCmd(f *apiFlags) *cobra.Command {
	var (
		name, dockerfile, readyCmd string
		vcpus, memMB, diskMB       int
		skipCache, platform        bool
		buildArgs                  []string
		registryUser               string
		registryPassStdin          bool
	)
	cmd := &cobra.Command{
		Use:   "build --name NAME [-f Dockerfile] CONTEXT",
		Short: "Build a template from a Dockerfile (RUN steps run in microVMs; a CMD becomes a snapshot taken serving)",
		Example: `  hearth template build --name web .
  hearth template build --name web -f docker/Dockerfile --ready-cmd 'curl -sf localhost:8000' .
  hearth sandbox create --template web`,
		Args: exactArgs(1, "template build --name NAME CONTEXT"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			if name == "" {
				return errors.New("--name is required: the template's name (name or name:tag)")
			}
			ctxDir := args[0]
			if dockerfile == "" {
				dockerfile = filepath.Join(ctxDir, "Dockerfile")
			}
			df, err := os.ReadFile(dockerfile)
			if err != nil {
				return fmt.Errorf("read the Dockerfile: %w (pass its path with -f)", err)
			}
			bargs := map[string]string{}
			for _, a := range buildArgs {
				k, v, ok := strings.Cut(a, "=")
				if !ok {
					return fmt.Errorf("--build-arg %q: want KEY=VALUE", a)
				}
				bargs[k] = v
			}
			reg, err := registryCredentials(cmd, registryUser, registryPassStdin)
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var archive bytes.Buffer
			if err := buildcontext.Pack(ctxDir, &archive); err != nil {
				return fmt.Errorf("pack the build context %s: %w", ctxDir, err)
			}
			hash, err := c.UploadBuildContext(ctx, &archive)
			if err != nil {
				return err
			}
			b, err := c.CreateBuild(ctx, name, cli.BuildRequest{
				Dockerfile: string(df), ContextHash: hash, BuildArgs: bargs, VCPUs: vcpus, MemoryMB: memMB, DiskSizeMB: diskMB,
				SkipCache: skipCache, Platform: platform, ReadyCmd: readyCmd, Registry: reg,
			})
			if err != nil {
				return err
			}
			errw := cmd.ErrOrStderr()
			if !f.json() {
				fmt.Fprintf(errw, "Building %s (build %s)\n", b.Template, b.ID)
			}
			b, err = followBuild(ctx, c, errw, b, !f.json() && cli.IsTerminal(errw))
			if err != nil {
				return err
			}
			if b.Status != "ready" {
				return fmt.Errorf("build %s %s: %s", b.ID, b.Status, b.Error)
			}
			return printDone(cmd, *f, b, fmt.Sprintf("Template %s is ready (%s); start sandboxes with: hearth sandbox create --template %s", b.Template, b.Kind, b.Template))
		}),
	}
	cmd.Flags().StringVar(&name, "name", "", "template name (name or name:tag)")
	cmd.Flags().StringVarP(&dockerfile, "file", "f", "", "Dockerfile (default CONTEXT/Dockerfile)")
	cmd.Flags().StringVar(&readyCmd, "ready-cmd", "", "shell command that exits 0 once the start command (CMD/ENTRYPOINT) is ready")
	cmd.Flags().IntVar(&vcpus, "cpus", 0, "vCPUs of the template (default 2)")
	cmd.Flags().IntVar(&memMB, "memory", 0, "memory in MiB of the template (default 1024)")
	cmd.Flags().IntVar(&diskMB, "disk-mb", 0, "root disk in MiB of the template, baked in (default 20480)")
	cmd.Flags().BoolVar(&skipCache, "no-cache", false, "rebuild every step")
	cmd.Flags().BoolVar(&platform, "platform", false, "build a platform template every team can use (platform admins)")
	cmd.Flags().StringArrayVar(&buildArgs, "build-arg", nil, "KEY=VALUE for an ARG (repeatable)")
	cmd.Flags().StringVar(&registryUser, "registry-user", "", "username for FROM's registry (password from $"+envRegistryPassword+" or --registry-password-stdin)")
	cmd.Flags().BoolVar(&registryPassStdin, "registry-password-stdin", false, "read the registry password from stdin")
	return cmd
}

// envRegistryPassword holds the registry password for --registry-user (a
// flag would show it in ps and shell history).
const envRegistryPassword = "HEARTH_REGISTRY_PASSWORD"

// registryCredentials are FROM's registry credentials from the flags
// (nil: none given).
func registryCredentials(cmd *cobra.Command, user string, fromStdin bool) (*apiwire.RegistryAuth, error) {
	if user == "" {
		if fromStdin {
			return nil, errors.New("--registry-password-stdin needs --registry-user")
		}
		return nil, nil
	}
	pass := os.Getenv(envRegistryPassword)
	if fromStdin {
		b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<10))
		if err != nil {
			return nil, fmt.Errorf("read the registry password from stdin: %w", err)
		}
		pass = strings.TrimRight(string(b), "\r\n")
	}
	if pass == "" {
		return nil, fmt.Errorf("--registry-user %s needs a password: set $%s or pass --registry-password-stdin", user, envRegistryPassword)
	}
	return &apiwire.RegistryAuth{Username: user, Password: pass}, nil
}

// followBuild shows the build's log until it ends; Ctrl-C cancels the
// build.
func followBuild(ctx context.Context, c *cli.Client, w io.Writer, b cli.Build, live bool) (cli.Build, error) {
	p := cli.NewBuildProgress(w, live)
	stop := make(chan struct{})
	if live {
		go func() {
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					p.Tick()
				}
			}
		}()
	}
	var mu sync.Mutex
	after := 0
	for {
		err := c.FollowBuildLogs(ctx, b.Template, b.ID, after, func(l cli.BuildLog) error {
			mu.Lock()
			defer mu.Unlock()
			p.Add(l)
			after = l.Seq
			return nil
		})
		if ctx.Err() != nil {
			close(stop)
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if cb, cerr := c.CancelBuild(cctx, b.Template, b.ID); cerr == nil {
				fmt.Fprintf(w, "Build %s cancelled\n", cb.ID)
			}
			return b, ctx.Err()
		}
		if err != nil {
			close(stop)
			return b, err
		}
		cur, err := c.GetBuild(ctx, b.Template, b.ID)
		if err != nil || cur.Finished() {
			close(stop)
			return cur, err
		}
		// The stream ended before the build (a proxy's or the server's
		// time limit): follow again from the last line shown.
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func newTemplateRmCmd(f *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete a built template and its files (refused while sandboxes use it)",
		Args:    exactArgs(1, "template rm NAME"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			if err := c.DeleteTemplate(cmd.Context(), args[0]); err != nil {
				return err
			}
			return printDone(cmd, *f, map[string]string{"deleted": args[0]}, "Deleted template "+args[0])
		}),
	}
}

func newTemplateLogsCmd(f *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "logs NAME [BUILD]",
		Short: "Show a build's log (default: the template's latest build), following it while it runs",
		Args:  cobra.RangeArgs(1, 2),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			id := ""
			if len(args) == 2 {
				id = args[1]
			} else {
				bs, err := c.ListBuilds(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if len(bs) == 0 {
					return fmt.Errorf("template %s has no builds", args[0])
				}
				id = bs[0].ID
			}
			return c.FollowBuildLogs(cmd.Context(), args[0], id, 0, func(l cli.BuildLog) error {
				if f.json() {
					return cli.WriteJSON(cmd.OutOrStdout(), l)
				}
				step := ""
				if l.Step > 0 {
					step = fmt.Sprintf("[%d] ", l.Step)
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s %s%s\n", l.Time.Local().Format("15:04:05"), step, l.Message)
				return err
			})
		}),
	}
}
