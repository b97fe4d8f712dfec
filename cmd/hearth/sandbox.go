package main

import (
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
)

func newSandboxCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:     "sandbox",
		Aliases: []string{"sb", "sandboxes"},
		Short:   "Create, list, use and destroy sandboxes",
		Long: `Sandboxes are microVMs. Credentials come from ` + "`hearth login`" + `,
or HEARTH_URL and HEARTH_API_KEY, or --url and --api-key.`,
	}
	f.register(cmd)
	cmd.AddCommand(
		newSandboxCreateCmd(&f),
		newSandboxLsCmd(&f),
		newSandboxGetCmd(&f),
		newSandboxExecCmd(&f),
		newSandboxCpCmd(&f),
		newSandboxStateCmd(&f, "pause", "Pause a sandbox: its memory and disk are kept, its CPU and RAM freed"),
		newSandboxStateCmd(&f, "resume", "Resume a paused sandbox where it was"),
		newSandboxRmCmd(&f),
		newSandboxTimeoutCmd(&f),
		newSandboxNetworkCmd(&f),
	)
	return cmd
}

func newSandboxCreateCmd(f *apiFlags) *cobra.Command {
	var (
		tpl                   string
		vcpus, memMB, diskMB  int
		timeout               string
		env, metadata         []string
		autoPause, autoResume bool
		noInternet, quiet     bool
		allowOut, denyOut     []string
		volumes               []string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a sandbox and wait until it runs",
		Example: `  hearth sandbox create
  hearth sandbox create --template tiny --timeout 10m --env FOO=bar --metadata user=ada
  hearth sandbox create --volume data:/mnt/data
  ID=$(hearth sandbox create -q)`,
		Args: exactArgs(0, "sandbox create [--template NAME] [flags]"),
		RunE: explained(func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			in := apiwire.CreateSandbox{Template: tpl, AutoPause: autoPause, AutoResume: autoResume}
			if in.Env, err = cli.ParsePairs("env", env); err != nil {
				return err
			}
			if in.Metadata, err = cli.ParsePairs("metadata", metadata); err != nil {
				return err
			}
			fs := cmd.Flags()
			if fs.Changed("vcpus") {
				in.VCPUs = &vcpus
			}
			if fs.Changed("memory-mb") {
				in.MemoryMB = &memMB
			}
			if fs.Changed("disk-size-mb") {
				in.DiskSizeMB = &diskMB
			}
			if fs.Changed("timeout") {
				s, err := parseSeconds(timeout)
				if err != nil {
					return err
				}
				in.TimeoutS = &s
			}
			if noInternet {
				no := false
				in.AllowInternet = &no
			}
			in.AllowOut, in.DenyOut = allowOut, denyOut
			for _, v := range volumes {
				name, path, ok := strings.Cut(v, ":")
				if !ok || name == "" || path == "" {
					return fmt.Errorf("--volume %q: want VOLUME:/path/in/the/sandbox (see hearth volume ls)", v)
				}
				in.Volumes = append(in.Volumes, apiwire.VolumeMount{Volume: name, Path: path})
			}
			sp := cli.StartSpinner(cmd.ErrOrStderr(), "Starting a "+tpl+" sandbox", !quiet && !f.json() && cli.IsTerminal(cmd.ErrOrStderr()))
			sb, err := c.CreateSandbox(cmd.Context(), in)
			if err != nil {
				sp.Stop("")
				return err
			}
			final := ""
			if !quiet && !f.json() {
				final = "Sandbox " + sb.ID + " is " + sb.Status
			}
			sp.Stop(final)
			switch {
			case f.json():
				return cli.WriteJSON(cmd.OutOrStdout(), sb)
			case quiet:
				_, err := fmt.Fprintln(cmd.OutOrStdout(), sb.ID)
				return err
			}
			return printSandbox(cmd.OutOrStdout(), sb, tpl)
		}),
	}
	fl := cmd.Flags()
	fl.StringVarP(&tpl, "template", "t", "base", "template name or ID")
	lim := sandbox.Public()
	fl.IntVar(&vcpus, "vcpus", 0, fmt.Sprintf("virtual CPUs, %d-%d (default: the template's)", lim.VCPUs.Min, lim.VCPUs.Max))
	fl.IntVar(&memMB, "memory-mb", 0, fmt.Sprintf("memory in MiB, %d-%d (default: the template's)", lim.MemoryMB.Min, lim.MemoryMB.Max))
	fl.IntVar(&diskMB, "disk-size-mb", 0, fmt.Sprintf("root disk size in MiB (default %d)", sandbox.DefaultDiskSizeMB))
	fl.StringVar(&timeout, "timeout", "", "destroy (or pause, with --auto-pause) after this long: seconds or a duration like 10m (default 5m)")
	fl.StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	fl.StringArrayVarP(&metadata, "metadata", "m", nil, "metadata KEY=VALUE (repeatable)")
	fl.BoolVar(&autoPause, "auto-pause", false, "pause instead of destroying at the timeout")
	fl.BoolVar(&autoResume, "auto-resume", false, "resume automatically when used while paused")
	fl.BoolVar(&noInternet, "no-internet", false, "no outbound internet access")
	addEgressRuleFlags(fl, &allowOut, &denyOut)
	fl.StringArrayVar(&volumes, "volume", nil, "mount a volume, VOLUME:/path (repeatable; the sandbox cannot pause)")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print only the sandbox ID")
	return cmd
}

