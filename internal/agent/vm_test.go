//go:build vm

// End-to-end tests that boot real QEMU/TCG VMs. Run with:
//
//	HEARTH_IMAGES_DIR=/var/tmp/hearth-dev go test -tags vm -run VM ./internal/agent
package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/agentclient"
	"github.com/hearth-sandbox/hearth/internal/netns"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/vmm/qemu"
	"github.com/hearth-sandbox/hearth/internal/vmm/vmmtest"
)

// e2eNetPrefix and e2eNetPool keep this test process's namespaces, veths,
// chains and guest addresses apart from other test processes on the host
// (parallel runs in other worktrees), so the leak check sees only its own
// and a guest address never answers with someone else's envd.
var e2eNetPrefix, e2eNetPool = testNetIdentity(os.Getpid(), 0)

// testNetIdentity derives a 6-character object prefix and a /24 pool (64
// slots, more than a test uses) in 10.192.0.0/13, outside the agents'
// 10.128.0.0/10, from a process ID; variant separates two sets of objects
// within one process.
func testNetIdentity(pid, variant int) (string, netip.Prefix) {
	n := (pid*2 + variant) % 2048
	return fmt.Sprintf("ht%03x-", n), netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(192 + n/256), byte(n % 256), 0}), 24)
}

// vmEnv is a real agent on a private data dir holding a copy of the tiny
// image: real QEMU/TCG, netns, root disks (reflink in an xfs pool) and envd.
type vmEnv struct {
	data   string
	agent  *Agent
	client *agentclient.Client
	pool   *rootfs.Pool
	opts   Options
	srv    *httptest.Server
	// netCfg configures the network of an agent crashAndRestart starts
	// (default: this process's prefix and pool).
	netCfg netns.Config
}

func newVMEnv(t testing.TB, images ...string) *vmEnv {
	t.Helper()
	return newVMEnvWith(t, nil, images...)
}

