package doctor

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		report Report
		want   []string // lines (after collapsing runs of spaces)
		canRun bool
	}{
		{
			name: "tcg host",
			report: Report{
				Checks: []Check{
					{Name: "KVM usable (guest boot)", Detail: "KVM guest failed: failed to set MSR 0x10a"},
					{Name: "qemu binary", OK: true, Detail: "/usr/bin/qemu-system-x86_64: version 7.2.22"},
				},
				VMM: "qemu-tcg", Rootfs: "reflink (xfs pool in a loop file)",
			},
			want: []string{
				"MISSING KVM usable (guest boot) KVM guest failed: failed to set MSR 0x10a",
				"OK qemu binary /usr/bin/qemu-system-x86_64: version 7.2.22",
				"",
				"agent would use: vmm qemu-tcg, rootfs reflink (xfs pool in a loop file)",
			},
			canRun: true,
		},
		{
			name: "nothing runs",
			report: Report{
				Checks: []Check{{Name: "qemu binary", Detail: "qemu-system-x86_64 not in PATH; apt-get install qemu-system-x86"}},
				Rootfs: "copy",
			},
			want: []string{
				"MISSING qemu binary qemu-system-x86_64 not in PATH; apt-get install qemu-system-x86",
				"",
				"agent would use: vmm none: this host cannot run sandboxes (install qemu-system-x86), rootfs copy",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			if err := Format(&buf, tc.report); err != nil {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
			for i := range got {
				got[i] = strings.Join(strings.Fields(got[i]), " ")
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if tc.report.CanRun() != tc.canRun {
				t.Fatalf("CanRun = %v", tc.report.CanRun())
			}
		})
	}
}

func TestPickRootfs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		checks  []Check
		reflink bool
		want    string
	}{
		{"dm wins", []Check{{Name: "device-mapper", OK: true}}, true, "devicemapper"},
		{"reflink data dir", []Check{{Name: "device-mapper"}}, true, "reflink"},
		{"nothing", []Check{{Name: "device-mapper"}, {Name: "loop devices"}}, false, "copy"},
	}
	for _, tc := range tests {
		if got := pickRootfs(tc.checks, tc.reflink); got != tc.want {
			t.Errorf("%s: pickRootfs = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestRunOnThisHost runs every probe here. It asserts only what holds on
// any host where the tests run (QEMU installed → qemu-tcg at least) and
// that every capability gets exactly one line.
func TestRunOnThisHost(t *testing.T) {
	dataDir := os.Getenv("HEARTH_IMAGES_DIR")
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	r := Run(context.Background(), Options{DataDir: dataDir})
	var buf bytes.Buffer
	if err := Format(&buf, r); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", buf.String())
	names := map[string]int{}
	for _, c := range r.Checks {
		names[c.Name]++
		if c.Detail == "" {
			t.Errorf("%s: no detail", c.Name)
		}
	}
	for _, want := range []string{"KVM usable (guest boot)", "firecracker binary", "firecracker usable", "qemu binary",
		"device-mapper", "userfaultfd", "loop devices", "tun", "netns", "iptables", "reflink data dir", "images built"} {
		if names[want] != 1 {
			t.Errorf("check %q appears %d times", want, names[want])
		}
	}
	for _, c := range r.Checks {
		if c.Name == "qemu binary" && c.OK && r.VMM == "" {
			t.Errorf("qemu is installed but no VMM was chosen")
		}
	}
}
