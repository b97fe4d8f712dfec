// Command devserver serves the dashboard exactly as the control plane
// composes it (real REST API on SQLite, dashboard.WrapAPI, dashboard.New,
// ServiceBackend) but with sandboxes that are not VMs: each "sandbox" is a
// real envd server (internal/envd) on a loopback port, running commands as
// this host's user. It exists to develop the front end and to run the browser
// tests on a machine that cannot boot microVMs; tests/browser/run.sh uses
// `hearth dev` (real VMs) unless told otherwise.
//
// Never expose it: its terminals are shells on this host. It listens on
// loopback only.
//
// On start it creates a platform admin (dev credentials, same JSON shape as
// `hearth dev`'s dev-credentials.json) and prints one JSON line with the URL.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/hearth-sandbox/hearth/internal/proxy"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hearth-sandbox/hearth/internal/api"
	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/dashboard"
	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/envdclient"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/service/servicetest"
	"github.com/hearth-sandbox/hearth/internal/store"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on (loopback only)")
	dataDir := flag.String("data-dir", "", "directory for the database and credentials (required)")
	flag.Parse()
	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "devserver: --data-dir is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *dataDir); err != nil {
		fmt.Fprintln(os.Stderr, "devserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen, dataDir string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to listen on %s: loopback only", listen)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	sealer, err := store.NewAESSealer(key)
	if err != nil {
		return err
	}
	db, err := store.Open(ctx, store.Options{DSN: filepath.Join(dataDir, "hearth.db"), Sealer: sealer})
	if err != nil {
		return err
	}
	defer db.Close()
	for _, t := range []store.Template{
		{Name: "base", Kind: sandbox.KindBase, VCPUs: 2, MemoryMB: 1024, DiskSizeMB: sandbox.DefaultDiskSizeMB},
		{Name: "tiny", Kind: sandbox.KindBase, VCPUs: 1, MemoryMB: 256, DiskSizeMB: 2048},
	} {
		if _, err := db.UpsertPlatformTemplate(ctx, t); err != nil {
			return err
		}
	}
	tokens, err := auth.NewTokens(key, "hearth", 12*time.Hour, nil)
	if err != nil {
		return err
	}
	passwords, err := auth.NewPasswords(4)
	if err != nil {
		return err
	}
	h := &envdHost{FakeHost: servicetest.NewFakeHost("local"), log: log, envds: map[string]*sandboxEnvd{}}
	defer h.closeAll()
	pool := service.SingleHost{ID: "local", Client: h}
	svc, err := service.New(service.Deps{Store: db, Hosts: pool, Passwords: passwords, Tokens: tokens, Logger: log})
	if err != nil {
		return err
	}
	apiH := api.New(api.Deps{Service: svc, Logger: log, AuthBurst: 1000})
	mux := http.NewServeMux()
	wrapped := dashboard.WrapAPI(apiH)
	for _, p := range api.Paths() {
		mux.Handle(p, wrapped)
	}
	mux.Handle("/", dashboard.New(dashboard.Deps{
		API: apiH, Logger: log,
		// The "sandboxes" are envd processes on this host: route the
		// proxy to the address the host reports.
		Terminal: dashboard.ServiceBackend{Service: svc, Proxy: proxy.New(&proxy.StoreResolver{Store: db,
			Route: func(ctx context.Context, sb store.Sandbox, _ store.Host, _ int) (proxy.Target, error) {
				if e := h.envd(sb.ID); e != nil {
					return proxy.Target{URL: &url.URL{Scheme: "http", Host: e.addr}}, nil
				}
				return proxy.Target{}, proxy.ErrNotFound
			}}, proxy.Options{Logger: log})},
		// This host's login files are not a sandbox's: skip them (a
		// profile that runs tools like pyenv can stall or leave locks
		// when terminals are killed).
		Shell: []string{"/bin/bash", "--noprofile", "--norc"},
	}))

	creds, err := devCredentials(ctx, svc, db)
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(creds, "", "  ")
	if err := os.WriteFile(filepath.Join(dataDir, "dev-credentials.json"), b, 0o600); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	line, _ := json.Marshal(map[string]string{"url": "http://" + ln.Addr().String(), "email": creds.Email, "password": creds.Password, "api_key": creds.APIKey})
	fmt.Println(string(line))
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

type credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	APIKey   string `json:"api_key"`
	TeamID   string `json:"team_id"`
}