// newVMEnvWith is newVMEnv with a hook that adjusts the agent's options
// (e.g. a Snapshotter with injected failures).
func newVMEnvWith(t testing.TB, adjust func(*Options), images ...string) *vmEnv {
	t.Helper()
	im := vmmtest.FindImages(t)
	vmmtest.RequireQEMU(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, tap and loop devices")
	}
	data := t.TempDir()
	src := filepath.Dir(filepath.Dir(im.Kernel)) // DIR/images
	// Images are copied (the base images get grown at agent start-up, and
	// the image builder owns the shared ones); the kernel is linked.
	kdir := filepath.Join(data, "images", "kernel")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vmlinux", "initramfs.cpio"} {
		if _, err := os.Stat(filepath.Join(src, "kernel", f)); err == nil {
			if err := os.Symlink(filepath.Join(src, "kernel", f), filepath.Join(kdir, f)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range images {
		vmmtest.RequireFile(t, filepath.Join(src, name, "rootfs.ext4"))
		dst := filepath.Join(data, "images", name)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"rootfs.ext4", "manifest.json"} {
			out, err := exec.Command("cp", "--sparse=always", filepath.Join(src, name, f), filepath.Join(dst, f)).CombinedOutput()
			if err != nil {
				t.Fatalf("copy image: %v: %s", err, out)
			}
		}
	}

	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	pool, err := rootfs.OpenPool(ctx, data, log)
	if err != nil {
		t.Fatal(err)
	}
	disks, err := rootfs.NewReflink(pool.Mount, log)
	if err != nil {
		pool.Close()
		t.Fatal(err)
	}
	nm, err := netns.NewManager(ctx, netns.Config{Prefix: e2eNetPrefix, Pool: e2eNetPool, Logger: log})
	if err != nil {
		pool.Close()
		t.Fatal(err)
	}
	imagesDir := filepath.Join(data, "images")
	opts := Options{
		DataDir: data,
		HostID:  "vmtest",
		Driver:  qemu.New(qemu.Options{Accel: qemu.AccelTCG, Logger: log}),
		Disks:   diskAdapter{Backend: disks, dataDir: data},
		Net:     netAdapter{nm},
		EnsureImageSizes: func(ctx context.Context, minBytes int64) error {
			return rootfs.EnsureImageSizes(ctx, imagesDir, minBytes)
		},
		Logger: log,
	}
	if adjust != nil {
		adjust(&opts)
	}
	a, err := New(ctx, opts)
	if err != nil {
		pool.Close()
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	e := &vmEnv{data: data, agent: a, client: agentclient.NewClient(srv.URL, srv.Client()), pool: pool, opts: opts, srv: srv,
		netCfg: netns.Config{Prefix: e2eNetPrefix, Pool: e2eNetPool}}
	t.Cleanup(func() {
		// Tests close these themselves to check for leaks; this is for
		// the failure paths (both are idempotent).
		e.srv.Close()
		_ = e.agent.Close()
		_ = pool.Close()
	})
	return e
}

// restart shuts the agent down (pausing its sandboxes) and starts a new one
// on the same data dir and components, as after an agent upgrade.
func (e *vmEnv) restart(t testing.TB) {
	t.Helper()
	e.srv.Close()
	if err := e.agent.Close(); err != nil {
		t.Fatalf("agent shutdown: %v", err)
	}
	a, err := New(context.Background(), e.opts)
	if err != nil {
		t.Fatalf("agent restart: %v", err)
	}
	e.agent = a
	e.srv = httptest.NewServer(a.Handler())
	e.client = agentclient.NewClient(e.srv.URL, e.srv.Client())
}

func TestVMEndToEnd(t *testing.T) {
	e := newVMEnv(t, "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.client

	t0 := time.Now()
	rt, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: "vme2e1", TemplateID: "tiny", TemplateKind: sbx.KindBase,
		VCPUs: 1, MemoryMB: 256, DiskSizeMB: 10240, AccessToken: "tok-vme2e1",
		Env: map[string]string{"HEARTH_TEST": "yes"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("create (cold boot, tiny) took %s; envd at %s", time.Since(t0), rt.Address)
	pid := vmmPID(t, e.data, "vme2e1")

	res, err := c.Exec(ctx, "vme2e1", service.ExecRequest{Cmd: "echo", Args: []string{"hi"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stdout != "hi\n" || res.ExitCode != 0 {
		t.Fatalf("echo hi: %+v", res)
	}
	if res, err := c.Exec(ctx, "vme2e1", service.ExecRequest{Cmd: "id", Args: []string{"-un"}}); err != nil || res.Stdout != "user\n" {
		t.Errorf("default user: %+v, %v (want user: the image has that account)", res, err)
	}
	res, err = c.Exec(ctx, "vme2e1", service.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", "echo $HEARTH_TEST; df -B1 / | tail -1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest: %q", res.Stdout)
	if !strings.HasPrefix(res.Stdout, "yes\n") {
		t.Errorf("env var not set in guest: %+v", res)
	}
	if f := strings.Fields(strings.TrimPrefix(res.Stdout, "yes\n")); len(f) < 2 || !sizeNear(f[1], 10240) {
		t.Errorf("df / in the guest: %q, want ~10 GiB (disk_size_mb 10240)", res.Stdout)
	}

	data := make([]byte, 5<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFile(ctx, "vme2e1", "/tmp/blob.bin", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	rc, err := c.ReadFile(ctx, "vme2e1", "/tmp/blob.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (err %v): differs from the 5 MB written", len(got), err)
	}

	if err := c.DestroySandbox(ctx, "vme2e1"); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.Close(); err != nil {
		t.Fatal(err)
	}
	assertNoLeaks(t, e.data, "vme2e1", pid)
}

// vmmPID reads the VMM's pid file while the sandbox runs.
func vmmPID(t *testing.T, data, id string) int {
	t.Helper()
	pid := readPIDFile(filepath.Join(data, "sandboxes", id, "vm", "vmm.pid"))
	if pid == 0 {
		t.Fatal("no VMM pid file")
	}
	return pid
}

// assertNoLeaks checks that nothing of sandbox id remains: process,
// namespace, links, loop devices, files.
func assertNoLeaks(t *testing.T, data, id string, pid int) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline")); err == nil && bytes.Contains(b, []byte(data)) {
		t.Errorf("VMM process %d still exists", pid)
	}
	out, _ := exec.Command("pgrep", "-f", data).Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("processes referring to the data dir remain: %s", s)
	}
	if _, err := os.Stat("/run/netns/" + e2eNetPrefix + id); err == nil {
		t.Errorf("namespace %s%s remains", e2eNetPrefix, id)
	}
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, e2eNetPrefix) {
			t.Errorf("link remains: %s", l)
		}
	}
	out, err = exec.Command("losetup", "-a").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), data) {
		t.Errorf("loop devices remain: %s", out)
	}
	if ents, err := os.ReadDir(filepath.Join(data, "sandboxes")); err != nil || len(ents) != 0 {
		t.Errorf("sandbox run dirs remain: %v %v", ents, err)
	}
	filepath.WalkDir(data, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(filepath.Base(p), id) {
			t.Errorf("file of %s remains: %s", id, p)
		}
		return nil
	})
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), data) {
		t.Errorf("mounts under the data dir remain")
	}
}

