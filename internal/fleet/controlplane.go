// Package fleet wires hearth's multi-host parts into the two sides that use
// them, so `hearth server`, `hearth agent` and the tests build them one way:
//
//   - ControlPlaneSide (NewControlPlane): the CA (created in the data dir on
//     first start), the control plane's own certificate (rotated), the host
//     registration server (hostreg, mounted at /v1/hosts/), the Monitor that
//     marks silent hosts unreachable, the scheduler's Pool (service.HostPool)
//     dialling agents over mutual TLS, and the Reconciler.
//   - AgentSide (JoinAgent): an agent's identity (registered with a one-time
//     token on first start, kept in the data dir), the TLS config of its RPC
//     listener (only the control plane may call), certificate renewal and
//     heartbeats.
//
// The parts themselves live in internal/pki, internal/hostreg,
// internal/scheduler and internal/reconciler; this package only assembles
// them and owns the loops' lifetimes.
package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/agentclient"
	"github.com/hearth-sandbox/hearth/internal/hostreg"
	"github.com/hearth-sandbox/hearth/internal/pki"
	"github.com/hearth-sandbox/hearth/internal/proxy"
	"github.com/hearth-sandbox/hearth/internal/reconciler"
	"github.com/hearth-sandbox/hearth/internal/scheduler"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// DefaultHeartbeatInterval is how often agents report, unless configured.
const DefaultHeartbeatInterval = 10 * time.Second

// HostHeader names the host a proxied request is for (set by ProxyRoute,
// consumed and removed by ProxyTransport, never sent to the agent).
const HostHeader = "Hearth-Fleet-Host"

// Store is what the control plane side reads and writes; *store.DB
// implements it.
type Store interface {
	hostreg.Store
	reconciler.Store
	MarkHostUnreachable(ctx context.Context, id string, olderThan time.Time) (store.Host, error)
	DeleteHost(ctx context.Context, id string) error
}

var _ Store = (*store.DB)(nil)

// Options configure NewControlPlane. Zero values take the defaults.
type Options struct {
	// DataDir holds the CA in DataDir/ca (ca.crt, ca.key 0600).
	DataDir string
	Store   Store
	Logger  *slog.Logger
	// HeartbeatInterval is the agents' interval (they are started with the
	// same value); default DefaultHeartbeatInterval. It sets the defaults
	// of Window and MonitorInterval.
	HeartbeatInterval time.Duration
	// Window: a host silent this long is marked unreachable (default 3
	// heartbeat intervals). Loss is detected within Window+MonitorInterval.
	Window time.Duration
	// MonitorInterval between monitor passes (default Window/4).
	MonitorInterval time.Duration
	// ReconcileInterval between reconciler passes (default 30 s). A host
	// that comes back (first heartbeat after being unreachable, or first
	// since this process started) triggers a pass at once.
	ReconcileInterval time.Duration
	// ReconcileGrace: see reconciler.Reconciler.Grace (default 2 min).
	ReconcileGrace time.Duration
	Policy         scheduler.Policy
	// CertTTL of agent certificates (default pki.DefaultCertLifetime);
	// agents renew at two thirds of it.
	CertTTL time.Duration
	// TokenTTL: default lifetime of registration tokens (default 24 h).
	TokenTTL time.Duration
	// DialTimeout bounds TCP+TLS connection set-up to an agent (default 5 s).
	DialTimeout time.Duration
}

// ControlPlaneSide is the control plane's half of the fleet.
type ControlPlaneSide struct {
	opts   Options
	log    *slog.Logger
	ca     *pki.CA
	keeper *pki.Keeper
	reg    *hostreg.Server
	pool   *scheduler.Pool
	mon    *hostreg.Monitor
	rec    *reconciler.Reconciler
	nudge  chan struct{} // a host came back: reconcile now

	// hostMu orders this process's writes of host rows that the operator
	// and the agents both make: drain/undrain/remove here, heartbeats in
	// the registration server (through hostGuard). See hostGuard.
	hostMu sync.Mutex

	mu       sync.Mutex
	rpc      map[string]*http.Transport // host ID → HTTP/2 transport for RPCs
	proxy    map[string]*http.Transport // host ID → HTTP/1.1 transport for sandbox traffic
	lastBeat map[string]time.Time       // host ID → last heartbeat this process accepted
}

var (
	_ service.HostPool = (*scheduler.Pool)(nil)
	_ reconciler.Hosts = (*scheduler.Pool)(nil)
)

