package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/doctor"
)

func newDoctorCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Show what this host can run (KVM, Firecracker, QEMU, device-mapper, userfaultfd, ...) and why",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
	cmd.Flags().StringVar(&dataDir, "data-dir", config.DefaultDataDir(), "hearth data directory (images, disks)")
	return cmd
}