// sizeNear reports whether a df byte count is within 10% below mb MiB:
// df leaves out ext4's metadata (5-6% for images made small and grown),
// and 10% still tells 10 GiB from 20 GiB.
func sizeNear(bytesStr string, mb int64) bool {
	var n int64
	for _, c := range bytesStr {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int64(c-'0')
	}
	want := mb * MiB
	return n > want*90/100 && n <= want
}

func TestVMBase(t *testing.T) {
	e := newVMEnv(t, "base")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.client
	t0 := time.Now()
	if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: "vmbase1", TemplateID: "base", VCPUs: 1, MemoryMB: 512, AccessToken: "tok",
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("create (cold boot, base) took %s", time.Since(t0))
	pid := vmmPID(t, e.data, "vmbase1")
	res, err := c.Exec(ctx, "vmbase1", service.ExecRequest{Cmd: "python3", Args: []string{"-c", "print(6*7)"}})
	if err != nil || res.Stdout != "42\n" {
		t.Fatalf("python3: %+v, %v", res, err)
	}
	res, err = c.Exec(ctx, "vmbase1", service.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", "df -B1 / | tail -1"}})
	if f := strings.Fields(res.Stdout); err != nil || len(f) < 2 || !sizeNear(f[1], sbx.DefaultDiskSizeMB) {
		t.Errorf("df / in the guest: %q, %v; want ~20 GiB (the default)", res.Stdout, err)
	}
	if err := c.DestroySandbox(ctx, "vmbase1"); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.Close(); err != nil {
		t.Fatal(err)
	}
	assertNoLeaks(t, e.data, "vmbase1", pid)
}

// TestVMAgentCrashRecovery: an agent dies with a running sandbox; the next
// agent on the same data dir re-adopts the VM (same process, same guest),
// and destroying it then frees its slot, disk and files.
func TestVMAgentCrashRecovery(t *testing.T) {
	e := newVMEnv(t, "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := e.client.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: "vmcrash1", TemplateID: "tiny", VCPUs: 1, MemoryMB: 256, AccessToken: "tok",
	}); err != nil {
		t.Fatal(err)
	}
	pid := vmmPID(t, e.data, "vmcrash1")
	vmExec(t, e.client, "vmcrash1", "echo $$ > /tmp/before")
	a2, c2 := e.crashAndRestart(t, ctx, "vmcrash1")
	if l := a2.Manager().List(); len(l) != 1 || l[0].ID != "vmcrash1" || l[0].State != sbx.StateRunning {
		t.Fatalf("new agent lists %+v, want vmcrash1 re-adopted and running", l)
	}
	if got := vmmPID(t, e.data, "vmcrash1"); got != pid {
		t.Fatalf("VMM pid %d after recovery, want the same process %d", got, pid)
	}
	if out := vmExec(t, c2, "vmcrash1", "cat /tmp/before"); strings.TrimSpace(out) == "" {
		t.Fatal("the guest's file is gone after re-adoption")
	}
	if err := c2.DestroySandbox(ctx, "vmcrash1"); err != nil {
		t.Fatal(err)
	}
	if err := a2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.Close(); err != nil {
		t.Fatal(err)
	}
	assertNoLeaks(t, e.data, "vmcrash1", pid)
}