// NewControlPlane loads or creates the CA in DataDir/ca and builds the
// control plane's side. Nothing runs until Run.
func NewControlPlane(ctx context.Context, o Options) (*ControlPlaneSide, error) {
	if o.Store == nil {
		return nil, errors.New("fleet: Store is required")
	}
	if o.DataDir == "" {
		return nil, errors.New("fleet: DataDir is required (the CA lives there)")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.Window <= 0 {
		o.Window = 3 * o.HeartbeatInterval
	}
	if o.ReconcileInterval <= 0 {
		o.ReconcileInterval = 30 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(o.DataDir, "ca"))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	cert, err := issueControlPlane(ca)
	if err != nil {
		return nil, err
	}
	c := &ControlPlaneSide{
		opts: o, log: o.Logger, ca: ca, keeper: pki.NewKeeper(cert),
		nudge: make(chan struct{}, 1),
		rpc:   map[string]*http.Transport{}, proxy: map[string]*http.Transport{},
		lastBeat: map[string]time.Time{},
	}
	c.reg = hostreg.NewServer(hostGuard{Store: o.Store, c: c}, ca, hostreg.Options{
		CertTTL: o.CertTTL, TokenTTL: o.TokenTTL, Logger: o.Logger, OnHeartbeat: c.onHeartbeat,
	})
	c.pool = scheduler.NewPool(o.Store, c.client, o.Policy)
	c.mon = &hostreg.Monitor{Store: casMonitorStore{Store: o.Store, window: o.Window}, Window: o.Window, Logger: o.Logger}
	c.rec = &reconciler.Reconciler{Store: o.Store, Hosts: c.pool, Grace: o.ReconcileGrace, Logger: o.Logger}
	return c, nil
}

func issueControlPlane(ca *pki.CA) (*tls.Certificate, error) {
	certPEM, keyPEM, err := ca.IssueControlPlane(0)
	if err != nil {
		return nil, fmt.Errorf("fleet: control plane certificate: %w", err)
	}
	return pki.KeyPair(certPEM, keyPEM)
}

// CAFingerprint is the CA's pin ("sha256:<hex>") that agents pass as
// --ca-fingerprint.
func (c *ControlPlaneSide) CAFingerprint() string { return c.ca.Fingerprint() }

// CA returns the fleet's certificate authority.
func (c *ControlPlaneSide) CA() *pki.CA { return c.ca }

// Pool places sandboxes on the registered hosts and dials them over mTLS.
func (c *ControlPlaneSide) Pool() service.HostPool { return c.pool }

// Handler serves the agents' routes; mount it at /v1/hosts/ outside user
// authentication (agents authenticate with their certificates).
func (c *ControlPlaneSide) Handler() http.Handler { return c.reg.Handler() }

// CreateToken makes a one-time registration token (ttl 0: Options.TokenTTL).
func (c *ControlPlaneSide) CreateToken(ctx context.Context, ttl time.Duration) (string, time.Time, error) {
	return c.reg.CreateToken(ctx, ttl)
}

// CreateHostToken is CreateToken under the name api.HostAdmin uses.
func (c *ControlPlaneSide) CreateHostToken(ctx context.Context, ttl time.Duration) (string, time.Time, error) {
	return c.CreateToken(ctx, ttl)
}

// ListHosts lists the registered hosts (for api.HostAdmin).
func (c *ControlPlaneSide) ListHosts(ctx context.Context) ([]store.Host, error) {
	return c.opts.Store.ListHosts(ctx)
}

// ListSandboxesByHost lists the sandboxes placed on a host (for api.HostAdmin).
func (c *ControlPlaneSide) ListSandboxesByHost(ctx context.Context, hostID string) ([]store.Sandbox, error) {
	return c.opts.Store.ListSandboxesByHost(ctx, hostID)
}

// DeleteHost forgets a host: its row, cached client and transports. Its
// certificate stays valid until it expires, but it names a host the
// control plane no longer knows, so heartbeats and renewals are refused.
// It does not look at the host's sandboxes: RemoveHost is the operator's
// checked version.
func (c *ControlPlaneSide) DeleteHost(ctx context.Context, hostID string) error {
	c.hostMu.Lock()
	defer c.hostMu.Unlock()
	return c.deleteHostLocked(ctx, hostID)
}

func (c *ControlPlaneSide) deleteHostLocked(ctx context.Context, hostID string) error {
	if err := c.opts.Store.DeleteHost(ctx, hostID); err != nil {
		return err
	}
	c.pool.Forget(hostID)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range []map[string]*http.Transport{c.rpc, c.proxy} {
		if t := m[hostID]; t != nil {
			t.CloseIdleConnections()
			delete(m, hostID)
		}
	}
	delete(c.lastBeat, hostID)
	return nil
}

// Reconcile runs one reconciler pass now.
func (c *ControlPlaneSide) Reconcile(ctx context.Context) (reconciler.Report, error) {
	return c.rec.Reconcile(ctx)
}

// Run runs the monitor, the reconciler and the control plane certificate's
// rotation until ctx ends.
func (c *ControlPlaneSide) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.mon.Run(ctx, c.opts.MonitorInterval) })
	wg.Go(func() { c.reconcileLoop(ctx) })
	wg.Go(func() {
		c.keeper.RotateLoop(ctx, time.Hour, func(context.Context) (*tls.Certificate, error) {
			return issueControlPlane(c.ca)
		}, c.log)
	})
	wg.Wait()
}