func addEgressRuleFlags(fl *pflag.FlagSet, allowOut, denyOut *[]string) {
	fl.StringArrayVar(allowOut, "allow-out", nil, "allow outbound traffic to this IP or CIDR even if denied otherwise (repeatable)")
	fl.StringArrayVar(denyOut, "deny-out", nil, "deny outbound traffic to this IP or CIDR, e.g. 0.0.0.0/0 (repeatable)")
}

func newSandboxNetworkCmd(f *apiFlags) *cobra.Command {
	var (
		noInternet        bool
		allowOut, denyOut []string
	)
	cmd := &cobra.Command{
		Use:   "network ID",
		Short: "Replace a sandbox's egress rules (applied at once when it runs)",
		Long: `Replace a sandbox's egress rules. The flags give the whole new configuration:
what is not given is cleared (internet on, no rules). --allow-out wins over
--deny-out; private, link-local and loopback ranges stay closed unless the
operator opened them (--egress-allow-private), whatever --allow-out says.`,
		Example: `  hearth sandbox network $ID --no-internet --allow-out 1.1.1.1
  hearth sandbox network $ID --deny-out 0.0.0.0/0 --allow-out 140.82.112.0/20
  hearth sandbox network $ID    # back to the default: internet, no rules`,
		Args: exactArgs(1, "sandbox network ID [--no-internet] [--allow-out CIDR] [--deny-out CIDR]"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			n := apiwire.Network{AllowOut: allowOut, DenyOut: denyOut}
			if noInternet {
				no := false
				n.AllowInternet = &no
			}
			sb, err := c.SetNetwork(cmd.Context(), args[0], n)
			if err != nil {
				return err
			}
			return printDone(cmd, *f, sb, fmt.Sprintf("Sandbox %s: %s", sb.ID, egressSummary(sb)))
		}),
	}
	cmd.Flags().BoolVar(&noInternet, "no-internet", false, "no outbound internet access except --allow-out")
	addEgressRuleFlags(cmd.Flags(), &allowOut, &denyOut)
	return cmd
}

func egressSummary(sb apiwire.Sandbox) string {
	s := "internet " + map[bool]string{true: "on", false: "off"}[sb.AllowInternet]
	if len(sb.AllowOut) > 0 {
		s += "; allow " + strings.Join(sb.AllowOut, ",")
	}
	if len(sb.DenyOut) > 0 {
		s += "; deny " + strings.Join(sb.DenyOut, ",")
	}
	return s
}

