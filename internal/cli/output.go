package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"
)

// Output formats.
const (
	FormatTable = "table"
	FormatJSON  = "json"
)

// CheckFormat validates an --output value.
func CheckFormat(f string) error {
	switch f {
	case FormatTable, FormatJSON, "":
		return nil
	}
	return Usagef("use --output table or --output json", "unknown output format %q", f)
}

// WriteJSON writes v as indented JSON with a final newline. Nil slices are
// written as [] so scripts can always iterate.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Table writes aligned columns; the header is upper-cased.
type Table struct {
	tw *tabwriter.Writer
}

// NewTable starts a table on w with the given column names.
func NewTable(w io.Writer, cols ...string) *Table {
	t := &Table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	up := make([]string, len(cols))
	for i, c := range cols {
		up[i] = strings.ToUpper(c)
	}
	t.Row(up...)
	return t
}

// Row adds a row; tabs and newlines in cells are replaced so they cannot
// break the layout.
func (t *Table) Row(cells ...string) {
	clean := make([]string, len(cells))
	for i, c := range cells {
		clean[i] = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(c)
	}
	fmt.Fprintln(t.tw, strings.Join(clean, "\t"))
}

// Flush writes the table out.
func (t *Table) Flush() error { return t.tw.Flush() }

// KV writes "key: value" lines aligned, for one object's details.
func KV(w io.Writer, pairs ...[2]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, p := range pairs {
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], p[1])
	}
	return tw.Flush()
}

// Age is a short human duration since t ("45s", "3m", "2h", "4d"), or "-".
func Age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// Bytes formats n in binary units ("512 B", "1.5 KiB", "20.0 GiB").
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Resources is "2 vCPU, 512 MiB, 20 GiB disk".
func Resources(vcpus, memMB, diskMB int) string {
	return fmt.Sprintf("%d vCPU, %s, %s disk", vcpus, Bytes(int64(memMB)<<20), Bytes(int64(diskMB)<<20))
}

// Pairs renders a map as "k=v,k2=v2" in key order, or "-".
func Pairs(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

// ParsePairs parses repeated K=V flag values. flag names the flag for the
// error message.
func ParsePairs(flag string, vals []string) (map[string]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(vals))
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, Usagef(fmt.Sprintf("write it as --%s KEY=VALUE", flag), "bad --%s %q: missing KEY=", flag, v)
		}
		m[k] = val
	}
	return m, nil
}

// IsTerminal reports whether w is a terminal (so progress may animate).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