func (c *ControlPlaneSide) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(c.opts.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.nudge:
		}
		rep, err := c.rec.Reconcile(ctx)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("reconcile pass", "err", err)
		}
		for _, a := range rep.Actions {
			c.log.Info("reconciled", "host", a.HostID, "sandbox", a.SandboxID, "action", a.Kind, "reason", a.Reason, "err", a.Err)
		}
	}
}

// onHeartbeat nudges the reconciler when a host is heard from for the
// first time after a silence longer than the window (it was, or is about
// to be, marked unreachable), or for the first time since this process
// started: sandboxes it lost while away are then settled in seconds, not
// at the next periodic pass. (The hook sees the row after the update, so
// the silence is measured here rather than read from the status.)
func (c *ControlPlaneSide) onHeartbeat(_ context.Context, h store.Host, _ hostreg.Heartbeat) {
	now := time.Now()
	c.mu.Lock()
	prev, seen := c.lastBeat[h.ID]
	c.lastBeat[h.ID] = now
	c.mu.Unlock()
	if seen && now.Sub(prev) <= c.opts.Window {
		return
	}
	select {
	case c.nudge <- struct{}{}:
	default:
	}
}

// client is the scheduler's ClientFactory: the agent's Connect client over
// the host's mTLS transport.
func (c *ControlPlaneSide) client(h store.Host) (service.HostClient, error) {
	if h.Address == "" {
		return nil, fmt.Errorf("fleet: host %s has no address", h.ID)
	}
	return agentclient.NewClient("https://"+h.Address, &http.Client{Transport: c.transport(h.ID, true)}), nil
}

// Transport returns the mTLS round tripper for talking to hostID's agent:
// it presents the control plane's (rotating) certificate and accepts only
// a certificate from this CA naming hostID, whatever address is dialled.
// It speaks HTTP/1.1, so WebSocket upgrades through the sandbox proxy work.
func (c *ControlPlaneSide) Transport(hostID string) http.RoundTripper {
	return c.transport(hostID, false)
}

func (c *ControlPlaneSide) transport(hostID string, h2 bool) *http.Transport {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.proxy
	if h2 {
		m = c.rpc
	}
	if t := m[hostID]; t != nil {
		return t
	}
	tc := pki.ControlPlaneClientTLS(c.keeper, c.ca.Pool(), hostID)
	if !h2 {
		tc.NextProtos = []string{"http/1.1"}
	}
	t := &http.Transport{
		Proxy:               nil, // agents are dialled directly, never through HTTP_PROXY
		DialContext:         (&net.Dialer{Timeout: c.opts.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: c.opts.DialTimeout,
		ForceAttemptHTTP2:   h2,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     90 * time.Second,
	}
	m[hostID] = t
	return t
}

// ProxyRoute routes sandbox traffic through the sandbox's host agent
// (https://<address>/sandboxes/{id}/proxy/{port}), tagging the request
// with the host for ProxyTransport: use the two together in proxy's
// StoreResolver.Route and Options.Transport.
func (c *ControlPlaneSide) ProxyRoute() proxy.RouteFunc {
	return func(_ context.Context, sb store.Sandbox, h store.Host, port int) (proxy.Target, error) {
		if h.Address == "" || strings.Contains(h.Address, "/") {
			return proxy.Target{}, fmt.Errorf("fleet: host %s: bad agent address %q", h.ID, h.Address)
		}
		u := &url.URL{Scheme: "https", Host: h.Address, Path: "/sandboxes/" + sb.ID + "/proxy/" + strconv.Itoa(port)}
		return proxy.Target{URL: u, Header: http.Header{HostHeader: {h.ID}}}, nil
	}
}

// ProxyTransport sends each request over the mTLS transport of the host
// named in its HostHeader (set by ProxyRoute), which it removes. Requests
// without one are refused: an unverified connection to an agent address is
// never made.
func (c *ControlPlaneSide) ProxyTransport() http.RoundTripper { return proxyTransport{c} }

type proxyTransport struct{ c *ControlPlaneSide }

func (p proxyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	id := r.Header.Get(HostHeader)
	if id == "" {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, errors.New("fleet: proxied request names no host")
	}
	r2 := r.Clone(r.Context())
	r2.Header.Del(HostHeader)
	return p.c.transport(id, false).RoundTrip(r2)
}

// casMonitorStore turns the Monitor's whole-row write of "unreachable"
// into the store's compare-and-set, so a heartbeat that lands between the
// Monitor's read and its write is never overwritten.
type casMonitorStore struct {
	Store
	window time.Duration
}

func (s casMonitorStore) UpsertHost(ctx context.Context, h store.Host) (store.Host, error) {
	if h.Status != store.HostUnreachable {
		return s.Store.UpsertHost(ctx, h)
	}
	out, err := s.Store.MarkHostUnreachable(ctx, h.ID, time.Now().Add(-s.window))
	if errors.Is(err, store.ErrNotFound) {
		return out, fmt.Errorf("host %s was heard from meanwhile; left ready: %w", h.ID, err)
	}
	return out, err
}