func printSandbox(w io.Writer, sb apiwire.Sandbox, tplName string) error {
	now := time.Now()
	if tplName == "" {
		tplName = sb.TemplateID
	}
	kv := [][2]string{
		{"ID", sb.ID},
		{"Template", tplName},
		{"Status", sb.Status},
		{"Resources", cli.Resources(sb.VCPUs, sb.MemoryMB, sb.DiskSizeMB)},
		{"Host", sb.Host},
		{"Created", sb.CreatedAt.Local().Format(time.RFC3339) + " (" + cli.Age(now, sb.CreatedAt) + " ago)"},
	}
	if !sb.EndAt.IsZero() {
		what := "destroyed"
		if sb.AutoPause {
			what = "paused"
		}
		kv = append(kv, [2]string{"Ends", fmt.Sprintf("%s (%s in %s)", sb.EndAt.Local().Format(time.RFC3339), what, cli.Age(sb.EndAt, now))})
	}
	kv = append(kv, [2]string{"Metadata", cli.Pairs(sb.Metadata)})
	if len(sb.EnvKeys) > 0 {
		kv = append(kv, [2]string{"Env", strings.Join(sb.EnvKeys, ",")})
	}
	kv = append(kv, [2]string{"Egress", egressSummary(sb)})
	if sb.Error != "" {
		kv = append(kv, [2]string{"Error", sb.Error})
	}
	return cli.KV(w, kv...)
}

func newSandboxLsCmd(f *apiFlags) *cobra.Command {
	var status, metadata []string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List sandboxes",
		Example: `  hearth sandbox ls
  hearth sandbox ls --status running,paused --metadata user=ada -o json`,
		Args: exactArgs(0, "sandbox ls [--status S] [--metadata K=V]"),
		RunE: explained(func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			md, err := cli.ParsePairs("metadata", metadata)
			if err != nil {
				return err
			}
			var sts []string
			for _, s := range status {
				sts = append(sts, strings.Split(s, ",")...)
			}
			sbs, err := c.ListSandboxes(cmd.Context(), cli.SandboxFilter{Statuses: sts, Metadata: md})
			if err != nil {
				return err
			}
			cli.SortSandboxes(sbs)
			if f.json() {
				return cli.WriteJSON(cmd.OutOrStdout(), nonNil(sbs))
			}
			// Template names are a nicety: without them, show IDs.
			names := map[string]string{}
			if ts, err := c.ListTemplates(cmd.Context()); err == nil {
				names = cli.TemplateNames(ts)
			}
			now := time.Now()
			t := cli.NewTable(cmd.OutOrStdout(), "id", "template", "status", "resources", "age", "metadata")
			for _, sb := range sbs {
				tn := names[sb.TemplateID]
				if tn == "" {
					tn = sb.TemplateID
				}
				t.Row(sb.ID, tn, sb.Status, cli.Resources(sb.VCPUs, sb.MemoryMB, sb.DiskSizeMB), cli.Age(now, sb.CreatedAt), cli.Pairs(sb.Metadata))
			}
			return t.Flush()
		}),
	}
	cmd.Flags().StringSliceVar(&status, "status", nil, "only these statuses (running, paused, ...)")
	cmd.Flags().StringArrayVarP(&metadata, "metadata", "m", nil, "only sandboxes with metadata KEY=VALUE (repeatable)")
	return cmd
}

func newSandboxGetCmd(f *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a sandbox",
		Args:  exactArgs(1, "sandbox get ID"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			sb, err := c.GetSandbox(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if f.json() {
				return cli.WriteJSON(cmd.OutOrStdout(), sb)
			}
			name := ""
			if ts, err := c.ListTemplates(cmd.Context()); err == nil {
				name = cli.TemplateNames(ts)[sb.TemplateID]
			}
			return printSandbox(cmd.OutOrStdout(), sb, name)
		}),
	}
}

