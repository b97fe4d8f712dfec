// Package controlplane assembles hearth's control plane from its parts: the
// store, secrets, the service (use cases), the HTTP surfaces (native /v1 API,
// E2B-compatible API, sandbox traffic proxy, dashboard) and the background
// loops (reaper). `hearth server` and `hearth dev` both build one here, so
// the two never drift apart.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/api"
	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/dashboard"
	"github.com/hearth-sandbox/hearth/internal/e2bapi"
	"github.com/hearth-sandbox/hearth/internal/fleet"
	"github.com/hearth-sandbox/hearth/internal/forwarded"
	"github.com/hearth-sandbox/hearth/internal/httplimit"
	"github.com/hearth-sandbox/hearth/internal/metrics"
	"github.com/hearth-sandbox/hearth/internal/proxy"
	"github.com/hearth-sandbox/hearth/internal/reconciler"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/sandboxmetrics"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/sitetls"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Options configure New.
type Options struct {
	Config config.Config
	// Hosts places sandboxes; nil means no hosts (creates answer 503).
	Hosts service.HostPool
	// SandboxRoute is how the sandbox traffic proxy reaches a sandbox:
	// proxy.DirectRoute when the guest is reachable from this process
	// (hearth dev), proxy.AgentRoute through the host's agent otherwise.
	// Nil: through the agent, with Config.AgentToken.
	SandboxRoute proxy.RouteFunc
	// ProxyTransport reaches sandbox targets (e.g. mTLS to remote agents);
	// nil: plain connections pooled per sandbox.
	ProxyTransport http.RoundTripper
	// Fleet makes this a multi-host control plane (agents register, send
	// heartbeats and are reached over mTLS); Hosts, SandboxRoute and
	// ProxyTransport are then the fleet's. Store and DataDir are filled in.
	Fleet  *fleet.Options
	Logger *slog.Logger
}

// ControlPlane is an assembled, not yet serving, control plane.
type ControlPlane struct {
	cfg     config.Config
	log     *slog.Logger
	Store   *store.DB
	Service *service.Service
	Tokens  *auth.Tokens
	Fleet   *fleet.ControlPlaneSide // nil unless Options.Fleet
	handler http.Handler
	rec     *reconciler.Reconciler // single host only (a fleet has its own)
	tls     *sitetls.Reloader      // nil: plain HTTP
	settle  sync.Once              // the start-up reconcile runs once
}

// reconcileEvery is the single host's reconciler interval.
const reconcileEvery = 30 * time.Second

// New opens the store (running migrations), loads or generates secrets and
// builds the service and its HTTP handler.
func New(ctx context.Context, opts Options) (*ControlPlane, error) {
	cfg, log := opts.Config, opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.CheckPublicURL(); err != nil {
		return nil, err
	}
	// Listener configuration is checked before anything is created, so a
	// wrong certificate fails the start with nothing half set up.
	site, trusted, err := checkFront(cfg, log)
	if err != nil {
		return nil, err
	}
	db, err := OpenStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{cfg: cfg, log: log, Store: db, tls: site}
	if opts.Fleet != nil {
		fo := *opts.Fleet
		fo.Store, fo.Logger = db, log
		if fo.DataDir == "" {
			fo.DataDir = cfg.DataDir
		}
		if cp.Fleet, err = fleet.NewControlPlane(ctx, fo); err != nil {
			db.Close()
			return nil, err
		}
		opts.Hosts, opts.SandboxRoute, opts.ProxyTransport = cp.Fleet.Pool(), cp.Fleet.ProxyRoute(), cp.Fleet.ProxyTransport()
	}
	if err := cp.build(ctx, opts); err != nil {
		db.Close()
		return nil, err
	}
	// Always: with no trusted proxy it strips forged X-Forwarded-* headers.
	cp.handler = trusted.Handler(cp.handler)
	return cp, nil
}

