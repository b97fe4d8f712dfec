package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/cli/clitest"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		vals []float64
		p    float64
		want float64
	}{
		{[]float64{5}, 50, 5},
		{[]float64{5}, 95, 5},
		{[]float64{1, 2}, 50, 1.5},
		{[]float64{1, 2, 3}, 50, 2},
		{[]float64{1, 2, 3, 4}, 50, 2.5},
		{[]float64{1, 2, 3, 4}, 0, 1},
		{[]float64{1, 2, 3, 4}, 100, 4},
		// rank 0.95*(10-1) = 8.55 -> 9 + 0.55*(10-9)
		{[]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 95, 9.55},
		{[]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 50, 5.5},
		// rank 0.95*19 = 18.05 -> 19 + 0.05*(100-19)
		{append(seq(19), 100), 95, 23.05},
	} {
		got := Percentile(tc.vals, tc.p)
		if math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tc.vals, tc.p, got, tc.want)
		}
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("empty input is not NaN")
	}
}

func seq(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i + 1)
	}
	return out
}

func TestSummarizeAndRatio(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	a := Summarize("a", []time.Duration{40 * ms, 10 * ms, 30 * ms, 20 * ms})
	if a.N != 4 || a.P50 != 25 || a.Min != 10 || a.Max != 40 || a.Mean != 25 || math.Abs(a.P95-38.5) > 1e-9 {
		t.Fatalf("summary %+v", a)
	}
	if a.SamplesMS[0] != 40 { // kept in measurement order
		t.Errorf("samples %v", a.SamplesMS)
	}
	b := Summarize("b", []time.Duration{5 * ms})
	for _, tc := range []struct {
		name string
		x, y Stage
		ok   bool
		want float64
	}{
		{"a/b", a, b, true, 5},
		{"b/a", b, a, true, 0.2},
		{"skipped numerator", Skipped("s", "501"), b, false, 0},
		{"skipped denominator", a, Skipped("s", "501"), false, 0},
		{"empty", Summarize("e", nil), b, false, 0},
		{"zero denominator", a, Stage{Name: "z", N: 1}, false, 0},
	} {
		r, ok := RatioOf(tc.name, tc.x, tc.y)
		if ok != tc.ok || (ok && math.Abs(r.Value-tc.want) > 1e-9) {
			t.Errorf("%s: %+v %v", tc.name, r, ok)
		}
		if ok && (r.Of != tc.x.Name || r.Over != tc.y.Name) {
			t.Errorf("%s: names %+v", tc.name, r)
		}
	}
}

func TestFormatMS(t *testing.T) {
	t.Parallel()
	for in, want := range map[float64]string{0.412: "0.41 ms", 12.34: "12.3 ms", 1934: "1.93 s", math.NaN(): "-"} {
		if got := FormatMS(in); got != want {
			t.Errorf("FormatMS(%v) = %q, want %q", in, got, want)
		}
	}
}

// TestRunAgainstAPI runs the whole benchmark against the real API with the
// fake host, and checks the report's shape and that nothing is left.
func TestRunAgainstAPI(t *testing.T) {
	t.Parallel()
	srv := clitest.New(t)
	c := cli.NewClient(srv.URL, srv.Signup(t).APIKey, "")
	var log bytes.Buffer
	rep, err := Run(context.Background(), c, Options{N: 2, ExecN: 3, BaselineN: 3, PauseN: 2, ExecCmd: "echo", Templates: []string{"tiny", "base", "nope"}, Log: &log})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	for _, name := range []string{StageHealthz, StageCreate("tiny"), StageCreate("base"), StageExec, StageSnapshot, StageFromSnapshot, StagePause, StageResume, StageDestroy} {
		s, ok := rep.Stage(name)
		if !ok || !s.Ok() {
			t.Errorf("stage %q missing or skipped: %+v", name, s)
		}
	}
	if s, _ := rep.Stage(StageCreate("tiny")); s.N != 2 {
		t.Errorf("tiny n = %d", s.N)
	}
	if s, ok := rep.Stage(StageCreate("nope")); !ok || s.Ok() || !strings.Contains(s.Skipped, "template unavailable") {
		t.Errorf("unknown template stage: %+v", s)
	}
	wantRatios := []string{"create(base) / create(tiny)", "exec RTT / healthz RTT", "create(snapshot) / create(tiny)", "resume / create(tiny)"}
	for _, w := range wantRatios {
		found := false
		for _, r := range rep.Ratios {
			if r.Name == w {
				found = r.Value > 0
			}
		}
		if !found {
			t.Errorf("ratio %q missing in %+v", w, rep.Ratios)
		}
	}
	// 2 tiny + 2 base + 1 work + 2 from the snapshot.
	if len(srv.Host.Creates()) != 7 {
		t.Errorf("host saw %d creates", len(srv.Host.Creates()))
	}
	assertClean(t, c, srv)
	if !strings.Contains(rep.Cleanup, "destroyed 1 sandbox(es), deleted 1 snapshot") || strings.Contains(rep.Cleanup, "FAILED") {
		t.Errorf("cleanup: %s", rep.Cleanup)
	}

	var out bytes.Buffer
	if err := Print(&out, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"STAGE", "create tiny (cold boot)", "skipped: template unavailable", "create(base) / create(tiny)", "cleanup: destroyed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printed report lacks %q:\n%s", want, out.String())
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || len(back.Stages) != len(rep.Stages) {
		t.Errorf("json round trip: %v", err)
	}
}

// TestRunInterrupted cancels the run after its first sandbox and checks
// that the cleanup still destroys everything.
func TestRunInterrupted(t *testing.T) {
	t.Parallel()
	srv := clitest.New(t)
	c := cli.NewClient(srv.URL, srv.Signup(t).APIKey, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &cancelOn{substr: "create base (cold boot) 1/", cancel: cancel}
	rep, err := Run(ctx, c, Options{N: 3, ExecN: 1, BaselineN: 1, ExecCmd: "echo", Log: w})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if len(srv.Host.Creates()) < 4 {
		t.Fatalf("cancelled too early: %d creates", len(srv.Host.Creates()))
	}
	assertClean(t, c, srv)
	if strings.Contains(rep.Cleanup, "FAILED") {
		t.Errorf("cleanup: %s", rep.Cleanup)
	}
	if s, ok := rep.Stage(StageCreate("tiny")); !ok || s.N != 3 {
		t.Errorf("finished stage: %+v", s)
	}
	if s, ok := rep.Stage(StageCreate("base") + " (partial)"); !ok || s.N != 1 {
		t.Errorf("partial stage: %+v (stages %+v)", s, rep.Stages)
	}
}

// cancelOn cancels when a log line contains substr. The benchmark logs a
// create only after the sandbox exists and before destroying it, so the
// cancel lands with a live sandbox.
type cancelOn struct {
	mu     sync.Mutex
	substr string
	cancel context.CancelFunc
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if strings.Contains(string(p), c.substr) {
		c.cancel()
	}
	return len(p), nil
}

func assertClean(t *testing.T, c *cli.Client, srv *clitest.Server) {
	t.Helper()
	sbs, err := c.ListSandboxes(context.Background(), cli.SandboxFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range sbs {
		if sb.Status != "stopped" || srv.Host.State(sb.ID) != "" {
			t.Errorf("left behind: %s %s (host: %q)", sb.ID, sb.Status, srv.Host.State(sb.ID))
		}
	}
	snaps, err := c.ListSnapshots(context.Background())
	if err != nil || len(snaps) != 0 {
		t.Errorf("snapshots left: %+v, %v", snaps, err)
	}
}
