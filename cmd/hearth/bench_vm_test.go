//go:build vm

package main

import (
	"encoding/json"
	"math"
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

// TestBenchDensityDev runs `hearth bench density --dev --n 2` for real
// (small guests, short windows) and checks every stage, figure and ratio
// is printed and nothing is left behind. No timed assertions.
func TestBenchDensityDev(t *testing.T) {
	images := os.Getenv("HEARTH_IMAGES_DIR")
	if images == "" {
		t.Skip("bench density --dev: needs guest images; set HEARTH_IMAGES_DIR to a data dir where `hearth image build` ran")
	}
	if os.Geteuid() != 0 {
		t.Skip("bench density --dev: needs root (network namespaces, loop devices)")
	}
	t.Setenv("HEARTH_URL", "")
	t.Setenv("HEARTH_API_KEY", "")
	r := hearth(t, "", "bench", "density", "--dev", "--images-from", images, "--n", "2",
		"--cold-n", "1", "--template-mb", "256", "--touch-mb", "32", "--large-mb", "512", "--large-touch-mb", "256",
		"--resume-n", "1", "--exec-n", "3", "--settle", "1s", "--idle-window", "3s", "-o", "json")
	t.Logf("stderr:\n%s", r.stderr)
	if r.err != nil {
		t.Fatalf("bench density: %v\n%s", r.err, r.stdout)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report %q: %v", r.stdout, err)
	}
	for _, name := range []string{bench.StageDensityCold, bench.StageSpawn, bench.StageSpawnCrowded, bench.StageExecSiblings,
		bench.StageExecAlone, bench.StageResumeLarge, bench.StageResumeSmall, bench.StageFirstExec, bench.StageWarmExec} {
		if s, ok := rep.Stage(name); !ok || !s.Ok() {
			t.Errorf("stage %q: %+v", name, s)
		}
	}
	if s, _ := rep.Stage(bench.StageSpawn); s.N != 2 {
		t.Errorf("spawn n = %d", s.N)
	}
	if f, ok := rep.Figure(bench.FigureVMMsFound); !ok || f.Value != 2 {
		t.Errorf("VMMs found: %+v", f)
	}
	for _, name := range []string{bench.FigureMemPerChild, bench.FigureIdleCPU, bench.FigureHostBusy} {
		if f, ok := rep.Figure(name); !ok || math.IsNaN(f.Value) {
			t.Errorf("figure %q: %+v", name, f)
		}
	}
	// The memory ratio may be negative on a busy host (MemAvailable
	// moves with everything else running): present is enough.
	for _, want := range []string{"spawn / cold create", "exec with N idle siblings / exec alone", "resume large / resume small",
		"first exec after resume / warm exec", "memory per child / template guest memory"} {
		found := false
		for _, q := range rep.Ratios {
			found = found || (q.Name == want && (q.Value > 0 || strings.HasPrefix(want, "memory")))
		}
		if !found {
			t.Errorf("ratio %q missing in %+v", want, rep.Ratios)
		}
	}
	if !strings.Contains(rep.Cleanup, "deleted 1 snapshot") || strings.Contains(rep.Cleanup, "FAILED") {
		t.Errorf("cleanup: %s", rep.Cleanup)
	}
	for _, f := range rep.Figures {
		t.Logf("%-36s %.2f %s", f.Name, f.Value, f.Unit)
	}
	for _, q := range rep.Ratios {
		t.Logf("%-40s %.2fx", q.Name, q.Value)
	}
}