func (cp *ControlPlane) build(ctx context.Context, opts Options) error {
	hosts := opts.Hosts
	jwtKey := []byte(cp.cfg.JWTSecret)
	var err error
	if cp.cfg.JWTSecret == "" {
		if jwtKey, err = config.EnsureSecret(cp.cfg.DataDir, "jwt.key", 32); err != nil {
			return err
		}
	} else if len(jwtKey) < 32 {
		return errors.New("--jwt-secret / HEARTH_JWT_SECRET must be at least 32 bytes")
	}
	if cp.Tokens, err = auth.NewTokens(jwtKey, "hearth", cp.cfg.JWTTTL, nil); err != nil {
		return err
	}
	passwords, err := auth.NewPasswords(0)
	if err != nil {
		return err
	}
	if hosts == nil {
		hosts = service.SingleHost{}
	}
	if err := EnsurePlatformTemplates(ctx, cp.Store, DefaultPlatformTemplates()); err != nil {
		return err
	}
	cp.Service, err = service.New(service.Deps{
		Store: cp.Store, Hosts: hosts, Passwords: passwords, Tokens: cp.Tokens, Logger: cp.log,
		BuildFilesDir: filepath.Join(cp.cfg.DataDir, "build-files"),
	})
	if err != nil {
		return err
	}
	// Builds a previous process ran died with it.
	if err := cp.Service.RecoverBuilds(ctx); err != nil {
		return fmt.Errorf("recover template builds: %w", err)
	}
	// A fleet runs its own reconciler; a single host needs one as much
	// (a crash of the agent or of this process leaves rows behind).
	if sh, ok := hosts.(service.SingleHost); ok && sh.Client != nil && cp.Fleet == nil {
		cp.rec = &reconciler.Reconciler{Store: cp.Store, Hosts: sh, Logger: cp.log}
	}
	route := opts.SandboxRoute
	if route == nil {
		route = proxy.AgentRoute(cp.cfg.AgentToken)
	}
	px := proxy.New(&proxy.StoreResolver{Store: cp.Store, Route: route, Resume: proxy.ResumeWith(cp.Service)},
		proxy.Options{Domain: cp.cfg.Domain, Transport: opts.ProxyTransport, SignedURLMaxAge: cp.cfg.SignedURLMaxAge, Logger: cp.log})
	e2b := e2bapi.New(e2bapi.Deps{Service: cp.Service, Domain: cp.cfg.Domain, Metrics: e2bapi.EnvdMetrics{Proxy: px}, Logger: cp.log})
	var hostAdmin api.HostAdmin // stays a nil interface without a fleet
	if cp.Fleet != nil {
		hostAdmin = cp.Fleet
	}
	apiHandler := api.New(api.Deps{Service: cp.Service, Logger: cp.log, MaxUploadBytes: cp.cfg.MaxUploadMB << 20, Hosts: hostAdmin, Metrics: sandboxmetrics.Reader{Proxy: px}})
	m := metrics.New(cp.counts, cp.cfg.MetricsToken, cp.log)

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	for _, p := range e2bapi.Paths() {
		mux.Handle(p, e2b)
	}
	if cp.Fleet != nil {
		mux.Handle("/v1/hosts/", cp.Fleet.Handler()) // agents authenticate themselves
	}
	// The dashboard's session cookie becomes a Bearer token on API calls
	// (with CSRF checks); everything that is not API is the dashboard.
	withSession := dashboard.WrapAPI(apiHandler)
	for _, p := range api.Paths() {
		mux.Handle(p, withSession)
	}
	mux.Handle("/", dashboard.New(dashboard.Deps{
		API:           apiHandler,
		Terminal:      dashboard.ServiceBackend{Service: cp.Service, Proxy: px},
		SecureCookies: cp.cfg.SecureCookies(),
		Logger:        cp.log,
	}))
	// Sandbox traffic (routing headers or <port>-<id>.<domain> hosts) goes
	// to the proxy before anything else: its paths are the guest's.
	cp.handler = m.Middleware(httplimit.Defaults().Handler(requestKind(px.Matches), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if px.Matches(r) {
			px.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})))
	return nil
}

// counts feeds the resource gauges of /metrics.
func (cp *ControlPlane) counts(ctx context.Context) (metrics.Counts, error) {
	byStatus, err := cp.Store.CountSandboxesByStatus(ctx)
	if err != nil {
		return metrics.Counts{}, err
	}
	hosts, err := cp.Store.ListHosts(ctx)
	if err != nil {
		return metrics.Counts{}, err
	}
	c := metrics.Counts{Sandboxes: map[string]int{}, Hosts: map[string]int{}}
	for st, n := range byStatus {
		c.Sandboxes[string(st)] = n
	}
	for _, h := range hosts {
		c.Hosts[string(h.Status)]++
	}
	return c, nil
}

// Handler is the control plane's whole HTTP surface.
func (cp *ControlPlane) Handler() http.Handler { return cp.handler }

