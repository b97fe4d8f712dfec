package agent

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	hostagentv1 "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
	"github.com/hearth-sandbox/hearth/gen/hostagent/v1/hostagentv1connect"
	"github.com/hearth-sandbox/hearth/internal/hostwire"
	"github.com/hearth-sandbox/hearth/internal/httplimit"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// Options configure an Agent. Nil components are built from the data dir
// and by probing the host (see wire.go); tests pass their own.
type Options struct {
	DataDir string
	HostID  string // default: the host name
	// Token, when set, is required in the hostwire.TokenHeader of every request.
	Token string
	// Limits bound unary RPCs (read and write deadlines per request);
	// streaming RPCs and proxied sandbox traffic are exempt. Zero:
	// httplimit.Defaults().
	Limits httplimit.Limits

	// Firecracker configures its jailer when the Firecracker driver is
	// selected (probing).
	Firecracker FirecrackerJail
	// VMM restricts driver selection ("firecracker", "qemu-kvm",
	// "qemu-tcg", "qemu"); empty: the first that probes OK.
	VMM string
	// RootfsBackend forces a root-disk backend ("devicemapper", "reflink",
	// "qcow2", "copy"); empty: rootfs.Select decides.
	RootfsBackend string
	// NetnsPrefix names this agent's network namespaces, links and
	// iptables chains, and NetPool is the range its slots' host-reachable
	// addresses come from. Empty: both derived from DataDir, so agents (or
	// `hearth dev`s) with different data dirs on one machine never touch
	// each other's objects, and a restarted agent finds its own again.
	NetnsPrefix string
	NetPool     netip.Prefix
	// EgressAllowPrivate opens ranges that sandboxes never reach by
	// default (egress.Closed: private, link-local, ...) to every sandbox
	// of this host, subject to each sandbox's own policy.
	EgressAllowPrivate []netip.Prefix
	// Cgroups puts each VMM in its own cgroup; nil: wire.go makes one
	// below the agent's cgroup (named after the network prefix) when the
	// host allows, else VMMs run without limits (logged).
	Cgroups Cgroups
	// VMMUIDBase: VMMs run as uid/gid base+n, one per sandbox (QEMU; see
	// DefaultVMMUIDBase, the default). Negative: as the agent (root).
	VMMUIDBase int
	// EgressRoots verifies the servers the egress proxy forwards rule
	// requests to; nil: the host's roots (SSL_CERT_FILE, SSL_CERT_DIR).
	EgressRoots *x509.CertPool

	Driver           vmm.Driver
	Disks            rootfs.Backend
	Net              Network
	Images           Images
	Dial             EnvdDialer
	Snapshots        Snapshotter
	EnsureImageSizes ImageSizer

	BootTimeout time.Duration
	// BuildCacheBytes caps the template build step cache (0: the default).
	BuildCacheBytes int64
	// CrashAt names a lifecycle step (one of CrashSteps) at which the
	// process kills itself with SIGKILL: crash tests drive a real agent
	// into each half-done state. Empty in production.
	CrashAt string
	Logger  *slog.Logger
}

// Agent is one host's agent: the Manager plus its RPC and proxy surface.
type Agent struct {
	opts Options
	mgr  *Manager
	// pools hold the sandbox-traffic connections, one pool per sandbox.
	pools *hostwire.SandboxTransports
	log   *slog.Logger

	closeOnce sync.Once
	closeErr  error
	closers   []func() error // components wire.go built, closed last
}

// FirecrackerJail configures Firecracker's jailer (vmm/firecracker).
type FirecrackerJail struct {
	Jailer     string // jailer binary; empty: "jailer" from PATH
	ChrootBase string // --chroot-base-dir on the root disks' file system; empty: at its top
	AllowRoot  bool   // run Firecracker as root when there is no jailer
}

