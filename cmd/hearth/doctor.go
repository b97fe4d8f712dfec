package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/doctor"
	"github.com/hearth-sandbox/hearth/internal/doctor/deploycheck"
)

func newDoctorCmd() *cobra.Command {
	var dataDir, caFile string
	var dep deploycheck.Options
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Show what this host can run (KVM, Firecracker, QEMU, device-mapper, userfaultfd, ...) and why; with --domain, check a deployment",
		Long: `Without --domain: what this host can run (KVM, Firecracker, QEMU,
device-mapper, userfaultfd, ...) and why.

With --domain D: check a deployment from the outside, as the SDKs reach it:
DNS for api.D and a random <port>-<id>.D, the certificate both serve (chain,
*.D coverage, expiry), /healthz, that the wildcard reaches hearth's sandbox
proxy, the clock against the server's, and with --api-key the control plane
→ agent → guest path (a probe sandbox is created and deleted).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dep.Domain != "" {
				return runDeployDoctor(cmd, dep, caFile)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), doctor.Timeout)
			defer cancel()
			r := doctor.Run(ctx, doctor.Options{DataDir: dataDir})
			if err := doctor.Format(cmd.OutOrStdout(), r); err != nil {
				return err
			}
			if !r.CanRun() {
				return doctor.ErrCannotRun
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&dataDir, "data-dir", config.DefaultDataDir(), "hearth data directory (images, disks)")
	fs.StringVar(&dep.Domain, "domain", "", "check the deployment serving api.<domain> and <port>-<id>.<domain>")
	fs.StringVar(&dep.Port, "port", "443", "--domain: HTTPS port")
	fs.StringVar(&dep.Connect, "connect", "", "--domain: connect to this host:port instead of the DNS answer (a server DNS does not point at yet)")
	fs.StringVar(&caFile, "ca-file", "", "--domain: PEM CA certificates to trust instead of the system's")
	fs.StringVar(&dep.APIKey, "api-key", os.Getenv(cli.EnvAPIKey), "--domain: API key for the probe sandbox [$"+cli.EnvAPIKey+"]")
	fs.StringVar(&dep.Template, "template", "tiny", "--domain: template of the probe sandbox")
	return cmd
}

func runDeployDoctor(cmd *cobra.Command, o deploycheck.Options, caFile string) error {
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
		o.RootCAs = x509.NewCertPool()
		if !o.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--ca-file %s: no PEM certificates in it", caFile)
		}
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Minute)
	defer cancel()
	checks := deploycheck.Run(ctx, o)
	if err := deploycheck.Format(cmd.OutOrStdout(), checks); err != nil {
		return err
	}
	if deploycheck.Failed(checks) {
		return deploycheck.ErrFailed
	}
	return nil
}
