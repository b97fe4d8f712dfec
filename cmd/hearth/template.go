package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
)

func newTemplateCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:     "template",
		Aliases: []string{"templates", "tpl"},
		Short:   "List the templates sandboxes start from (base images and snapshots)",
	}
	f.register(cmd)
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
	t := cli.NewTable(w, "name", "kind", "scope", "resources", "source", "age", "id")
	for _, tp := range ts {
		scope := "team"
		if tp.Platform {
			scope = "platform"
		}
		src := tp.SourceSandboxID
		if src == "" {
			src = "-"
		}
		t.Row(tp.Name, tp.Kind, scope, cli.Resources(tp.VCPUs, tp.MemoryMB, tp.DiskSizeMB), src, cli.Age(now, tp.CreatedAt), tp.ID)
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