func devCredentials(ctx context.Context, svc *service.Service, db *store.DB) (credentials, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return credentials{}, err
	}
	c := credentials{Email: "dev@hearth.local", Password: hex.EncodeToString(b)}
	res, err := svc.Signup(ctx, c.Email, c.Password)
	if err != nil {
		return c, err
	}
	c.TeamID = res.Team.ID
	if err := db.SetUserAdmin(ctx, c.Email, true); err != nil {
		return c, err
	}
	_, c.APIKey, err = svc.CreateAPIKey(ctx, service.Principal{UserID: res.User.ID, TeamID: res.Team.ID, IsAdmin: true}, "dev")
	return c, err
}

// envdHost keeps sandbox state in servicetest.FakeHost and gives every
// sandbox its own real envd, initialised with the sandbox's access token as
// the agent does. Commands and files go through that envd.
type envdHost struct {
	*servicetest.FakeHost
	log *slog.Logger

	mu    sync.Mutex
	envds map[string]*sandboxEnvd
}

type sandboxEnvd struct {
	srv  *envd.Server
	hs   *http.Server
	addr string
	cli  *envdclient.Client
}

func (h *envdHost) CreateSandbox(ctx context.Context, req service.CreateSandboxRequest) (service.SandboxRuntime, error) {
	rt, err := h.FakeHost.CreateSandbox(ctx, req)
	if err != nil {
		return rt, err
	}
	srv := envd.New(envd.Config{SetClock: func(time.Time) error { return nil }, Logger: h.log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return rt, err
	}
	hs := srv.HTTPServer(ln.Addr().String())
	go func() { _ = hs.Serve(ln) }()
	e := &sandboxEnvd{srv: srv, hs: hs, addr: ln.Addr().String()}
	e.cli = envdclient.New("http://"+e.addr, "", nil)
	if err := e.cli.Init(ctx, envdclient.InitRequest{AccessToken: req.AccessToken, EnvVars: req.Env}, ""); err != nil {
		e.close()
		return rt, err
	}
	h.mu.Lock()
	h.envds[req.SandboxID] = e
	h.mu.Unlock()
	rt.Address = e.addr
	return rt, nil
}

func (h *envdHost) DestroySandbox(ctx context.Context, id string) error {
	h.mu.Lock()
	e := h.envds[id]
	delete(h.envds, id)
	h.mu.Unlock()
	if e != nil {
		e.close()
	}
	return h.FakeHost.DestroySandbox(ctx, id)
}

func (h *envdHost) ResumeSandbox(ctx context.Context, req service.ResumeSandboxRequest) (service.SandboxRuntime, error) {
	rt, err := h.FakeHost.ResumeSandbox(ctx, req)
	if e := h.envd(req.SandboxID); e != nil {
		rt.Address = e.addr
	}
	return rt, err
}

func (h *envdHost) ListSandboxes(ctx context.Context) ([]service.SandboxRuntime, error) {
	rts, err := h.FakeHost.ListSandboxes(ctx)
	for i := range rts {
		if e := h.envd(rts[i].SandboxID); e != nil {
			rts[i].Address = e.addr
		}
	}
	return rts, err
}

func (h *envdHost) Exec(ctx context.Context, id string, req service.ExecRequest) (service.ExecResult, error) {
	e := h.envd(id)
	if e == nil {
		return service.ExecResult{}, service.NotFound("sandbox")
	}
	res, err := e.cli.Exec(ctx, envdclient.ExecRequest{Cmd: req.Cmd, Args: req.Args, Env: req.Env, Cwd: req.Cwd, Timeout: time.Duration(req.TimeoutS) * time.Second})
	return service.ExecResult{Stdout: string(res.Stdout), Stderr: string(res.Stderr), ExitCode: res.ExitCode}, err
}

func (h *envdHost) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	e := h.envd(id)
	if e == nil {
		return nil, service.NotFound("sandbox")
	}
	rc, err := e.cli.ReadFile(ctx, path)
	if err != nil && strings.Contains(err.Error(), "HTTP 404") {
		return nil, service.NotFound("file " + path)
	}
	return rc, err
}

func (h *envdHost) WriteFile(ctx context.Context, id, path string, r io.Reader) error {
	e := h.envd(id)
	if e == nil {
		return service.NotFound("sandbox")
	}
	return e.cli.WriteFile(ctx, path, r)
}

func (h *envdHost) envd(id string) *sandboxEnvd {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.envds[id]
}

func (h *envdHost) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, e := range h.envds {
		e.close()
		delete(h.envds, id)
	}
}

func (e *sandboxEnvd) close() {
	e.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := e.hs.Shutdown(ctx); err != nil {
		_ = e.hs.Close()
	}
}
