package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/cli"
)

func newVolumeCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:     "volume",
		Aliases: []string{"volumes", "vol"},
		Short:   "Volumes: persistent directories mounted into sandboxes (hearth sandbox create --volume NAME:/path)",
	}
	f.register(cmd)
	create := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create a volume",
		Example: "  hearth volume create data\n  hearth sandbox create --volume data:/mnt/data",
		Args:    exactArgs(1, "volume create NAME"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			v, err := c.CreateVolume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printDone(cmd, f, v, "Volume "+v.Name+" created ("+v.ID+" on host "+v.Host+"); mount it with: hearth sandbox create --volume "+v.Name+":/mnt/"+v.Name)
		}),
	}
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the team's volumes",
		Args:    exactArgs(0, "volume ls"),
		RunE: explained(func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			vs, err := c.ListVolumes(cmd.Context())
			if err != nil {
				return err
			}
			if f.json() {
				return cli.WriteJSON(cmd.OutOrStdout(), nonNil(vs))
			}
			now := time.Now()
			t := cli.NewTable(cmd.OutOrStdout(), "name", "host", "age", "id")
			for _, v := range vs {
				t.Row(v.Name, v.Host, cli.Age(now, v.CreatedAt), v.ID)
			}
			return t.Flush()
		}),
	}
	rm := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete a volume and its files (refused while a sandbox mounts it)",
		Args:    exactArgs(1, "volume rm NAME"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			if err := c.DeleteVolume(cmd.Context(), args[0]); err != nil {
				return err
			}
			return printDone(cmd, f, map[string]string{"deleted": args[0]}, "Deleted volume "+args[0])
		}),
	}
	cmd.AddCommand(create, ls, rm)
	return cmd
}
