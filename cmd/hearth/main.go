// Command hearth is the single binary of the hearth sandbox platform: the
// control plane (server), the per-host agent (agent), both in one process
// (dev), and the operator tools (image, doctor, admin, bench, ...).
//
// This file only assembles the subcommands; each lives in its own file and
// delegates to an internal package.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee *cli.ExitError
		if !errors.As(err, &ee) { // exec already printed the command's output
			fmt.Fprintln(os.Stderr, "hearth:", err)
		}
		os.Exit(cli.ExitCode(err)) // the command's code; 130 on Ctrl-C; else 1
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "hearth",
		Short:         "Self-hostable sandboxes for AI agents and untrusted code, as microVMs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newServerCmd(),
		newAgentCmd(),
		newDevCmd(),
		newImageCmd(),
		newDoctorCmd(),
		newAdminCmd(),
		newHostCmd(),
		newTeamCmd(),
		newLoginCmd(),
		newLogoutCmd(),
		newAPIKeyCmd(),
		newSandboxCmd(),
		newTemplateCmd(),
		newSnapshotCmd(),
		newVolumeCmd(),
		newBenchCmd(),
	)
	return root
}
