package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/controlplane"
	"github.com/hearth-sandbox/hearth/internal/store"
)

func newAdminCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Administer the control plane's store",
	}
	cmd.AddCommand(newAdminPromoteCmd())
	return cmd
}

func newAdminPromoteCmd() *cobra.Command {
	cfg := config.Default()
	var email string
	cmd := &cobra.Command{
		Use:   "promote --email EMAIL",
		Short: "Make a user a platform admin (sees every team's templates)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if email == "" {
				return fmt.Errorf("--email is required")
			}
			log := newLogger(cmd, "warn")
			db, err := controlplane.OpenStore(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			defer db.Close()
			email = strings.ToLower(strings.TrimSpace(email))
			if err := db.SetUserAdmin(cmd.Context(), email, true); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no user with email %s", email)
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is now a platform admin\n", email)
			return nil
		},
	}
	config.AddStoreFlags(cmd.Flags(), &cfg)
	cmd.Flags().StringVar(&email, "email", "", "email of the user to promote")
	config.BindCommand(cmd)
	return cmd
}
