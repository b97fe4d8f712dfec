package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/cgroup"
	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/envdclient"
	"github.com/hearth-sandbox/hearth/internal/image"
	"github.com/hearth-sandbox/hearth/internal/netns"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
	"github.com/hearth-sandbox/hearth/internal/sandboxsnap"
	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/auto"
)

// netIdentity derives a network object prefix ("h" + 4 hex digits + "-")
// and the /16 address pools inside 10.128.0.0/10 an agent may take, in
// order of preference, from the data dir: two agents with different data
// dirs prefer different pools (1 in 64 share one), and netns.PickPool
// skips a pool another agent on the host already routes.
func netIdentity(dataDir string) (string, []netip.Prefix) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(abs))
	prefix := fmt.Sprintf("h%02x%02x-", sum[0], sum[1])
	pools := make([]netip.Prefix, 64)
	for i := range pools {
		pools[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128 + byte((int(sum[2])+i)%64), 0, 0}), 16)
	}
	return prefix, pools
}

// wire fills in the components Options left nil with the real ones.
func (a *Agent) wire(ctx context.Context) error {
	o := &a.opts
	if o.Images == nil {
		o.Images = newDirImages(o.DataDir)
	}
	if o.Driver == nil {
		d, _, err := auto.New(auto.Options{
			KernelPath: image.KernelPath(o.DataDir), Prefer: o.VMM, Logger: o.Logger,
			FirecrackerJailer: o.Firecracker.Jailer, FirecrackerChrootBase: o.Firecracker.ChrootBase,
			FirecrackerAllowRoot: o.Firecracker.AllowRoot,
		}).Select(ctx)
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		o.Driver = d
	}
	prefix, pools := netIdentity(o.DataDir)
	if o.NetnsPrefix != "" {
		prefix = o.NetnsPrefix
	}
	if o.Cgroups == nil {
		// One directory per agent, named like its network objects.
		if cg, err := cgroup.New("", "hearth-"+strings.TrimSuffix(prefix, "-")); err != nil {
			o.Logger.Warn("agent: sandboxes run without cgroup limits", "err", err)
		} else {
			o.Cgroups = cg
			a.closers = append(a.closers, cg.Close)
		}
	}
	switch {
	case o.VMMUIDBase == 0:
		o.VMMUIDBase = DefaultVMMUIDBase
	case o.VMMUIDBase < 0:
		o.VMMUIDBase = 0
	}
	if o.Net == nil {
		pool := o.NetPool
		if !pool.IsValid() {
			var err error
			if pool, err = netns.PickPool(pools, prefix); err != nil {
				return fmt.Errorf("agent: network: %w", err)
			}
		}
		nm, err := netns.NewManager(ctx, netns.Config{Prefix: prefix, Pool: pool, OpenPrivate: o.EgressAllowPrivate, Logger: o.Logger})
		if err != nil {
			return fmt.Errorf("agent: network: %w", err)
		}
		o.Net = netAdapter{nm}
	}
	if o.Disks == nil {
		var (
			b   rootfs.Backend
			err error
		)
		if o.RootfsBackend != "" {
			b, err = rootfs.New(ctx, o.RootfsBackend, o.DataDir, o.Logger)
		} else {
			b, err = rootfs.Select(ctx, o.DataDir, o.Logger)
		}
		if err != nil {
			return fmt.Errorf("agent: root disks: %w", err)
		}
		// The reflink backend's xfs pool is unmounted (loop device
		// detached) at shutdown; it refuses while a VMM still uses a disk.
		if c, ok := b.(io.Closer); ok {
			a.closers = append(a.closers, c.Close)
		}
		o.Disks = diskAdapter{Backend: b, dataDir: o.DataDir}
		if o.EnsureImageSizes == nil {
			imagesDir := filepath.Join(o.DataDir, "images")
			o.EnsureImageSizes = func(ctx context.Context, minBytes int64) error {
				return rootfs.EnsureImageSizes(ctx, imagesDir, minBytes)
			}
		}
	}
	if o.Snapshots == nil {
		// Every driver that can snapshot and restore gets
		// pause/resume/templates.
		if d, ok := o.Driver.(sandboxsnap.Driver); ok && d.Capabilities().Memory != vmm.MemoryNoSnapshot {
			so := sandboxsnap.Options{Driver: d, DataDir: o.DataDir, Logger: o.Logger}
			if crash := a.crashFunc(); crash != nil {
				so.Crash = func(step string) { crash("snapshot:" + step) }
			}
			s, err := sandboxsnap.New(so)
			if err != nil {
				return fmt.Errorf("agent: snapshots: %w", err)
			}
			o.Snapshots = s
			a.closers = append(a.closers, s.Close)
		}
	}
	if o.Dial == nil {
		o.Dial = NewEnvdDialer(nil)
	}
	return nil
}