// crashAndRestart "crashes" e's agent: it is abandoned without Shutdown
// (its in-memory state is simply never used again; the QMP connection of
// sandbox id's VM, its volume server and egress proxy die as a killed
// process's would).
// A second agent starts
// on the same data dir; its client is returned (its server closes with t).
func (e *vmEnv) crashAndRestart(t *testing.T, ctx context.Context, id string) (*Agent, *agentclient.Client) {
	t.Helper()
	sb, err := e.agent.Manager().get(id)
	if err != nil {
		t.Fatal(err)
	}
	sb.mu.Lock()
	sb.machine.(*qemu.Machine).QMP().Close()
	sb.mu.Unlock()
	e.agent.Manager().stopSlotServers(sb)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	disks, err := rootfs.NewReflink(e.pool.Mount, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.netCfg
	cfg.Logger = log
	nm, err := netns.NewManager(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := New(ctx, Options{
		DataDir: e.data, HostID: "vmtest",
		Driver: qemu.New(qemu.Options{Accel: qemu.AccelTCG, Logger: log}),
		Disks:  diskAdapter{Backend: disks, dataDir: e.data},
		Net:    netAdapter{nm},
		Logger: log,
		// The egress test trusts its upstream this way (nil: host roots).
		EgressRoots: e.opts.EgressRoots,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a2.Handler())
	t.Cleanup(srv.Close)
	return a2, agentclient.NewClient(srv.URL, srv.Client())
}

// BenchmarkVMCreate measures cold-boot create latency (create returns once
// envd is initialised) under QEMU/TCG. Run with -benchtime=10x.
func BenchmarkVMCreate(b *testing.B) {
	for _, name := range []string{"tiny", "base"} {
		b.Run(name, func(b *testing.B) {
			e := newVMEnv(b, name)
			ctx := context.Background()
			var lat []time.Duration
			for i := 0; b.Loop(); i++ {
				id := "bench" + strconv.Itoa(i)
				t0 := time.Now()
				_, err := e.client.CreateSandbox(ctx, service.CreateSandboxRequest{
					SandboxID: id, TemplateID: name, VCPUs: 1, MemoryMB: 256, AccessToken: "tok",
				})
				lat = append(lat, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := e.client.DestroySandbox(ctx, id); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkVMExec measures an exec round trip (agent RPC → envd → process
// → exit) of `true` in a running tiny sandbox.
func BenchmarkVMExec(b *testing.B) {
	e := newVMEnv(b, "tiny")
	ctx := context.Background()
	if _, err := e.client.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: "benchexec", TemplateID: "tiny", VCPUs: 1, MemoryMB: 256, AccessToken: "tok",
	}); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := e.client.Exec(ctx, "benchexec", service.ExecRequest{Cmd: "true"}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	reportPercentiles(b, lat)
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p int) float64 { return float64(lat[(len(lat)-1)*p/100].Microseconds()) / 1000 }
	b.ReportMetric(pct(50), "p50-ms")
	b.ReportMetric(pct(95), "p95-ms")
}