// URL is how clients reach the control plane listening on ln:
// https://api.<domain> (with the port unless 443) when serving TLS.
func (cp *ControlPlane) URL(ln net.Listener) string {
	if cp.tls == nil {
		return "http://" + ln.Addr().String()
	}
	host := "api." + cp.cfg.Domain
	if _, port, err := net.SplitHostPort(ln.Addr().String()); err == nil && port != "443" {
		host = net.JoinHostPort(host, port)
	}
	return "https://" + host
}

// Settle runs the single host's start-up reconcile once (Serve calls it
// too): rows a crash left in a transitional state are settled at once, not
// after the reconciler's grace. It treats every transitional row as
// stale, so it must finish before anything of this process creates,
// pauses or resumes a sandbox (hearth dev calls it before its
// code-interpreter bake, whose brand-new "creating" row would otherwise be
// marked lost).
func (cp *ControlPlane) Settle(ctx context.Context) {
	cp.settle.Do(func() {
		if cp.rec == nil {
			return
		}
		if rep, err := cp.rec.Settle(ctx); err != nil {
			cp.log.Warn("start-up reconcile incomplete", "err", err)
		} else if len(rep.Actions) > 0 {
			cp.log.Info("start-up reconcile settled sandboxes", "actions", len(rep.Actions))
		}
	})
}

