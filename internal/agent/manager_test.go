package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
)

func TestTransitionEdges(t *testing.T) {
	t.Parallel()
	all := []sbx.State{sbx.StateCreating, sbx.StateRunning, sbx.StatePausing, sbx.StatePaused, sbx.StateResuming, sbx.StateStopping, sbx.StateStopped, sbx.StateError}
	allowed := map[[2]sbx.State]bool{
		{sbx.StateCreating, sbx.StateRunning}: true, {sbx.StateCreating, sbx.StateStopping}: true, {sbx.StateCreating, sbx.StateError}: true,
		{sbx.StateRunning, sbx.StatePausing}: true, {sbx.StateRunning, sbx.StateStopping}: true, {sbx.StateRunning, sbx.StateError}: true,
		{sbx.StatePausing, sbx.StatePaused}: true, {sbx.StatePausing, sbx.StateRunning}: true, {sbx.StatePausing, sbx.StateError}: true,
		{sbx.StatePaused, sbx.StateResuming}: true, {sbx.StatePaused, sbx.StateStopping}: true,
		{sbx.StateResuming, sbx.StateRunning}: true, {sbx.StateResuming, sbx.StatePaused}: true, {sbx.StateResuming, sbx.StateError}: true,
		{sbx.StateStopping, sbx.StateStopped}: true, {sbx.StateStopping, sbx.StateError}: true,
		{sbx.StateError, sbx.StateStopping}: true,
	}
	for _, from := range all {
		for _, to := range all {
			if got, want := sbx.Host().Allows(from, to), allowed[[2]sbx.State{from, to}]; got != want {
				t.Errorf("sbx.Host().Allows(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
		// The brief: error is reachable from every transitional state.
		if from.Transitional() && !sbx.Host().Allows(from, sbx.StateError) {
			t.Errorf("%s cannot reach error", from)
		}
	}
}

func TestTransitionOneWinner(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	sb := newSandbox(spec("race"), t.TempDir(), h.m.log)
	sb.state = sbx.StateRunning
	const n = 64
	var wins atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			to := sbx.StatePausing
			if i%2 == 0 {
				to = sbx.StateStopping
			}
			err := sb.transition(to, sbx.StateRunning)
			var te *sbx.ErrTransition
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.As(err, &te):
				t.Errorf("loser got %v, want *sbx.ErrTransition", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if w := wins.Load(); w != 1 {
		t.Fatalf("%d winners, want exactly 1", w)
	}
}

func TestCreateDestroy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	ctx := context.Background()
	sp := spec("abc123")
	sp.DiskSizeMB = 10240
	in, err := h.m.Create(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	if in.State != sbx.StateRunning || in.EnvdAddr == "" || in.StartedAt.IsZero() {
		t.Fatalf("info = %+v", in)
	}
	// disk_size_mb reaches the backend unchanged.
	if got := h.disks.sizes["abc123"]; got != 10240*MiB {
		t.Errorf("disk size = %d, want %d", got, 10240*MiB)
	}
	cfg := h.driver.configs[0]
	for _, want := range []string{"hearth.ip=169.254.0.21/30", "hearth.gw=169.254.0.22"} {
		if !strings.Contains(cfg.KernelArgs, want) {
			t.Errorf("kernel args %q lack %q", cfg.KernelArgs, want)
		}
	}
	if cfg.VCPUs != 2 || cfg.MemoryMB != 512 || cfg.MAC != GuestMAC || cfg.TapName != "tap0" ||
		cfg.NetNS != "/run/netns/hth-abc123" || cfg.RootDisk != h.disks.path("abc123") ||
		cfg.RunDir != filepath.Join(h.data, "sandboxes", "abc123", "vm") {
		t.Errorf("vmm config = %+v", cfg)
	}
	if got := h.envd.urls[0]; got != "http://"+in.EnvdAddr || !strings.HasSuffix(got, ":49983") {
		t.Errorf("envd url = %s (addr %s)", got, in.EnvdAddr)
	}
	init := h.envd.inits[0]
	if init.AccessToken != "tok-abc123" || init.EnvVars["FOO"] != "bar" || init.DefaultUser != "user" || init.DefaultDir != "/home/user" {
		t.Errorf("init = %+v", init)
	}
	// The meta file never holds secrets.
	b, err := os.ReadFile(filepath.Join(h.data, "sandboxes", "abc123", metaFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "tok-abc123") || strings.Contains(string(b), "FOO") {
		t.Errorf("meta leaks secrets: %s", b)
	}

	if err := h.m.Destroy(ctx, "abc123"); err != nil {
		t.Fatal(err)
	}
	h.assertClean()
	// Idempotent: again, and for an ID never seen.
	if err := h.m.Destroy(ctx, "abc123"); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Destroy(ctx, "nosuch"); err != nil {
		t.Fatal(err)
	}
}

func TestCreateDefaultsAndRootUser(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	sp := spec("tiny1")
	sp.TemplateID = "tiny"
	if _, err := h.m.Create(context.Background(), sp); err != nil {
		t.Fatal(err)
	}
	if got := h.disks.sizes["tiny1"]; got != sbx.DefaultDiskSizeMB*MiB {
		t.Errorf("default disk = %d", got)
	}
	if in := h.envd.inits[0]; in.DefaultUser != "root" || in.DefaultDir != "/root" {
		t.Errorf("init = %+v", in)
	}
}

func TestCreateValidation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	tests := []struct {
		field string
		mod   func(*Spec)
	}{
		{"sandbox_id", func(s *Spec) { s.ID = "Upper" }},
		{"sandbox_id", func(s *Spec) { s.ID = "" }},
		{"sandbox_id", func(s *Spec) { s.ID = "a-b" }},
		{"template_id", func(s *Spec) { s.TemplateID = "../etc" }},
		{"template_kind", func(s *Spec) { s.TemplateKind = "vm" }},
		{"vcpus", func(s *Spec) { s.VCPUs = 0 }},
		{"memory_mb", func(s *Spec) { s.MemoryMB = 1 }},
		{"disk_size_mb", func(s *Spec) { s.DiskSizeMB = -1 }},
		{"access_token", func(s *Spec) { s.AccessToken = "" }},
	}
	for _, tt := range tests {
		sp := spec("valid1")
		tt.mod(&sp)
		_, err := h.m.Create(context.Background(), sp)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v", tt.field, err)
		}
	}
	if _, err := h.m.Create(context.Background(), Spec{ID: "x1", TemplateID: "nosuch", VCPUs: 1, MemoryMB: 128, AccessToken: "t"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown template: err = %v, want ErrNotFound", err)
	}
	h.assertClean()
}

func TestCreateIdempotent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	infos := make([]Info, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { infos[i], errs[i] = h.m.Create(ctx, spec("same")) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || infos[i].State != sbx.StateRunning || infos[i].EnvdAddr != infos[0].EnvdAddr {
			t.Errorf("create %d: %+v, %v", i, infos[i], errs[i])
		}
	}
	if c := h.driver.count(); c != 1 {
		t.Errorf("%d VMs created, want 1", c)
	}
	other := spec("same")
	other.MemoryMB = 1024
	if _, err := h.m.Create(ctx, other); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("different spec: err = %v, want ErrAlreadyExists", err)
	}
	// Concurrent destroys: one does the work, all succeed.
	for range n {
		wg.Go(func() {
			if err := h.m.Destroy(ctx, "same"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if h.disks.removes != 1 {
		t.Errorf("disk removed %d times, want 1", h.disks.removes)
	}
	h.assertClean()
}

func TestCreateFailureUnwinds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		inject func(h *harness)
	}{
		{"disk", func(h *harness) { h.disks.failCreate = true }},
		{"network", func(h *harness) { h.net.failSetup = true }},
		{"new machine", func(h *harness) { h.driver.failNew = true }},
		{"start", func(h *harness) { h.driver.failStart = true }},
		{"vm dies during boot", func(h *harness) { h.driver.dieOnBoot = true; h.envd.neverHealty = true }},
		{"envd init", func(h *harness) { h.envd.failInit = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, false)
			tt.inject(h)
			_, err := h.m.Create(context.Background(), spec("fail1"))
			if err == nil {
				t.Fatal("create succeeded")
			}
			h.assertClean()
		})
	}
}

func TestCreateCanceledWhileBooting(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	h.envd.neverHealty = true
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Cancel once the VM exists, i.e. while create waits for envd (or
		// after the deadline, so this goroutine never outlives the test by
		// much; the create then fails differently and the test says so).
		deadline := time.Now().Add(testDeadline)
		for h.driver.live() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err := h.m.Create(ctx, spec("cancel1"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	h.assertClean()
}

func TestHealthRetries(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	h.envd.unhealthy = 3
	if _, err := h.m.Create(context.Background(), spec("slow1")); err != nil {
		t.Fatal(err)
	}
	if h.envd.unhealthy != 0 {
		t.Errorf("health polled too few times")
	}
}

func TestVMMExitMovesToError(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	ctx := context.Background()
	if _, err := h.m.Create(ctx, spec("crash1")); err != nil {
		t.Fatal(err)
	}
	h.driver.machines[0].crash()
	sb, _ := h.m.get("crash1")
	sb.mu.Lock()
	exited := sb.exited
	sb.mu.Unlock()
	select {
	case <-exited:
	case <-time.After(testDeadline):
		t.Fatal("the crashed VMM's exit was not noticed")
	}
	// The watcher moves it right after closing exited.
	waitFor(t, "state error after the crash", func() bool { return sb.currentState() == sbx.StateError })
	if _, _, err := h.m.envdOf("crash1"); err == nil {
		t.Error("exec allowed on a crashed sandbox")
	}
	if err := h.m.Destroy(ctx, "crash1"); err != nil {
		t.Fatal(err)
	}
	h.assertClean()
}

func TestDestroyFailureKeepsErrorAndRetries(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	ctx := context.Background()
	if _, err := h.m.Create(ctx, spec("stuck1")); err != nil {
		t.Fatal(err)
	}
	h.disks.mu.Lock()
	h.disks.failRemove = true
	h.disks.mu.Unlock()
	if err := h.m.Destroy(ctx, "stuck1"); err == nil {
		t.Fatal("destroy succeeded with a failing disk backend")
	}
	in, err := h.m.Get("stuck1")
	if err != nil || in.State != sbx.StateError || in.Error == "" {
		t.Fatalf("after failed destroy: %+v, %v", in, err)
	}
	h.disks.mu.Lock()
	h.disks.failRemove = false
	h.disks.mu.Unlock()
	if err := h.m.Destroy(ctx, "stuck1"); err != nil {
		t.Fatal(err)
	}
	h.assertClean()
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	ctx := context.Background()
	if _, err := h.m.Create(ctx, spec("pr1")); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		in, err := h.m.Pause(ctx, "pr1")
		if err != nil || in.State != sbx.StatePaused || in.EnvdAddr != "" {
			t.Fatalf("round %d pause: %+v, %v", round, in, err)
		}
		if h.driver.live() != 0 || h.net.held() != 0 {
			t.Fatalf("paused sandbox holds a VM (%d) or slot (%d)", h.driver.live(), h.net.held())
		}
		if _, err := h.m.Pause(ctx, "pr1"); err != nil { // idempotent
			t.Fatal(err)
		}
		if _, _, err := h.m.envdOf("pr1"); err == nil {
			t.Fatal("exec allowed while paused")
		}
		in, err = h.m.Resume(ctx, "pr1", "newtoken", egress.Policy{})
		if err != nil || in.State != sbx.StateRunning || in.EnvdAddr == "" {
			t.Fatalf("round %d resume: %+v, %v", round, in, err)
		}
		if _, err := h.m.Resume(ctx, "pr1", "", egress.Policy{}); err != nil { // idempotent
			t.Fatal(err)
		}
		if got := h.envd.inits[len(h.envd.inits)-1].AccessToken; got != "newtoken" {
			t.Errorf("resume init token = %q", got)
		}
	}
	if h.snaps.pauses != 3 || h.snaps.restores != 3 {
		t.Errorf("pauses %d restores %d", h.snaps.pauses, h.snaps.restores)
	}
	if _, err := h.m.Pause(ctx, "pr1"); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Destroy(ctx, "pr1"); err != nil { // destroy a paused one
		t.Fatal(err)
	}
	h.assertClean()
}

func TestPauseFailureKeepsRunning(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	ctx := context.Background()
	if _, err := h.m.Create(ctx, spec("pf1")); err != nil {
		t.Fatal(err)
	}
	h.snaps.failPause = true
	if _, err := h.m.Pause(ctx, "pf1"); !errors.Is(err, errInjected) {
		t.Fatalf("err = %v", err)
	}
	if in, _ := h.m.Get("pf1"); in.State != sbx.StateRunning || h.driver.live() != 1 {
		t.Fatalf("after failed pause: %+v, live %d", in, h.driver.live())
	}
	h.snaps.failPause = false
	if _, err := h.m.Pause(ctx, "pf1"); err != nil {
		t.Fatal(err)
	}
	h.snaps.failRestore = true
	if _, err := h.m.Resume(ctx, "pf1", "", egress.Policy{}); !errors.Is(err, errInjected) {
		t.Fatalf("err = %v", err)
	}
	if in, _ := h.m.Get("pf1"); in.State != sbx.StatePaused || h.driver.live() != 0 || h.net.held() != 0 {
		t.Fatalf("after failed resume: %+v, live %d, slots %d", in, h.driver.live(), h.net.held())
	}
	if err := h.m.Destroy(ctx, "pf1"); err != nil {
		t.Fatal(err)
	}
	h.assertClean()
}

func TestPauseUnimplementedWithoutSnapshotter(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	ctx := context.Background()
	if _, err := h.m.Create(ctx, spec("nopause")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.Pause(ctx, "nopause"); !errors.Is(err, ErrUnimplemented) {
		t.Errorf("pause: %v", err)
	}
	if in, _ := h.m.Get("nopause"); in.State != sbx.StateRunning {
		t.Errorf("state %s", in.State)
	}
	if err := h.m.Destroy(ctx, "nopause"); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentPauseDestroy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	ctx := context.Background()
	if _, err := h.m.Create(ctx, spec("pd1")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			// Serialised per sandbox: a pause that lost to the destroy
			// sees the sandbox gone (not found) or stopped.
			if _, err := h.m.Pause(ctx, "pd1"); err != nil && !errors.Is(err, ErrNotFound) {
				var te *sbx.ErrTransition
				if !errors.As(err, &te) {
					t.Errorf("pause: %v", err)
				}
			}
		})
		wg.Go(func() {
			if err := h.m.Destroy(ctx, "pd1"); err != nil {
				t.Errorf("destroy: %v", err)
			}
		})
	}
	wg.Wait()
	h.assertClean()
}

func TestShutdownDestroysWithoutSnapshotter(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	ctx := context.Background()
	for _, id := range []string{"s1", "s2", "s3"} {
		if _, err := h.m.Create(ctx, spec(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	h.assertClean()
	if _, err := h.m.Create(ctx, spec("late")); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("create after shutdown: %v", err)
	}
}

func TestShutdownPausesAndRestartReadopts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	ctx := context.Background()
	if _, err := h.m.Create(ctx, spec("keep1")); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if h.driver.live() != 0 {
		t.Fatal("VM still running after shutdown")
	}
	restores := h.snaps.restores
	h.m = h.newManager()
	// Paused by the shutdown, not by its user: resumed at start-up, once.
	in, err := h.m.Get("keep1")
	if err != nil || in.State != sbx.StateRunning {
		t.Fatalf("after restart: %+v, %v; want it resumed", in, err)
	}
	if n := h.snaps.restores - restores; n != 1 {
		t.Fatalf("restored %d times at start-up, want once", n)
	}
	if _, err := h.m.Pause(ctx, "keep1"); err != nil {
		t.Fatal(err)
	}
	h.m = h.newManager() // paused by its user: stays paused
	if in, err := h.m.Get("keep1"); err != nil || in.State != sbx.StatePaused {
		t.Fatalf("user-paused sandbox after restart: %+v, %v; want paused", in, err)
	}
	if err := h.m.Destroy(ctx, "keep1"); err != nil {
		t.Fatal(err)
	}
	h.assertClean()
}

// TestStartupKeepsSandboxWhoseVMDied: the agent "crashes" and the VM dies
// with it (the host went down): the restarted agent keeps the sandbox, in
// error with the reason, disk kept, until it is destroyed. A leftover
// without a meta file is removed.
func TestStartupKeepsSandboxWhoseVMDied(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	ctx := context.Background()
	if _, err := h.m.Create(ctx, spec("crashed")); err != nil {
		t.Fatal(err)
	}
	h.driver.machines[0].crash()
	if err := os.MkdirAll(filepath.Join(h.data, "sandboxes", "nometa"), 0o700); err != nil {
		t.Fatal(err)
	}
	stale := h.net.stale
	h.m = h.newManager()
	if h.net.stale != stale+1 {
		t.Error("CleanupStale not called at start-up")
	}
	in, err := h.m.Get("crashed")
	if err != nil {
		t.Fatalf("sandbox whose VM died is gone after restart: %v", err)
	}
	if in.State != sbx.StateError || !strings.Contains(in.Error, "VM exited while the agent was down") {
		t.Fatalf("after restart: %+v, want error naming the dead VM", in)
	}
	if _, err := os.Stat(filepath.Join(h.data, "sandboxes", "nometa")); !os.IsNotExist(err) {
		t.Errorf("leftover without meta still there: %v", err)
	}
	if _, err := h.disks.Lookup(ctx, "crashed"); err != nil {
		t.Errorf("disk of the sandbox in error removed: %v", err)
	}
	if err := h.m.Destroy(ctx, "crashed"); err != nil {
		t.Fatal(err)
	}
	h.assertClean()
}

func TestMetaRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHarness(t, false)
	sb := newSandbox(spec("meta1"), dir, h.m.log)
	sb.state = sbx.StatePaused
	h.m.saveMeta(sb)
	md, err := readMeta(dir)
	if err != nil {
		t.Fatal(err)
	}
	if md.State != sbx.StatePaused || md.Spec.ID != "meta1" || md.Spec.AccessToken != "" {
		b, _ := json.Marshal(md)
		t.Errorf("meta = %s", b)
	}
}

// testDeadline bounds every wait of these tests on the fakes (which answer
// in microseconds): a hang fails the test instead of the whole run.
const testDeadline = 10 * time.Second

// waitFor polls cond until it holds, failing the test after testDeadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v", what, testDeadline)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSetNetwork(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	ctx := context.Background()
	s := spec("net1")
	s.Egress = egress.Open()
	if _, err := h.m.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	policy := func() egress.Policy {
		h.net.mu.Lock()
		defer h.net.mu.Unlock()
		return h.net.policies["net1"]
	}
	if got := policy(); !reflect.DeepEqual(got, egress.Open()) {
		t.Fatalf("slot policy at create = %+v", got)
	}
	closed := egress.Policy{AllowOut: []string{"8.8.8.8/32"}}
	if _, err := h.m.SetNetwork(ctx, "net1", closed); err != nil {
		t.Fatal(err)
	}
	if got := policy(); !reflect.DeepEqual(got, closed) {
		t.Fatalf("slot policy after SetNetwork = %+v, want %+v", got, closed)
	}
	// Paused: kept in the spec, applied by the resume's new slot.
	if _, err := h.m.Pause(ctx, "net1"); err != nil {
		t.Fatal(err)
	}
	open := egress.Open()
	if _, err := h.m.SetNetwork(ctx, "net1", open); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.SetNetwork(ctx, "nosuch", open); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetNetwork(nosuch) = %v", err)
	}
	if _, err := h.m.Resume(ctx, "net1", "", open); err != nil {
		t.Fatal(err)
	}
	if got := policy(); !reflect.DeepEqual(got, open) {
		t.Fatalf("slot policy after resume = %+v", got)
	}
}

func TestPolicyFromPBNamesTheRule(t *testing.T) {
	t.Parallel()
	_, err := policyFromPB(true, nil, []string{"example.com"})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "denyOut" || !errors.Is(err, ErrInvalid) || !strings.Contains(fe.Msg, `"example.com"`) {
		t.Fatalf("policyFromPB = %v", err)
	}
}