// New wires the components, cleans up after a crashed agent and returns a
// ready agent. Close (or Shutdown) releases it.
func New(ctx context.Context, opts Options) (*Agent, error) {
	if opts.DataDir == "" {
		return nil, errors.New("agent: DataDir is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Limits == (httplimit.Limits{}) {
		opts.Limits = httplimit.Defaults()
	}
	if opts.HostID == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("agent: host id: %w", err)
		}
		opts.HostID = h
	}
	a := &Agent{opts: opts, log: opts.Logger.With("component", "agent"), pools: hostwire.NewSandboxTransports()}
	if err := a.wire(ctx); err != nil {
		a.runClosers()
		return nil, err
	}
	mgr, err := NewManager(ctx, Deps{
		DataDir:          a.opts.DataDir,
		Driver:           a.opts.Driver,
		Disks:            a.opts.Disks,
		Net:              a.opts.Net,
		Images:           a.opts.Images,
		Dial:             a.opts.Dial,
		Snapshots:        a.opts.Snapshots,
		EnsureImageSizes: a.opts.EnsureImageSizes,
		BootTimeout:      a.opts.BootTimeout,
		BuildCacheBytes:  a.opts.BuildCacheBytes,
		Crash:            a.crashFunc(),
		Cgroups:          a.opts.Cgroups,
		VMMUIDBase:       a.opts.VMMUIDBase,
		EgressRoots:      a.opts.EgressRoots,
		Log:              a.log,
	})
	if err != nil {
		a.runClosers()
		return nil, err
	}
	a.mgr = mgr
	a.log.Info("agent ready", "host", a.opts.HostID, "driver", a.opts.Driver.Name(),
		"rootfs", a.opts.Disks.Name(), "data_dir", a.opts.DataDir, "sandboxes", len(mgr.List()))
	return a, nil
}

// Manager exposes the sandbox manager (for `hearth dev` and tests).
func (a *Agent) Manager() *Manager { return a.mgr }

// Handler serves the RPC service and the sandbox proxy (see package doc).
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	path, h := hostagentv1connect.NewHostAgentServiceHandler(&rpcServer{a: a})
	mux.Handle(path, h)
	mux.Handle("/sandboxes/{id}/proxy/{port}/", a.pathProxy())
	var root http.Handler = headerRouted(a.headerProxy(), mux)
	root = a.opts.Limits.Handler(requestKind(), root)
	if a.opts.Token != "" {
		root = requireToken(a.opts.Token, root)
	}
	return root
}

// SandboxAddr returns the host-reachable IP of a running sandbox's guest.
func (a *Agent) SandboxAddr(id string) (string, error) { return a.mgr.SandboxAddr(id) }

// SandboxRoute returns a running sandbox's guest address and the
// connection pool for its current network slot.
func (a *Agent) SandboxRoute(id string) (GuestRoute, error) { return a.mgr.SandboxRoute(id) }

// Shutdown stops accepting creates and stops (or, with a Snapshotter,
// pauses) every sandbox, then releases the agent's components.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.closeOnce.Do(func() {
		err := a.mgr.Shutdown(ctx)
		a.closeErr = errors.Join(err, a.runClosers())
		a.log.Info("agent stopped", "err", a.closeErr)
	})
	return a.closeErr
}

// Close is Shutdown with a 60 s bound.
func (a *Agent) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return a.Shutdown(ctx)
}

func (a *Agent) runClosers() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	a.closers = nil
	return errors.Join(errs...)
}

func requireToken(token string, next http.Handler) http.Handler {
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(hostwire.TokenHeader)), want) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// NewHTTPServer returns a server for the agent's Handler speaking HTTP/1.1
// and cleartext HTTP/2 (h2c: gRPC clients and many concurrent streams over
// one connection), with httplimit's header and idle timeouts; the Handler
// itself bounds each unary RPC.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return httplimit.Defaults().Apply(&http.Server{Addr: addr, Handler: h, Protocols: &p})
}

// requestKind exempts the service's streaming RPCs (exec, file transfers,
// template build, export and import) and proxied sandbox traffic from the
// per-request deadlines. Both reach the agent only with its token, which
// is checked before any body is read.
func requestKind() func(*http.Request) httplimit.Kind {
	streaming := httplimit.StreamingRPCs(hostagentv1.File_hostagent_v1_hostagent_proto.Services().ByName("HostAgentService"))
	return func(r *http.Request) httplimit.Kind {
		if streaming(r) || r.Header.Get(hostwire.HeaderSandboxID) != "" || strings.HasPrefix(r.URL.Path, "/sandboxes/") {
			return httplimit.Stream
		}
		return httplimit.Bounded
	}
}

// crashFunc returns the Deps.Crash of Options.CrashAt (nil when unset).
func (a *Agent) crashFunc() func(step string) {
	at := a.opts.CrashAt
	if at == "" {
		return nil
	}
	return func(step string) {
		if step != at {
			return
		}
		a.log.Warn("crash test: killing the process", "step", step)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns: the signal is on its way
	}
}