var (
	_ Snapshotter      = (*sandboxsnap.Snapshotter)(nil)
	_ Capturer         = (*sandboxsnap.Snapshotter)(nil)
	_ SnapshotRecovery = (*sandboxsnap.Snapshotter)(nil)
	_ NetAdopter       = netAdapter{}
	_ HTTPSRedirector  = netAdapter{}
)

// netAdapter adapts *netns.Manager to Network.
type netAdapter struct{ m *netns.Manager }

func (n netAdapter) Setup(ctx context.Context, id string, o NetOptions) (NetSlot, error) {
	s, err := n.m.Setup(ctx, id, netns.Options{Egress: o.Egress})
	if err != nil {
		return NetSlot{}, err
	}
	return NetSlot{Address: s.Address, TapName: s.TapName, NSPath: s.NamespacePath}, nil
}

func (n netAdapter) Teardown(ctx context.Context, id string) error { return n.m.Teardown(ctx, id) }
func (n netAdapter) SetPolicy(ctx context.Context, id string, p egress.Policy) error {
	return n.m.SetPolicy(ctx, id, p)
}
func (n netAdapter) CleanupStale(ctx context.Context) error { return n.m.CleanupStale(ctx) }
func (n netAdapter) RedirectHTTPS(ctx context.Context, id string) error {
	return n.m.RedirectHTTPS(ctx, id)
}

func (n netAdapter) Adopt(ctx context.Context, id string, memberPID int) (NetSlot, error) {
	s, err := n.m.Adopt(ctx, id, memberPID)
	if err != nil {
		return NetSlot{}, err
	}
	return NetSlot{Address: s.Address, TapName: s.TapName, NSPath: s.NamespacePath}, nil
}

// diskAdapter adds the package-level stale cleanup to a rootfs backend.
type diskAdapter struct {
	rootfs.Backend
	dataDir string
}

func (d diskAdapter) CleanupStale(ctx context.Context, live map[string]bool) error {
	return rootfs.CleanupStale(ctx, d.dataDir, live)
}

// The variant cache of the wrapped backend (the adapter hides its methods).
var _ rootfs.VariantPruner = diskAdapter{}

func (d diskAdapter) PruneVariants(ctx context.Context, keepBases []string) ([]string, error) {
	if p, ok := d.Backend.(rootfs.VariantPruner); ok {
		return p.PruneVariants(ctx, keepBases)
	}
	return nil, nil
}

func (d diskAdapter) DropVariants(ctx context.Context, base string) ([]string, error) {
	if p, ok := d.Backend.(rootfs.VariantPruner); ok {
		return p.DropVariants(ctx, base)
	}
	return nil, nil
}

