package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/gen/envd/process/processconnect"
	"github.com/hearth-sandbox/hearth/gen/hostagent/v1/hostagentv1connect"
	"github.com/hearth-sandbox/hearth/internal/agentclient"
	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/hostwire"
	"github.com/hearth-sandbox/hearth/internal/hostwire/hostwiretest"
	"github.com/hearth-sandbox/hearth/internal/httplimit"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// rpcEnv is a real agent (Connect server over httptest, real client) whose
// sandboxes each reach their own real envd server running on this host:
// only the VM, its network slot and its disk are fakes.
type rpcEnv struct {
	h      *harness
	agent  *Agent
	srv    *httptest.Server
	client *agentclient.Client

	mu    sync.Mutex
	envds map[string]*httptest.Server // by sandbox ID
}

func newRPCEnv(t *testing.T, token string) *rpcEnv {
	t.Helper()
	return newRPCEnvWith(t, token, nil)
}

// newRPCEnvWith is newRPCEnv with a hook that adjusts the agent's options.
func newRPCEnvWith(t *testing.T, token string, adjust func(*Options)) *rpcEnv {
	t.Helper()
	e := &rpcEnv{envds: map[string]*httptest.Server{}}
	h := newHarness(t, false)
	h.net.addrFor = func(id string) string {
		es := envd.New(envd.Config{
			Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
			SetClock: func(time.Time) error { return nil }, // keep the host clock
		})
		srv := httptest.NewServer(es.Handler())
		t.Cleanup(func() { srv.Close(); es.Close() })
		e.mu.Lock()
		e.envds[id] = srv
		e.mu.Unlock()
		return strings.TrimPrefix(srv.URL, "http://")
	}
	opts := Options{
		DataDir: h.data,
		HostID:  "host1",
		Token:   token,
		Driver:  h.driver,
		Disks:   h.disks,
		Net:     h.net,
		Images:  newFakeImages(t),
		Dial:    NewEnvdDialer(nil),
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if adjust != nil {
		adjust(&opts)
	}
	a, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	h.m = a.Manager()
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		srv.Close()
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	var copts []agentclient.ClientOption
	if token != "" {
		copts = append(copts, agentclient.WithToken(token))
	}
	e.h, e.agent, e.srv, e.client = h, a, srv, agentclient.NewClient(srv.URL, srv.Client(), copts...)
	return e
}

// envdURL is the envd serving sandbox id.
func (e *rpcEnv) envdURL(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.envds[id].URL
}

func createReq(id string) service.CreateSandboxRequest {
	return service.CreateSandboxRequest{
		SandboxID: id, TemplateID: "tiny", TemplateKind: sbx.KindBase,
		VCPUs: 1, MemoryMB: 256, DiskSizeMB: 10240,
		Env: map[string]string{"GREETING": "hello"}, AccessToken: "secret-" + id, TimeoutS: 300,
	}
}

func TestRPCRoundTrip(t *testing.T) {
	t.Parallel()
	e := newRPCEnv(t, "agent-token")
	ctx := context.Background()
	c := e.client

	rt, err := c.CreateSandbox(ctx, createReq("rpc1"))
	if err != nil {
		t.Fatal(err)
	}
	if rt.SandboxID != "rpc1" || rt.State != "running" || rt.Address == "" || rt.StartedAt.IsZero() {
		t.Fatalf("runtime = %+v", rt)
	}
	// disk_size_mb travels client → RPC → manager → backend unchanged.
	if got := e.h.disks.sizes["rpc1"]; got != 10240*MiB {
		t.Errorf("backend got %d bytes, want %d", got, 10240*MiB)
	}

	list, err := c.ListSandboxes(ctx)
	if err != nil || len(list) != 1 || list[0].SandboxID != "rpc1" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	info, err := c.Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.HostID != "host1" || info.Driver != "fake" || info.VCPUs != runtime.NumCPU() ||
		info.MemoryMB <= 0 || info.DiskMB <= 0 || info.SandboxCount != 1 {
		t.Errorf("ping = %+v", info)
	}

	// Exec: env from create reaches the process; exit code and both
	// streams come back.
	res, err := c.Exec(ctx, "rpc1", service.ExecRequest{
		Cmd: "/bin/sh", Args: []string{"-c", `echo "$GREETING $1"; echo oops >&2; exit 3`, "sh", "world"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stdout != "hello world\n" || res.Stderr != "oops\n" || res.ExitCode != 3 {
		t.Errorf("exec = %+v", res)
	}

	// 5 MB byte-exact both ways, through the real envd.
	data := make([]byte, 5<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sub", "blob.bin")
	if err := c.WriteFile(ctx, "rpc1", path, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if onDisk, err := os.ReadFile(path); err != nil || !bytes.Equal(onDisk, data) {
		t.Fatalf("file envd wrote differs (len %d, err %v)", len(onDisk), err)
	}
	rc, err := c.ReadFile(ctx, "rpc1", path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (err %v), differs from the 5 MB written", len(got), err)
	}
	// Empty files are streams with no chunks.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := c.WriteFile(ctx, "rpc1", empty, bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	rc, err = c.ReadFile(ctx, "rpc1", empty)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(rc); err != nil || len(b) != 0 {
		t.Errorf("empty file: %q, %v", b, err)
	}
	rc.Close()

	if err := c.DestroySandbox(ctx, "rpc1"); err != nil {
		t.Fatal(err)
	}
	if err := c.DestroySandbox(ctx, "rpc1"); err != nil {
		t.Fatalf("second destroy: %v", err)
	}
	e.h.assertClean()
}

// TestRPCExecStreams proves output is streamed, not collected: the command
// blocks until the test has seen its first line.
func TestRPCExecStreams(t *testing.T) {
	t.Parallel()
	e := newRPCEnv(t, "")
	ctx := context.Background()
	if _, err := e.client.CreateSandbox(ctx, createReq("stream1")); err != nil {
		t.Fatal(err)
	}
	gate := filepath.Join(t.TempDir(), "gate")
	var chunks []string
	code, err := e.client.ExecStream(ctx, "stream1", service.ExecRequest{
		Cmd:  "/bin/sh",
		Args: []string{"-c", `echo first; while [ ! -e "$1" ]; do sleep 0.01; done; echo second`, "sh", gate},
	}, func(_ string, p []byte) error {
		chunks = append(chunks, string(p))
		if strings.Contains(string(p), "first") {
			return os.WriteFile(gate, nil, 0o600)
		}
		return nil
	})
	if err != nil || code != 0 {
		t.Fatalf("exec: code %d, err %v", code, err)
	}
	if all := strings.Join(chunks, ""); all != "first\nsecond\n" {
		t.Errorf("output %q", all)
	}
}

// TestRPCDeadlines: a unary RPC whose body stalls past Limits.Read is cut
// off; an exec stream that runs longer than Read and Write, and a file
// transfer, still work; the server the agent runs under bounds headers and
// idle connections (httplimit's tests show those cut slow clients).
func TestRPCDeadlines(t *testing.T) {
	t.Parallel()
	const d = 300 * time.Millisecond
	e := newRPCEnvWith(t, "tok", func(o *Options) {
		o.Limits = httplimit.Limits{ReadHeader: d, Idle: d, Read: d, Write: d}
	})
	ctx := context.Background()
	if _, err := e.client.CreateSandbox(ctx, createReq("dl1")); err != nil {
		t.Fatal(err)
	}
	res, err := e.client.Exec(ctx, "dl1", service.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", "sleep 1; echo done"}})
	if err != nil || res.Stdout != "done\n" {
		t.Fatalf("exec longer than the unary bounds: %+v, %v", res, err)
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := e.client.WriteFile(ctx, "dl1", path, strings.NewReader("data")); err != nil {
		t.Fatalf("write file: %v", err)
	}

	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second)) // the test's own bound
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\n%s: tok\r\nContent-Type: application/proto\r\nContent-Length: 100\r\n\r\nx",
		hostagentv1connect.HostAgentServicePingProcedure, hostwire.TokenHeader)
	t0 := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a unary RPC with a stalled body was never cut off")
	}
	if err == nil && resp.StatusCode == http.StatusOK {
		t.Fatalf("stalled unary RPC answered 200")
	}
	t.Logf("stalled unary RPC: cut after %s (%v, %v)", time.Since(t0), resp, err)

	srv := NewHTTPServer("127.0.0.1:0", e.agent.Handler())
	if srv.ReadHeaderTimeout <= 0 || srv.IdleTimeout <= 0 {
		t.Errorf("agent server: ReadHeaderTimeout %s, IdleTimeout %s; want both set", srv.ReadHeaderTimeout, srv.IdleTimeout)
	}
}

func TestRPCErrorMapping(t *testing.T) {
	t.Parallel()
	e := newRPCEnv(t, "")
	ctx := context.Background()
	c := e.client
	if _, err := c.CreateSandbox(ctx, createReq("errs1")); err != nil {
		t.Fatal(err)
	}
	bad := createReq("errs2")
	bad.VCPUs = 0
	_, invalidErr := c.CreateSandbox(ctx, bad)
	conflict := createReq("errs1")
	conflict.MemoryMB = 512
	_, conflictErr := c.CreateSandbox(ctx, conflict)
	_, missingTmplErr := c.CreateSandbox(ctx, service.CreateSandboxRequest{SandboxID: "errs3", TemplateID: "nosuch", VCPUs: 1, MemoryMB: 128, AccessToken: "t"})
	_, noSandboxErr := c.Exec(ctx, "nosuch", service.ExecRequest{Cmd: "true"})
	_, noFileErr := c.ReadFile(ctx, "errs1", "/nonexistent/file")
	tests := []struct {
		name  string
		err   error
		kind  service.Kind
		field string
	}{
		{"invalid vcpus", invalidErr, service.KindInvalidArgument, "vcpus"},
		{"create with other params", conflictErr, service.KindConflict, ""},
		{"unknown template", missingTmplErr, service.KindNotFound, ""},
		{"unknown sandbox", noSandboxErr, service.KindNotFound, ""},
		{"missing file", noFileErr, service.KindNotFound, ""},
		{"pause without snapshots", c.PauseSandbox(ctx, "errs1"), service.KindUnimplemented, ""},
	}
	for _, tt := range tests {
		var se *service.Error
		if !errors.As(tt.err, &se) || se.Kind != tt.kind || se.Field != tt.field {
			t.Errorf("%s: err = %v (%#v), want kind %v field %q", tt.name, tt.err, se, tt.kind, tt.field)
		}
	}
}

func TestRPCRequiresToken(t *testing.T) {
	t.Parallel()
	e := newRPCEnv(t, "right")
	for name, c := range map[string]*agentclient.Client{
		"wrong token": agentclient.NewClient(e.srv.URL, e.srv.Client(), agentclient.WithToken("wrong")),
		"no token":    agentclient.NewClient(e.srv.URL, e.srv.Client()),
	} {
		_, err := c.Ping(context.Background())
		var se *service.Error
		if !errors.As(err, &se) || se.Kind != service.KindUnavailable {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// The sandbox-traffic endpoint is behind the token too.
	resp, err := e.srv.Client().Get(e.srv.URL + "/sandboxes/x/proxy/49983/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unauthenticated proxy request: %d, want 401", resp.StatusCode)
	}
	if _, err := e.client.Ping(context.Background()); err != nil {
		t.Fatalf("right token: %v", err)
	}
}

func TestProxyToSandboxPort(t *testing.T) {
	t.Parallel()
	e := newRPCEnv(t, "tok")
	ctx := context.Background()
	if _, err := e.client.CreateSandbox(ctx, createReq("px1")); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(e.envdURL("px1"))
	port := u.Port()
	do := func(path string, hdr map[string]string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+path, nil)
		req.Header.Set(hostwire.TokenHeader, "tok")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// envd answers /health with 204 whatever the token; /envs needs it.
	if code := do("/sandboxes/px1/proxy/"+port+"/health", nil); code != http.StatusNoContent {
		t.Errorf("path-routed /health: %d", code)
	}
	if code := do("/health", map[string]string{hostwire.HeaderSandboxID: "px1", hostwire.HeaderSandboxPort: port}); code != http.StatusNoContent {
		t.Errorf("header-routed /health: %d", code)
	}
	if code := do("/envs", map[string]string{hostwire.HeaderSandboxID: "px1", hostwire.HeaderSandboxPort: port}); code != http.StatusUnauthorized {
		t.Errorf("/envs without the sandbox token: %d, want 401 from envd", code)
	}
	if code := do("/envs", map[string]string{hostwire.HeaderSandboxID: "px1", hostwire.HeaderSandboxPort: port, "X-Access-Token": "secret-px1"}); code != http.StatusOK {
		t.Errorf("/envs with the sandbox token: %d", code)
	}
	if code := do("/sandboxes/nosuch/proxy/"+port+"/health", nil); code != http.StatusNotFound {
		t.Errorf("unknown sandbox: %d", code)
	}
	if code := do("/sandboxes/px1/proxy/0/health", nil); code != http.StatusBadRequest {
		t.Errorf("bad port: %d", code)
	}
	addr, err := e.agent.SandboxAddr("px1")
	if err != nil || addr != "127.0.0.1" {
		t.Errorf("SandboxAddr = %q, %v", addr, err)
	}
}

// The agent's sandbox-traffic endpoint carries a process stream whole when
// envd answers before the proxy's Transport has read the end of the
// request body (see hostwire.FullDuplex; LateBodyRead makes that order
// certain).
func TestProxyStreamWhenBodyEndReadLate(t *testing.T) {
	t.Parallel()
	e := newRPCEnv(t, "tok")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.client.CreateSandbox(ctx, createReq("late1")); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(hostwiretest.LateBodyRead(e.agent.Handler()))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(e.envdURL("late1"))
	hc := &http.Client{Transport: hostwiretest.WholeBody(headerSetter{
		hostwire.TokenHeader: "tok", envd.AccessTokenHeader: "secret-late1",
	})}
	pc := processconnect.NewProcessClient(hc, srv.URL+"/sandboxes/late1/proxy/"+u.Port())
	hostwiretest.CheckWholeStream(ctx, t, pc)
}

// headerSetter is a client Transport that sets its headers on every request.
type headerSetter map[string]string

func (h headerSetter) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}
