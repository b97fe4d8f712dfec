//go:build vm

package multihost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/controlplane"
	"github.com/hearth-sandbox/hearth/internal/fleet"
	"github.com/hearth-sandbox/hearth/internal/pki"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/testnet"
)

const (
	hbInterval = 500 * time.Millisecond
	window     = 2 * time.Second
	agentPort  = "7070"
)

// cluster is the control plane of the test.
type cluster struct {
	t      *testing.T
	url    string
	db     *store.DB
	fleet  *fleet.ControlPlaneSide
	admin  string // session token of a platform admin
	client *cli.Client
}

func startControlPlane(t *testing.T, ctx context.Context, gw string) *cluster {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// The real assembly `hearth server` runs in fleet mode.
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cp, err := controlplane.New(ctx, controlplane.Options{Config: cfg, Logger: log, Fleet: &fleet.Options{
		HeartbeatInterval: hbInterval, Window: window, ReconcileInterval: 5 * time.Second,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	ln, err := net.Listen("tcp", net.JoinHostPort(gw, "0"))
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- cp.Serve(serveCtx, ln) }()
	t.Cleanup(func() { stop(); <-served })

	svc, db := cp.Service, cp.Store
	res, err := svc.Signup(ctx, "ops@example.com", "password123")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.SetUserAdmin(ctx, "ops@example.com", true); err != nil {
		t.Fatal(err)
	}
	_, apiKey, err := svc.CreateAPIKey(ctx, service.Principal{UserID: res.User.ID, TeamID: res.Team.ID}, "multihost")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	return &cluster{t: t, url: url, db: db, fleet: cp.Fleet, admin: res.Token, client: cli.NewClient(url, apiKey, "")}
}

// adminDo calls an admin route with the admin's session (or tok, if set).
func (c *cluster) adminDo(method, path, tok string, out any) int {
	c.t.Helper()
	if tok == "" {
		tok = c.admin
	}
	req, _ := http.NewRequest(method, c.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			c.t.Fatal(err)
		}
	}
	return resp.StatusCode
}

type tokenAnswer struct {
	Token         string `json:"token"`
	CAFingerprint string `json:"ca_fingerprint"`
}

func (c *cluster) newToken() tokenAnswer {
	c.t.Helper()
	var tok tokenAnswer
	if st := c.adminDo("POST", "/v1/admin/hosts", "", &tok); st != http.StatusCreated {
		c.t.Fatalf("POST /v1/admin/hosts: %d", st)
	}
	return tok
}

type hostView struct {
	ID, Name, Address, Status string
	SandboxCount              int            `json:"sandbox_count"`
	Sandboxes                 map[string]int `json:"sandboxes"`
}

func (c *cluster) hosts() map[string]hostView {
	c.t.Helper()
	var hs []hostView
	if st := c.adminDo("GET", "/v1/admin/hosts", "", &hs); st != http.StatusOK {
		c.t.Fatalf("GET /v1/admin/hosts: %d", st)
	}
	out := map[string]hostView{}
	for _, h := range hs {
		out[h.Address] = h
	}
	return out
}

// agentProc is one `hearth agent` process in a node.
type agentProc struct {
	node    *testnet.Node
	dataDir string
	prefix  string
	cmd     *exec.Cmd
	logPath string
	done    chan error
}

func (a *agentProc) addr() string { return net.JoinHostPort(a.node.Addr.String(), agentPort) }

func newAgentDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hearth-multihost-agent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The built images are shared, entry by entry: a template built on one
	// agent lands in its own images dir, as on separate machines.
	shared := filepath.Join(imagesDir, "images")
	ents, err := os.ReadDir(shared)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.Symlink(filepath.Join(shared, e.Name()), filepath.Join(dir, "images", e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func (a *agentProc) start(t *testing.T, ctx context.Context, cpURL string, extra ...string) {
	t.Helper()
	args := append([]string{"agent",
		"--data-dir", a.dataDir, "--listen", a.addr(), "--address", a.addr(),
		"--control-plane", cpURL, "--netns-prefix", a.prefix,
		"--heartbeat-interval", hbInterval.String(), "--rootfs-backend", "qcow2",
	}, extra...)
	a.cmd = a.node.Command(context.WithoutCancel(ctx), hearthBin, args...)
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.done = make(chan error, 1)
	go func() { a.done <- a.cmd.Wait(); logf.Close() }()
}

// stop ends the agent gracefully (it stops its sandboxes).
func (a *agentProc) stop() {
	if a.cmd == nil || a.cmd.ProcessState != nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(90 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

func (a *agentProc) log() string {
	b, _ := os.ReadFile(a.logPath)
	return string(b)
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// startAgents registers n agents (nodes 0..n-1 of nw), each with a fresh
// token, waits until all are ready, and stops them when the test ends
// (printing their logs if it failed). hostOf maps host IDs to indexes.
func startAgents(t *testing.T, ctx context.Context, c *cluster, nw *testnet.Net, logDir string, n int) (agents []*agentProc, tokens []tokenAnswer, hostOf map[string]int) {
	t.Helper()
	agents = make([]*agentProc, n)
	for i := range agents {
		agents[i] = &agentProc{node: nw.Nodes[i], dataDir: newAgentDir(t), prefix: fmt.Sprintf("hm%d-", i),
			logPath: filepath.Join(logDir, fmt.Sprintf("agent%d.log", i))}
	}
	t.Cleanup(func() {
		for i, a := range agents {
			a.stop()
			if t.Failed() {
				t.Logf("agent %d log:\n%s", i, a.log())
			}
		}
	})
	tokens = make([]tokenAnswer, n)
	for i, a := range agents {
		tokens[i] = c.newToken()
		a.start(t, ctx, c.url, "--register", tokens[i].Token, "--ca-fingerprint", tokens[i].CAFingerprint, "--name", fmt.Sprintf("node%d", i))
	}
	waitFor(t, "ready hosts with their capacity reported", 3*time.Minute, func() bool {
		hs := c.hosts()
		for _, a := range agents {
			if hs[a.addr()].Status != "ready" {
				return false
			}
		}
		rows, err := c.db.ListHosts(ctx)
		return err == nil && !slices.ContainsFunc(rows, func(h store.Host) bool { return h.VCPUs == 0 })
	})
	hostOf = map[string]int{}
	for i, a := range agents {
		hostOf[c.hosts()[a.addr()].ID] = i
	}
	return agents, tokens, hostOf
}

func TestMultiHost(t *testing.T) {
	if skip != "" {
		t.Skip(skip)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nw := testnet.Setup(t, 4) // three agents and a rogue
	c := startControlPlane(t, ctx, nw.Gateway.String())
	logDir := t.TempDir()

	agents, tokens, hostOf := startAgents(t, ctx, c, nw, logDir, 3)
	// Admin routes: platform admins only.
	var nonAdmin string
	{
		res, err := c.client.Signup(ctx, "dev@example.com", "password123")
		if err != nil {
			t.Fatal(err)
		}
		nonAdmin = res
	}
	if st := c.adminDo("POST", "/v1/admin/hosts", nonAdmin, nil); st != http.StatusForbidden {
		t.Fatalf("non-admin creates a token: %d", st)
	}

	// A registration token works once.
	t.Run("token reuse refused", func(t *testing.T) {
		out, err := nw.Nodes[3].Command(ctx, hearthBin, "agent", "--data-dir", newAgentDir(t),
			"--listen", net.JoinHostPort(nw.Nodes[3].Addr.String(), agentPort),
			"--control-plane", c.url, "--register", tokens[0].Token).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "invalid, expired or used registration token") {
			t.Fatalf("second use of a token: err=%v\n%s", err, out)
		}
	})

	// An agent whose certificate comes from another CA: it cannot heartbeat,
	// and the control plane will not talk to it even at a host's address.
	t.Run("foreign CA refused", func(t *testing.T) {
		victim := c.hosts()[agents[0].addr()]
		rogue := &agentProc{node: nw.Nodes[3], dataDir: newAgentDir(t), prefix: "hmr-", logPath: filepath.Join(logDir, "rogue.log")}
		rogueIdentity(t, filepath.Join(rogue.dataDir, "identity"), victim.ID, rogue.addr())
		rogue.start(t, ctx, c.url)
		defer rogue.stop()
		waitFor(t, "the rogue's refused heartbeat", 2*time.Minute, func() bool {
			return strings.Contains(rogue.log(), "heartbeat failed") && strings.Contains(rogue.log(), "401")
		})
		waitFor(t, "the rogue's listener", time.Minute, func() bool {
			conn, err := nw.Nodes[3].Dial(ctx, rogue.addr())
			if err == nil {
				conn.Close()
			}
			return err == nil
		})
		// The control plane dials the rogue as if it were the victim host.
		resp, err := (&http.Client{Transport: c.fleet.Transport(victim.ID), Timeout: 10 * time.Second}).Get("https://" + rogue.addr() + "/")
		if err == nil {
			resp.Body.Close()
			t.Fatal("the control plane accepted an agent certificate from another CA")
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("refused for another reason: %v", err)
		}
	})

	// Placement spreads sandboxes; exec works in each through the control plane.
	sbs := make([]apiwire.Sandbox, 3)
	var wg sync.WaitGroup
	errs := make([]error, len(sbs))
	for i := range sbs {
		wg.Go(func() { sbs[i], errs[i] = c.client.CreateSandbox(ctx, apiwire.CreateSandbox{Template: "tiny"}) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("create sandboxes: %v", err)
	}
	seen := map[string]bool{}
	for _, sb := range sbs {
		seen[sb.Host] = true
	}
	if len(seen) != 3 {
		t.Fatalf("sandboxes not spread: hosts %v", seen)
	}
	exec := func(sb apiwire.Sandbox) error {
		res, err := c.client.Exec(ctx, sb.ID, apiwire.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", "echo hello from $(hostname)"}})
		if err != nil {
			return err
		}
		if res.ExitCode != 0 || !strings.HasPrefix(res.Stdout, "hello from") {
			return fmt.Errorf("exec in %s: %+v", sb.ID, res)
		}
		return nil
	}
	for _, sb := range sbs {
		if err := exec(sb); err != nil {
			t.Fatal(err)
		}
	}
	victim := sbs[0]
	vi := hostOf[victim.Host]

	// Lose an agent: SIGKILL, no goodbye. Its host goes unreachable within
	// the window; the other hosts' sandboxes keep working.
	killedAt := time.Now()
	if err := agents[vi].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-agents[vi].done
	detect := waitFor(t, "the killed host to be marked unreachable", 4*window, func() bool {
		return c.hosts()[agents[vi].addr()].Status == "unreachable"
	})
	t.Logf("MEASURED agent loss → unreachable: %s (heartbeat %s, window %s, monitor every %s)",
		time.Since(killedAt).Round(10*time.Millisecond), hbInterval, window, window/4)
	_ = detect
	for _, sb := range sbs[1:] {
		if err := exec(sb); err != nil {
			t.Fatalf("sandbox on a healthy host while another is down: %v", err)
		}
	}
	// Placement avoids the unreachable host.
	extra, err := c.client.CreateSandbox(ctx, apiwire.CreateSandbox{Template: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	if extra.Host == victim.Host {
		t.Fatalf("placed on the unreachable host")
	}
	if err := exec(extra); err != nil {
		t.Fatal(err)
	}

	// Restart: the victim's VM outlived its agent (own session); the new
	// agent re-adopts it, the host comes back ready, and the sandbox runs
	// commands again without having been recreated.
	agents[vi].start(t, ctx, c.url)
	waitFor(t, "the restarted host to be ready", 3*time.Minute, func() bool {
		return c.hosts()[agents[vi].addr()].Status == "ready"
	})
	hc, err := c.fleet.Pool().Get(ctx, victim.Host)
	if err != nil {
		t.Fatal(err)
	}
	if left, err := hc.ListSandboxes(ctx); err != nil || len(left) != 1 || left[0].SandboxID != victim.ID || left[0].State != string(sandbox.StateRunning) {
		t.Fatalf("restarted agent has %+v (%v), want the victim re-adopted and running", left, err)
	}
	if sb, err := c.db.GetSandboxByID(ctx, victim.ID); err != nil || sb.Status != sandbox.StateRunning {
		t.Fatalf("victim in the store: %+v, %v; want running", sb.Status, err)
	}
	if err := exec(victim); err != nil {
		t.Fatalf("re-adopted sandbox: %v", err)
	}
	if err := c.client.DeleteSandbox(ctx, victim.ID); err != nil {
		t.Fatal(err)
	}
	// Placement reads load from heartbeats: wait for the host to report
	// the deletion before asking it to take the next sandbox.
	waitFor(t, "the victim's host to report no sandboxes", time.Minute, func() bool {
		return c.hosts()[agents[vi].addr()].SandboxCount == 0
	})
	// The host takes sandboxes again (it is now the least loaded).
	back, err := c.client.CreateSandbox(ctx, apiwire.CreateSandbox{Template: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	if back.Host != victim.Host {
		t.Errorf("new sandbox went to %s, want the returned (emptiest) host %s", back.Host, victim.Host)
	}
	if err := exec(back); err != nil {
		t.Fatal(err)
	}
	hs := c.hosts()
	for i, a := range agents {
		t.Logf("host node%d: %+v", i, hs[a.addr()])
	}
	for _, sb := range append(sbs[1:], extra, back) {
		if err := c.client.DeleteSandbox(ctx, sb.ID); err != nil {
			t.Errorf("delete %s: %v", sb.ID, err)
		}
	}
}

// rogueIdentity writes an agent identity for hostID issued by a CA the
// control plane has never seen.
func rogueIdentity(t *testing.T, dir, hostID, addr string) {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, "rogue")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignCSR(csr, hostID, 0, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.SaveIdentity(dir, cert, ca.CertPEM()); err != nil {
		t.Fatal(err)
	}
}

// TestTemplateCopy: a snapshot template lives on the host that took it;
// with that host draining, a sandbox of the template is placed on another
// host, the template copied there over the agents' RPC first, and it runs
// the frozen state. The store records the copy; a later sandbox uses a
// holder without copying again; deleting the template removes every copy.
// Then the same for a built template (its flattened disk).
func TestTemplateCopy(t *testing.T) {
	if skip != "" {
		t.Skip(skip)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nw := testnet.Setup(t, 3)
	c := startControlPlane(t, ctx, nw.Gateway.String())
	agents, _, hostOf := startAgents(t, ctx, c, nw, t.TempDir(), 3)

	src, err := c.client.CreateSandbox(ctx, apiwire.CreateSandbox{Template: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	run := func(id, script string) string {
		t.Helper()
		res, err := c.client.Exec(ctx, id, apiwire.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", script}})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("exec %q in %s: %+v, %v", script, id, res, err)
		}
		return res.Stdout
	}
	run(src.ID, "echo frozen on $(hostname) > ~/marker; sync")
	tpl, err := c.client.CreateSnapshot(ctx, src.ID, "copied")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.client.DeleteSandbox(ctx, src.ID); err != nil {
		t.Fatal(err)
	}
	a := hostOf[src.Host]
	tplDir := func(i int) string { return filepath.Join(agents[i].dataDir, "templates", tpl.ID) }
	if _, err := os.Stat(tplDir(a)); err != nil {
		t.Fatalf("snapshot template not on its host: %v", err)
	}
	if _, err := c.fleet.DrainHost(ctx, src.Host); err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	sb, err := c.client.CreateSandbox(ctx, apiwire.CreateSandbox{Template: "copied"})
	if err != nil {
		t.Fatalf("create from the template of a draining host: %v\n%s", err, agents[a].log())
	}
	withCopy := time.Since(t0)
	if sb.Host == src.Host {
		t.Fatalf("placed on the draining host %s", sb.Host)
	}
	b := hostOf[sb.Host]
	if got := run(sb.ID, "cat ~/marker"); !strings.HasPrefix(got, "frozen on ") {
		t.Errorf("the copied template's state: %q", got)
	}
	copies, err := c.db.TemplateCopyHosts(ctx, tpl.ID)
	if err != nil || len(copies) != 1 || copies[0] != sb.Host {
		t.Errorf("recorded copies %v (%v), want [%s]", copies, err, sb.Host)
	}
	if _, err := os.Stat(filepath.Join(tplDir(b), "template.json")); err != nil {
		t.Errorf("no template on the target: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(agents[b].dataDir, "templates", ".staging-*")); len(left) > 0 {
		t.Errorf("staging left on the target: %v", left)
	}

	// The next sandbox goes to the ready holder, the copy, although the
	// third host is emptier: no second copy.
	t0 = time.Now()
	sb2, err := c.client.CreateSandbox(ctx, apiwire.CreateSandbox{Template: "copied"})
	if err != nil {
		t.Fatal(err)
	}
	held := time.Since(t0)
	t.Logf("MEASURED create with a template copy %s, on a holder %s: ratio %.2f",
		withCopy.Round(time.Millisecond), held.Round(time.Millisecond), float64(withCopy)/float64(held))
	if sb2.Host != sb.Host {
		t.Errorf("second sandbox on %s, want the copy's host %s", sb2.Host, sb.Host)
	}
	if copies, _ := c.db.TemplateCopyHosts(ctx, tpl.ID); len(copies) != 1 {
		t.Errorf("copies after the second sandbox: %v", copies)
	}
	if got := run(sb2.ID, "cat ~/marker"); !strings.HasPrefix(got, "frozen on ") {
		t.Errorf("second sandbox of the template: %q", got)
	}
	for _, id := range []string{sb.ID, sb2.ID} {
		if err := c.client.DeleteSandbox(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.client.DeleteSnapshot(ctx, "copied"); err != nil {
		t.Fatal(err)
	}
	for i := range agents {
		if _, err := os.Stat(tplDir(i)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("agent %d keeps the deleted template (%v)", i, err)
		}
	}

	// A built template: its disk (DATA/images/<build>) goes over. Built on
	// a ready host, which is then drained too: the third host gets it.
	b0, err := c.client.CreateBuild(ctx, "built", apiwire.BuildRequest{Dockerfile: "FROM tiny\nRUN echo built > /built\n", VCPUs: 1, MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	var build apiwire.Build
	waitFor(t, "the build", 5*time.Minute, func() bool {
		build, err = c.client.GetBuild(ctx, "built", b0.ID)
		return err == nil && build.Finished()
	})
	if build.Status != "ready" {
		t.Fatalf("build: %+v", build)
	}
	x := hostOf[build.Host]
	artefact := func(i int) string { return filepath.Join(agents[i].dataDir, "images", build.ID) }
	if _, err := os.Stat(artefact(x)); err != nil {
		t.Fatalf("built template not on its host: %v", err)
	}
	if _, err := c.fleet.DrainHost(ctx, build.Host); err != nil {
		t.Fatal(err)
	}
	sb3, err := c.client.CreateSandbox(ctx, apiwire.CreateSandbox{Template: "built"})
	if err != nil {
		t.Fatalf("create from a built template of a draining host: %v", err)
	}
	if sb3.Host == build.Host || sb3.Host == src.Host {
		t.Fatalf("placed on a draining host %s", sb3.Host)
	}
	if got := run(sb3.ID, "cat /built"); got != "built\n" {
		t.Errorf("the copied built template: %q", got)
	}
	if _, err := os.Stat(filepath.Join(artefact(hostOf[sb3.Host]), "rootfs.ext4")); err != nil {
		t.Errorf("no built disk on the target: %v", err)
	}
	if err := c.client.DeleteSandbox(ctx, sb3.ID); err != nil {
		t.Fatal(err)
	}

	// A new version supersedes it: the old one leaves its host and the
	// copy's (a draining host still deletes), and its copy is forgotten.
	b1, err := c.client.CreateBuild(ctx, "built", apiwire.BuildRequest{Dockerfile: "FROM tiny\nRUN echo built again > /built\n", VCPUs: 1, MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	var build2 apiwire.Build
	waitFor(t, "the second build", 5*time.Minute, func() bool {
		build2, err = c.client.GetBuild(ctx, "built", b1.ID)
		return err == nil && build2.Finished()
	})
	if build2.Status != "ready" {
		t.Fatalf("second build: %+v", build2)
	}
	waitFor(t, "the superseded version's files to go", time.Minute, func() bool {
		for i := range agents {
			if _, err := os.Stat(artefact(i)); !errors.Is(err, os.ErrNotExist) {
				return false
			}
		}
		return true
	})
	if copies, err := c.db.TemplateCopyHosts(ctx, build.ID); err != nil || len(copies) != 0 {
		t.Errorf("copies of the superseded version still recorded: %v (%v)", copies, err)
	}
	if err := c.client.DeleteTemplate(ctx, "built"); err != nil {
		t.Fatal(err)
	}
	for i := range agents {
		if _, err := os.Stat(filepath.Join(agents[i].dataDir, "images", build2.ID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("agent %d keeps the deleted built template (%v)", i, err)
		}
	}
}
