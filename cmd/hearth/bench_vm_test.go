//go:build vm

package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/bench"
)

// devImages is the images dir of tests that run an in-process dev stack
// (control plane + agent booting QEMU microVMs); they skip without one or
// without root.
func devImages(t *testing.T) string {
	t.Helper()
	images := os.Getenv("HEARTH_IMAGES_DIR")
	if images == "" {
		t.Skip("needs guest images; set HEARTH_IMAGES_DIR to a data dir where `hearth image build` ran")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, loop devices)")
	}
	return images
}

// TestBenchDev runs `hearth bench --dev --n 2` for real: an in-process
// control plane + agent booting QEMU microVMs from the images in
// HEARTH_IMAGES_DIR.
func TestBenchDev(t *testing.T) {
	images := devImages(t)
	t.Setenv("HEARTH_URL", "")
	t.Setenv("HEARTH_API_KEY", "")
	r := hearth(t, "", "bench", "--dev", "--images-from", images, "--n", "2", "--exec-n", "5", "--baseline-n", "5", "--pause-n", "1", "-o", "json")
	t.Logf("stderr:\n%s", r.stderr)
	if r.err != nil {
		t.Fatalf("bench: %v\n%s", r.err, r.stdout)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report %q: %v", r.stdout, err)
	}
	for _, name := range []string{bench.StageHealthz, bench.StageCreate("tiny"), bench.StageCreate("base"), bench.StageExec} {
		s, ok := rep.Stage(name)
		if !ok || !s.Ok() {
			t.Errorf("stage %q: %+v", name, s)
		}
	}
	if s, _ := rep.Stage(bench.StageCreate("base")); s.N != 2 {
		t.Errorf("base n = %d", s.N)
	}
	found := false
	for _, q := range rep.Ratios {
		found = found || (q.Name == "create(base) / create(tiny)" && q.Value > 0)
	}
	if !found {
		t.Errorf("no base/tiny ratio in %+v", rep.Ratios)
	}
	if strings.Contains(rep.Cleanup, "FAILED") {
		t.Errorf("cleanup: %s", rep.Cleanup)
	}
	for _, s := range rep.Stages {
		t.Logf("%-28s n=%d p50=%s p95=%s %s", s.Name, s.N, bench.FormatMS(s.P50), bench.FormatMS(s.P95), s.Skipped)
	}
	for _, q := range rep.Ratios {
		t.Logf("%-36s %.2fx", q.Name, q.Value)
	}
}