// Serve answers on ln (HTTPS when a certificate is configured, plus the
// redirect listener) and runs the background loops until ctx ends, then
// shuts down gracefully. It does not close the store (Close does).
func (cp *ControlPlane) Serve(ctx context.Context, ln net.Listener) error {
	newServer := func(h http.Handler) *http.Server {
		return httplimit.Defaults().Apply(&http.Server{
			Handler:     h,
			ErrorLog:    slog.NewLogLogger(cp.log.Handler(), slog.LevelWarn),
			BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		})
	}
	srv := newServer(cp.handler)
	servers := []*http.Server{srv}
	serveErr := make(chan error, 2)
	if cp.cfg.RedirectListen != "" {
		rln, err := net.Listen("tcp", cp.cfg.RedirectListen)
		if err != nil {
			return fmt.Errorf("--redirect-listen %s: %w", cp.cfg.RedirectListen, err)
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		rsrv := newServer(sitetls.RedirectHandler(port))
		servers = append(servers, rsrv)
		cp.log.Info("redirecting plain HTTP to HTTPS", "addr", rln.Addr().String())
		go func() { serveErr <- rsrv.Serve(rln) }()
	}
	cp.Settle(ctx)
	loopCtx, stopLoops := context.WithCancel(ctx)
	loopsDone := make(chan struct{})
	go func() {
		defer close(loopsDone)
		var loops sync.WaitGroup
		loops.Go(func() { cp.Service.NewReaper(cp.cfg.ReapEvery).Run(loopCtx) })
		loops.Go(func() { cp.Service.RunReclaimer(loopCtx, service.ReclaimEvery) })
		if cp.Fleet != nil {
			loops.Go(func() { cp.Fleet.Run(loopCtx) })
		}
		if cp.rec != nil {
			loops.Go(func() { cp.rec.Run(loopCtx, reconcileEvery) })
		}
		loops.Wait()
	}()

	go func() {
		if cp.tls != nil {
			srv.TLSConfig = cp.tls.ServerConfig()
			serveErr <- srv.ServeTLS(ln, "", "") // certificates come from TLSConfig
			return
		}
		serveErr <- srv.Serve(ln)
	}()
	// Errors that are only "the server was shut down" are the normal end.
	var errs []error
	keep := func(err error) {
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	select {
	case err := <-serveErr:
		keep(err)
	case <-ctx.Done():
	}
	shCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	for _, s := range servers {
		keep(s.Shutdown(shCtx))
	}
	cancel()
	stopLoops()
	<-loopsDone
	return errors.Join(errs...)
}

// checkFront validates the listener settings: the certificate (see
// sitetls.Check), the trusted proxies, and warns when a real domain is
// served in plain HTTP on a non-loopback address with no proxy in front
// (the 1.x E2B SDKs speak only https://api.<domain>).
func checkFront(cfg config.Config, log *slog.Logger) (*sitetls.Reloader, forwarded.Trusted, error) {
	trusted, err := forwarded.Parse(cfg.TrustedProxies)
	if err != nil {
		return nil, trusted, err
	}
	if cfg.TLSCert == "" && cfg.TLSKey == "" {
		if cfg.RedirectListen != "" {
			return nil, trusted, errors.New("--redirect-listen redirects to HTTPS: it needs --tls-cert and --tls-key")
		}
		if cfg.Domain != "" && cfg.Domain != "localhost" && trusted.Empty() && !loopbackListen(cfg.Listen) {
			log.Warn("serving --domain "+cfg.Domain+" over plain HTTP on a non-loopback address: SDKs expect https://api."+cfg.Domain+
				"; give --tls-cert/--tls-key, or put a TLS proxy in front and name it with --trusted-proxy", "listen", cfg.Listen)
		}
		return nil, trusted, nil
	}
	if cfg.Domain == "" {
		return nil, trusted, errors.New("--tls-cert needs --domain (the certificate is checked against it)")
	}
	site, err := sitetls.Load(sitetls.Options{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, Domain: cfg.Domain, Logger: log})
	return site, trusted, err
}

func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Close releases the store.
func (cp *ControlPlane) Close() error { return cp.Store.Close() }

// OpenStore opens the configured store, generating the sealing key into the
// data dir when none is configured.
func OpenStore(ctx context.Context, cfg config.Config, log *slog.Logger) (*store.DB, error) {
	var sealKey []byte
	var err error
	if cfg.SealKey != "" {
		sealKey, err = config.DecodeKey("--seal-key", cfg.SealKey, 32)
	} else {
		sealKey, err = config.EnsureSecret(cfg.DataDir, "seal.key", 32)
	}
	if err != nil {
		return nil, err
	}
	sealer, err := store.NewAESSealer(sealKey)
	if err != nil {
		return nil, err
	}
	opts := store.Options{DSN: cfg.DatabaseURL, Sealer: sealer, Logger: log}
	if opts.DSN == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		opts.DSN = filepath.Join(cfg.DataDir, "hearth.db")
	}
	db, err := store.Open(ctx, opts)
	if err != nil {
		return nil, err
	}
	log.Info("store open", "driver", db.Driver(), "dsn", RedactDSN(opts.DSN))
	return db, nil
}

// RedactDSN hides a password in a postgres URL for logs.
func RedactDSN(dsn string) string {
	if !store.IsPostgresURL(dsn) {
		return dsn
	}
	if at := strings.LastIndex(dsn, "@"); at > 0 {
		if colon := strings.Index(dsn[strings.Index(dsn, "//")+2:at], ":"); colon >= 0 {
			start := strings.Index(dsn, "//") + 2 + colon + 1
			return dsn[:start] + "xxxxx" + dsn[at:]
		}
	}
	return dsn
}

// DefaultPlatformTemplates are the images `hearth image build` makes; their
// template ID is the image name on the hosts.
func DefaultPlatformTemplates() []store.Template {
	return []store.Template{
		{ID: "base", Name: "base", Kind: sandbox.KindBase, VCPUs: 2, MemoryMB: 512, DiskSizeMB: sandbox.DefaultDiskSizeMB},
		{ID: "tiny", Name: "tiny", Kind: sandbox.KindBase, VCPUs: 1, MemoryMB: 256, DiskSizeMB: sandbox.DefaultDiskSizeMB},
	}
}

// EnsurePlatformTemplates creates the platform templates that are missing;
// existing ones are left as they are (an operator may have tuned them).
func EnsurePlatformTemplates(ctx context.Context, db *store.DB, templates []store.Template) error {
	for _, t := range templates {
		_, err := db.GetTemplateByTeam(ctx, store.PlatformTeamID, t.Name)
		if err == nil {
			continue
		}
		if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("look up platform template %s: %w", t.Name, err)
		}
		if _, err := db.UpsertPlatformTemplate(ctx, t); err != nil {
			return fmt.Errorf("create platform template %s: %w", t.Name, err)
		}
	}
	return nil
}

// RegisterHost records a host agent in the hosts table (for operators and
// placement). An unreachable agent is not fatal: it may start after the
// control plane.
func RegisterHost(ctx context.Context, db *store.DB, id, address string, c service.HostClient, log *slog.Logger) {
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	h := store.Host{ID: id, Name: id, Address: address, Status: store.HostUnreachable}
	if info, err := c.Ping(pctx); err != nil {
		log.Warn("host agent not reachable yet", "url", address, "err", err)
	} else {
		h.Status, h.VCPUs, h.MemoryMB, h.DiskMB, h.SandboxCount = store.HostReady, info.VCPUs, info.MemoryMB, info.DiskMB, info.SandboxCount
		h.LastHeartbeat = time.Now()
		log.Info("host agent reachable", "url", address, "driver", info.Driver, "vcpus", info.VCPUs, "memory_mb", info.MemoryMB)
	}
	if _, err := db.UpsertHost(ctx, h); err != nil {
		log.Warn("record host", "err", err)
	}
}
