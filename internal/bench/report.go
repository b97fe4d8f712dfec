package bench

import (
	"fmt"
	"io"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/cli"
)

// Print writes the report as two tables (stages, ratios) and its notes.
func Print(w io.Writer, rep Report) error {
	fmt.Fprintf(w, "hearth bench  %s  run %s  n=%d  %.0fs\n\n", rep.URL, rep.RunID, rep.N, rep.Seconds)
	t := cli.NewTable(w, "stage", "n", "p50", "p95", "min", "max", "note")
	for _, s := range rep.Stages {
		if !s.Ok() {
			t.Row(s.Name, "-", "-", "-", "-", "-", "skipped: "+s.Skipped)
			continue
		}
		t.Row(s.Name, fmt.Sprint(s.N), FormatMS(s.P50), FormatMS(s.P95), FormatMS(s.Min), FormatMS(s.Max), "")
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if len(rep.Figures) > 0 {
		fmt.Fprintln(w)
		ft := cli.NewTable(w, "figure", "value", "how")
		for _, f := range rep.Figures {
			ft.Row(f.Name, strings.TrimSpace(fmt.Sprintf("%.2f %s", f.Value, f.Unit)), f.How)
		}
		if err := ft.Flush(); err != nil {
			return err
		}
	}
	if len(rep.Ratios) > 0 {
		fmt.Fprintln(w)
		rt := cli.NewTable(w, "ratio (p50 / p50, same run)", "value")
		for _, q := range rep.Ratios {
			rt.Row(q.Name, fmt.Sprintf("%.2fx", q.Value))
		}
		if err := rt.Flush(); err != nil {
			return err
		}
	}
	if len(rep.Notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range rep.Notes {
			fmt.Fprintln(w, "note:", n)
		}
	}
	_, err := fmt.Fprintf(w, "\ncleanup: %s\n", rep.Cleanup)
	return err
}