// NewEnvdDialer returns an EnvdDialer over envdclient. With hc nil every
// dialed sandbox gets its own connection pool: guest addresses are reused
// by later sandboxes, and a kept-alive connection to a destroyed guest
// would otherwise be handed to its successor (and reset). Those clients
// never use an HTTP proxy from the environment (guest addresses are local
// to this host). Health polling uses separate, unpooled connections whose
// dials give up after healthDial: while the guest's network is not up yet a
// SYN is silently dropped and the kernel would retry it only after a
// second, so short dials retried often find a freshly booted envd sooner.
func NewEnvdDialer(hc *http.Client) EnvdDialer {
	return func(baseURL, token string) Envd {
		if hc != nil {
			return envdAdapter{c: envdclient.New(baseURL, token, hc), health: envdclient.New(baseURL, token, hc)}
		}
		tr := &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 8,
			IdleConnTimeout:     90 * time.Second,
		}
		health := &http.Client{Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       (&net.Dialer{Timeout: healthDial}).DialContext,
			DisableKeepAlives: true,
		}}
		return envdAdapter{
			c:      envdclient.New(baseURL, token, &http.Client{Transport: tr}),
			health: envdclient.New(baseURL, token, health),
			pool:   tr,
		}
	}
}

// healthDial bounds one TCP connect of health polling (see NewEnvdDialer).
const healthDial = 200 * time.Millisecond

// envdAdapter adapts *envdclient.Client to Envd.
type envdAdapter struct {
	c, health *envdclient.Client
	pool      *http.Transport // owned; nil when the caller passed a client
}

// Close drops the sandbox's pooled connections (the guest is going away).
func (e envdAdapter) Close() error {
	if e.pool != nil {
		e.pool.CloseIdleConnections()
	}
	return nil
}

func (e envdAdapter) Health(ctx context.Context) error {
	_, err := e.health.Health(ctx)
	return err
}

func (e envdAdapter) Init(ctx context.Context, in EnvdInit) error {
	now := in.Now
	return e.c.Init(ctx, envdclient.InitRequest{
		EnvVars:        in.EnvVars,
		AccessToken:    in.AccessToken,
		DefaultUser:    in.DefaultUser,
		DefaultWorkdir: in.DefaultDir,
		Timestamp:      &now,
	}, in.CurrentToken)
}

func (e envdAdapter) Exec(ctx context.Context, req ExecSpec, out func(Stream, []byte) error) (ExitInfo, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu     sync.Mutex
		outErr error
	)
	emit := func(s Stream) func([]byte) {
		return func(p []byte) {
			mu.Lock()
			defer mu.Unlock()
			if outErr != nil {
				return
			}
			if err := out(s, p); err != nil {
				outErr = err
				cancel(err) // the receiver is gone: stop the process stream
			}
		}
	}
	res, err := e.c.ExecStream(ctx, envdclient.ExecRequest{
		Cmd: req.Cmd, Args: req.Args, Env: req.Env, Cwd: req.Cwd, User: req.User, Timeout: req.Timeout,
	}, envdclient.StreamHandlers{OnStdout: emit(Stdout), OnStderr: emit(Stderr)})
	mu.Lock()
	defer mu.Unlock()
	if outErr != nil {
		return ExitInfo{}, outErr
	}
	if err != nil {
		return ExitInfo{}, envdErr(err)
	}
	info := ExitInfo{Code: res.ExitCode}
	if res.ExitCode < 0 {
		info.Error = res.Status
	}
	return info, nil
}

// ReadFile reads as envd's default user: envdclient's file calls do not
// select a user.
func (e envdAdapter) ReadFile(ctx context.Context, path, _ string) (io.ReadCloser, error) {
	rc, err := e.c.ReadFile(ctx, path)
	if err != nil {
		return nil, envdErr(err)
	}
	return rc, nil
}

func (e envdAdapter) WriteFile(ctx context.Context, path, _ string, r io.Reader) error {
	return envdErr(e.c.WriteFile(ctx, path, r))
}

// envdErr classifies envd's REST answers for the RPC layer.
func envdErr(err error) error {
	var ee *envdclient.Error
	if !errors.As(err, &ee) {
		return err
	}
	switch ee.Status {
	case http.StatusNotFound:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case http.StatusBadRequest:
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return err
}