func newSandboxExecCmd(f *apiFlags) *cobra.Command {
	var (
		env     []string
		cwd     string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "exec ID -- CMD [ARGS...]",
		Short: "Run a command in a sandbox; exits with the command's exit code",
		Long: `Run a command in a sandbox, printing its stdout and stderr as it runs.
The command and its arguments are passed as a list, not through a shell; to
use shell syntax, run one: hearth sandbox exec ID -- sh -c 'echo $HOME | wc -c'`,
		Example: `  hearth sandbox exec $ID -- python3 -c 'print(6*7)'
  hearth sandbox exec $ID --cwd /tmp --env DEBUG=1 -- ls -la`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return cli.Explain(cli.Usagef("usage: hearth sandbox exec ID -- CMD [ARGS...]", "exec needs a sandbox ID and a command"))
			}
			if d := cmd.ArgsLenAtDash(); d != -1 && d != 1 {
				return cli.Explain(cli.Usagef("put the sandbox ID before --: hearth sandbox exec ID -- CMD [ARGS...]", "exec takes one sandbox ID before the command"))
			}
			return nil
		},
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			req := apiwire.ExecRequest{Cmd: args[1], Args: args[2:], Cwd: cwd}
			if req.Env, err = cli.ParsePairs("env", env); err != nil {
				return err
			}
			if timeout > 0 {
				req.TimeoutS = max(1, int(timeout.Round(time.Second)/time.Second))
			}
			var code int
			if f.json() {
				// One JSON document: the output is collected first.
				res, err := c.Exec(cmd.Context(), args[0], req)
				if err != nil {
					return err
				}
				if err := cli.WriteJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
				code = res.ExitCode
			} else {
				// Output appears as the command writes it; Ctrl-C cancels
				// the context, which closes the stream and stops the command.
				if code, err = c.ExecStream(cmd.Context(), args[0], req, cmd.OutOrStdout(), cmd.ErrOrStderr()); err != nil {
					return err
				}
			}
			if code != 0 {
				return &cli.ExitError{Code: code}
			}
			return nil
		}),
	}
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	cmd.Flags().StringVar(&cwd, "cwd", "", "working directory in the sandbox")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "kill the command after this long (default: the server's)")
	return cmd
}

// remoteRef parses "ID:/path" (a sandbox side of cp); ok is false for a
// local path. A local path containing ':' can be written ./a:b.
func remoteRef(s string) (id, p string, ok bool) {
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") {
		return "", "", false
	}
	id, p, ok = strings.Cut(s, ":")
	if !ok || id == "" || strings.ContainsAny(id, `/\`) {
		return "", "", false
	}
	return id, p, true
}

func newSandboxCpCmd(f *apiFlags) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy a file between this machine and a sandbox",
		Long: `Copy one file. The sandbox side is written ID:/path. "-" is standard input
(upload) or standard output (download). A destination ending in "/" (or an
existing local directory) gets the source's file name.`,
		Example: `  hearth sandbox cp ./data.csv $ID:/home/user/data.csv
  hearth sandbox cp $ID:/etc/os-release .
  hearth sandbox cp $ID:/tmp/out.json - | jq .`,
		Args: exactArgs(2, "sandbox cp SRC DST (one side is ID:/path)"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			srcID, srcPath, srcRemote := remoteRef(args[0])
			dstID, dstPath, dstRemote := remoteRef(args[1])
			switch {
			case srcRemote == dstRemote:
				return cli.Usagef("write the sandbox side as ID:/path, e.g. hearth sandbox cp ./f $ID:/tmp/f", "exactly one of SRC and DST must be in a sandbox")
			case srcRemote && srcPath == "", dstRemote && dstPath == "":
				return cli.Usagef("e.g. "+args[0]+"/tmp/file", "missing the path after ID:")
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			animate := !quiet && !f.json() && cli.IsTerminal(cmd.ErrOrStderr())
			var n int64
			if dstRemote { // upload
				var r io.Reader = cmd.InOrStdin()
				size := int64(-1)
				name := "stdin"
				if args[0] != "-" {
					fh, err := os.Open(args[0])
					if err != nil {
						return err
					}
					defer fh.Close()
					st, err := fh.Stat()
					if err != nil {
						return err
					}
					if st.IsDir() {
						return cli.Usagef("copy one file at a time (or tar it first)", "%s is a directory", args[0])
					}
					r, size, name = fh, st.Size(), filepath.Base(args[0])
				}
				if strings.HasSuffix(dstPath, "/") {
					dstPath += name
				}
				bar := cli.NewBar(cmd.ErrOrStderr(), "upload "+name, size, animate)
				err := c.WriteFile(ctx, dstID, dstPath, bar.Reader(r), size)
				bar.Finish()
				if err != nil {
					return err
				}
				n = bar.N()
			} else { // download
				body, size, err := c.ReadFile(ctx, srcID, srcPath)
				if err != nil {
					return err
				}
				defer body.Close()
				bar := cli.NewBar(cmd.ErrOrStderr(), "download "+path.Base(srcPath), size, animate)
				if args[1] == "-" {
					_, err = io.Copy(bar.Writer(cmd.OutOrStdout()), body)
					bar.Finish()
					return err
				}
				dst := args[1]
				if st, err := os.Stat(dst); (err == nil && st.IsDir()) || strings.HasSuffix(dst, "/") {
					dst = filepath.Join(dst, path.Base(srcPath))
				}
				if n, err = writeFileAtomic(dst, bar.Reader(body)); err != nil {
					bar.Finish()
					return err
				}
				bar.Finish()
			}
			if quiet {
				return nil
			}
			return printDone(cmd, *f, map[string]any{"src": args[0], "dst": args[1], "bytes": n},
				fmt.Sprintf("Copied %s (%s → %s)", cli.Bytes(n), args[0], args[1]))
		}),
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress or summary")
	return cmd
}

