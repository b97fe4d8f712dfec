package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hearth-sandbox/hearth/internal/agent"
	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/devstack"
	"github.com/hearth-sandbox/hearth/internal/egress"
)

func newDevCmd() *cobra.Command {
	cfg := config.Default()
	var opts devstack.Options
	var egressPrivate []string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the control plane and a host agent in one process (one machine, SQLite)",
		Long: `Run everything on this machine: the control plane (SQLite in the data dir)
and a host agent that runs sandboxes as microVMs. On first start it creates a
developer account (a platform admin) and an API key, saved in
<data-dir>/dev-credentials.json, and prints them with ready-to-paste examples.

Build the guest images first (make run does): hearth image build --data-dir DIR`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := newLogger(cmd, cfg.LogLevel)
			opts.Config, opts.Logger = cfg, log
			open, err := egress.ParseOperatorRanges(egressPrivate)
			if err != nil {
				return err
			}
			opts.AgentOptions.EgressAllowPrivate = open
			s, err := devstack.Start(ctx, opts)
			if err != nil {
				return err
			}
			printDevBanner(cmd.OutOrStdout(), s, cfg.Domain)
			werr := s.Wait(ctx)
			log.Info("shutting down: stopping sandboxes")
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			if err := s.Close(sctx); err != nil && werr == nil {
				werr = err
			}
			return werr
		},
	}
	config.AddServerFlags(cmd.Flags(), &cfg)
	fs := cmd.Flags()
	fs.StringVar(&opts.ImagesFrom, "images-from", "", "reuse the guest images of another data dir (links DATA_DIR/images to it)")
	fs.StringVar(&opts.AgentOptions.VMM, "vmm", "", "restrict the VMM: firecracker, qemu-kvm, qemu-tcg or qemu (default: probe)")
	fs.BoolVar(&opts.CodeInterpreter, "code-interpreter", true, "bake the code-interpreter-v1 template (E2B code interpreter) at start when the code-interpreter image is built")
	fs.StringVar(&opts.AgentOptions.RootfsBackend, "rootfs-backend", "", "root-disk backend: devicemapper, reflink, qcow2 or copy (default: probe)")
	addCrashAtFlag(fs, &opts.AgentOptions.CrashAt)
	addEgressFlag(fs, &egressPrivate)
	addFirecrackerFlags(fs, &opts.AgentOptions.Firecracker)
	config.BindCommand(cmd)
	return cmd
}

const egressFlag = "egress-allow-private"

// addFirecrackerFlags configure Firecracker's jailer, for the commands
// that run an agent.
func addFirecrackerFlags(fs *pflag.FlagSet, j *agent.FirecrackerJail) {
	fs.StringVar(&j.Jailer, "firecracker-jailer", "", "Firecracker's jailer binary, from the same release as firecracker (default: jailer in PATH); each Firecracker VM then runs chrooted as its own uid")
	fs.StringVar(&j.ChrootBase, "firecracker-chroot-base", "", "the jailer's chroot base directory; must be on the root disks' file system, as they are hard-linked into it (default: hearth-jail at the top of each root disk's file system, /srv/jailer for block-device disks)")
	fs.BoolVar(&j.AllowRoot, "firecracker-allow-root", false, "run Firecracker as root, unconfined, when there is no jailer (not recommended; without it Firecracker is refused and QEMU is used)")
}

// addEgressFlag is --egress-allow-private, shared by the commands that run
// an agent.
func addEgressFlag(fs *pflag.FlagSet, v *[]string) {
	fs.StringArrayVar(v, egressFlag, nil, "open a private range (CIDR) that sandboxes cannot reach by default: RFC 1918, 100.64.0.0/10, "+
		"169.254.0.0/16, loopback, multicast; repeatable, or comma-separated; sandbox policies still apply")
}

func printDevBanner(w io.Writer, s *devstack.Stack, domain string) {
	c := s.Credentials
	fmt.Fprintf(w, `
hearth dev is running.

  API          %[1]s/v1           (OpenAPI: %[1]s/openapi.yaml)
  API test UI  %[1]s/docs/
  Dashboard    %[1]s/app/
  Login        %[2]s / %[3]s
  API key      %[4]s

Run a command in a new sandbox:

  ID=$(curl -s -X POST %[1]s/v1/sandboxes -H 'X-API-Key: %[4]s' -d '{"template":"base"}' | sed -E 's/.*"id":"([a-z0-9]+)".*/\1/')
  curl -s -X POST %[1]s/v1/sandboxes/$ID/exec -H 'X-API-Key: %[4]s' -d '{"cmd":"python3","args":["-c","print(6*7)"]}'

Use the E2B SDKs unmodified:

  %[5]s

The E2B code interpreter (@e2b/code-interpreter) uses the template
code-interpreter-v1, baked in the background at start when the
code-interpreter image is built (watch the log for "code interpreter").

Press Ctrl-C to stop (running sandboxes are stopped with it).
`, s.URL, c.Email, c.Password, c.APIKey, sdkEnv(s.URL, domain, c.APIKey))
}

// sdkEnv is what E2B SDKs need: every generation finds a TLS deployment
// from its domain (https://api.<domain>, https://<port>-<id>.<domain>);
// another port or plain HTTP only with the 2.x SDKs' URL overrides.
func sdkEnv(url, domain, apiKey string) string {
	if strings.HasPrefix(url, "https://") && strings.HasSuffix(url, "."+domain) {
		return "export E2B_DOMAIN=" + domain + " E2B_API_KEY=" + apiKey + "   # all SDK versions"
	}
	return "export E2B_API_URL=" + url + " E2B_SANDBOX_URL=" + url + " E2B_VOLUME_API_URL=" + url + " E2B_API_KEY=" + apiKey + "   # SDK 2.x"
}