// writeFileAtomic writes r to path through a temporary file in the same
// directory, so an interrupted download never leaves a truncated file.
func writeFileAtomic(dst string, r io.Reader) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".part*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, r)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("write %s: %w", dst, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return n, err
	}
	return n, os.Rename(tmp.Name(), dst)
}

func newSandboxStateCmd(f *apiFlags, verb, short string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " ID",
		Short: short,
		Args:  exactArgs(1, "sandbox "+verb+" ID"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			sp := cli.StartSpinner(cmd.ErrOrStderr(), strings.ToUpper(verb[:1])+verb[1:]+" "+args[0], !f.json() && cli.IsTerminal(cmd.ErrOrStderr()))
			var sb apiwire.Sandbox
			if verb == "pause" {
				sb, err = c.PauseSandbox(cmd.Context(), args[0])
			} else {
				sb, err = c.ResumeSandbox(cmd.Context(), args[0])
			}
			el := sp.Stop("")
			if err != nil {
				return err
			}
			return printDone(cmd, *f, sb, fmt.Sprintf("Sandbox %s is %s (%.1fs)", sb.ID, sb.Status, el.Seconds()))
		}),
	}
}

func newSandboxRmCmd(f *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID [ID...]",
		Aliases: []string{"kill", "delete"},
		Short:   "Destroy sandboxes",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cli.Explain(cli.Usagef("usage: hearth sandbox rm ID [ID...]", "rm needs at least one sandbox ID"))
			}
			return nil
		},
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var firstErr error
			deleted := []string{}
			for _, id := range args {
				if err := c.DeleteSandbox(cmd.Context(), id); err != nil {
					if len(args) > 1 {
						fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", id, err)
					}
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				deleted = append(deleted, id)
				if !f.json() {
					fmt.Fprintf(cmd.OutOrStdout(), "Destroyed %s\n", id)
				}
			}
			if f.json() {
				if err := cli.WriteJSON(cmd.OutOrStdout(), map[string]any{"deleted": deleted}); err != nil {
					return err
				}
			}
			return firstErr
		}),
	}
}

func newSandboxTimeoutCmd(f *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "timeout ID SECONDS",
		Short: "End the sandbox SECONDS from now (destroyed, or paused with --auto-pause)",
		Example: `  hearth sandbox timeout $ID 600
  hearth sandbox timeout $ID 1h`,
		Args: exactArgs(2, "sandbox timeout ID SECONDS"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			secs, err := parseSeconds(args[1])
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			sb, err := c.SetTimeout(cmd.Context(), args[0], secs)
			if err != nil {
				return err
			}
			return printDone(cmd, *f, sb, fmt.Sprintf("Sandbox %s now ends at %s", sb.ID, sb.EndAt.Local().Format(time.RFC3339)))
		}),
	}
}

// parseSeconds accepts "600" or a duration such as "10m".
func parseSeconds(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		return n, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= time.Second {
		return int(d.Round(time.Second) / time.Second), nil
	}
	return 0, cli.Usagef("give seconds (600) or a duration (10m)", "bad timeout %q", s)
}
