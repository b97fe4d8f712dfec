package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/envd/initsecret"
	"github.com/hearth-sandbox/hearth/internal/pki"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

const (
	// MiB is the unit of disk_size_mb and memory_mb.
	MiB = 1 << 20
	// EnvdPort is where envd listens in every guest.
	EnvdPort = 49983

	// Guest network, identical in every sandbox so snapshots stay valid.
	GuestCIDR    = "169.254.0.21/30"
	GuestGateway = "169.254.0.22"
	GuestMAC     = "02:fc:00:00:00:05"
)

// Errors the RPC layer maps to codes (see connectErr). Wrapped with detail.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrInvalid       = errors.New("invalid argument")
	ErrUnimplemented = errors.New("not implemented on this host")
	ErrShuttingDown  = errors.New("agent is shutting down")
	// ErrInUse: the resource has dependants (a template with sandboxes).
	ErrInUse = errors.New("in use")
)

// Deps are the components the manager drives.
type Deps struct {
	DataDir   string
	Driver    vmm.Driver
	Disks     rootfs.Backend
	Net       Network
	Images    Images
	Dial      EnvdDialer
	Snapshots Snapshotter // optional (issue 4)
	// EgressRoots: Options.EgressRoots.
	EgressRoots *x509.CertPool
	// EnsureImageSizes grows base images at start-up; nil skips it.
	EnsureImageSizes ImageSizer
	// BuildCacheBytes caps the disk space of the template build step cache
	// (DATA/builds/cache), least recently used entries going first
	// (default DefaultBuildCacheBytes).
	BuildCacheBytes int64
	// BootTimeout bounds the wait for envd after the VM starts (default 90 s;
	// TCG boots take ~2 s alone but several at once on 2 cores take longer).
	BootTimeout time.Duration
	// CleanupTimeout bounds each unwind/destroy when the caller's ctx is
	// already cancelled (default 30 s).
	CleanupTimeout time.Duration
	// Crash, when set, is called at named steps of lifecycle operations
	// ("pause:started", ...; see crashSteps): crash tests kill the process
	// there. nil in production.
	Crash func(step string)
	// Cgroups, when set, gets a group per sandbox for its VMM; VMMUIDBase
	// > 0 runs VMMs unprivileged (see confine).
	Cgroups    Cgroups
	VMMUIDBase int
	Log        *slog.Logger
}

// Manager owns the sandboxes of this host: one state machine each.
type Manager struct {
	d   Deps
	log *slog.Logger

	// mu guards sandboxes and closed (the map only: never held across I/O).
	mu        sync.Mutex
	sandboxes map[string]*sandbox
	closed    bool
	// builds is read-held by each running template build; the step cache
	// is pruned only when it can be write-locked (no build reads it).
	builds   sync.RWMutex
	slotGens atomic.Uint64 // see sandbox.slotGen
	// caMu guards ca, the egress CA (egressrules.go), loaded on first use.
	caMu sync.Mutex
	ca   *pki.CA
}

var validID = regexp.MustCompile(`^[a-z0-9]{1,63}$`)

// validTemplate keeps template IDs usable as single path elements.
var validTemplate = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// NewManager prepares the data dir and cleans up after a crashed agent:
// stale network slots and loop devices, VMs of sandboxes that cannot be
// re-adopted. Base images are grown to the default disk size.
func NewManager(ctx context.Context, d Deps) (*Manager, error) {
	if d.DataDir == "" || d.Driver == nil || d.Disks == nil || d.Net == nil || d.Images == nil || d.Dial == nil {
		return nil, fmt.Errorf("agent: incomplete dependencies")
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.BootTimeout == 0 {
		d.BootTimeout = 90 * time.Second
	}
	if d.CleanupTimeout == 0 {
		d.CleanupTimeout = 30 * time.Second
	}
	if d.BuildCacheBytes == 0 {
		d.BuildCacheBytes = DefaultBuildCacheBytes
	}
	m := &Manager{d: d, log: d.Log, sandboxes: map[string]*sandbox{}}
	if err := os.MkdirAll(m.sandboxesDir(), 0o700); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := m.recover(ctx); err != nil {
		return nil, err
	}
	m.resumeShutdownPaused(ctx)
	return m, nil
}

func (m *Manager) sandboxesDir() string { return filepath.Join(m.d.DataDir, "sandboxes") }

func (m *Manager) runDir(id string) string { return filepath.Join(m.sandboxesDir(), id) }

// snapshotDir is where a paused sandbox's memory snapshot lives.
func snapshotDir(runDir string) string { return filepath.Join(runDir, "snapshot") }

// pruneVariants removes the root-disk backend's cached variants nothing
// needs any more: variants of deleted templates, of replaced or removed
// images. Kept: variants of the templates and images held here (current
// versions), and whatever a disk of a sandbox on this host (running,
// paused or in error) depends on, which the backend reads from the disks
// themselves. Runs after EnsureImageSizes, whose replaced images leave
// old versions behind. A failure is logged: it costs disk space, not
// correctness.
func (m *Manager) pruneVariants(ctx context.Context) {
	p, ok := m.d.Disks.(rootfs.VariantPruner)
	if !ok {
		return
	}
	keep := m.templateDisks()
	if l, ok := m.d.Images.(ImageLister); ok {
		keep = append(keep, l.BaseImages()...)
	}
	removed, err := p.PruneVariants(ctx, keep)
	if err != nil {
		m.log.Warn("prune root-disk variants", "err", err)
	}
	if len(removed) > 0 {
		m.log.Info("pruned unreferenced root-disk variants", "count", len(removed))
	}
}

func (m *Manager) get(id string) (*sandbox, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb, ok := m.sandboxes[id]
	if !ok {
		return nil, fmt.Errorf("sandbox %s: %w", id, ErrNotFound)
	}
	return sb, nil
}

// forget drops sb from the map (only if it is still the entry for its ID).
func (m *Manager) forget(sb *sandbox) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sandboxes[sb.spec.ID] == sb {
		delete(m.sandboxes, sb.spec.ID)
	}
}

func (s *Spec) normalize() error {
	if s.TemplateKind == "" {
		s.TemplateKind = sbx.KindBase
	}
	shape := sbx.Shape{VCPUs: s.VCPUs, MemoryMB: s.MemoryMB, DiskSizeMB: s.DiskSizeMB}.WithDefaults()
	s.DiskSizeMB = shape.DiskSizeMB
	bad := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case !validID.MatchString(s.ID):
		return bad("sandbox_id", "%q: want 1-63 lowercase letters and digits", s.ID)
	case !validTemplate.MatchString(s.TemplateID):
		return bad("template_id", "%q: want letters, digits, '.', '_', '-'", s.TemplateID)
	case !s.TemplateKind.Valid():
		return bad("template_kind", "%q", s.TemplateKind)
	case s.AccessToken == "":
		return bad("access_token", "is required")
	}
	if err := egress.ValidateRules(s.EgressRules); err != nil {
		return bad("egress_rules", "%v", err)
	}
	// Looser than the control plane's (sandbox.HostLimits).
	var fe *sbx.FieldError
	if err := shape.Validate(sbx.HostLimits()); errors.As(err, &fe) {
		return bad(fe.Field, "%s", fe.Msg)
	}
	return nil
}

// Create boots a sandbox and returns once envd is initialised. A retry with
// the same spec returns the existing sandbox; any failure unwinds every
// resource created so far.
func (m *Manager) Create(ctx context.Context, spec Spec) (Info, error) {
	if err := spec.normalize(); err != nil {
		return Info{}, err
	}
	if err := m.checkVolumes(spec); err != nil {
		return Info{}, err
	}
	var tpl *templateMeta
	if spec.TemplateKind == sbx.KindSnapshot {
		t, err := m.checkTemplate(&spec)
		if err != nil {
			return Info{}, err
		}
		tpl = &t
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Info{}, ErrShuttingDown
	}
	if sb, ok := m.sandboxes[spec.ID]; ok {
		m.mu.Unlock()
		return m.existing(ctx, sb, spec)
	}
	sb := newSandbox(spec, m.runDir(spec.ID), m.log)
	sb.op <- struct{}{} // uncontended: nobody else can see sb yet
	m.sandboxes[spec.ID] = sb
	m.mu.Unlock()
	defer sb.unlock()

	sb.log.Info("sandbox state", "from", "", "to", sbx.StateCreating, "template", spec.TemplateID,
		"vcpus", spec.VCPUs, "memory_mb", spec.MemoryMB, "disk_size_mb", spec.DiskSizeMB)
	var err error
	if tpl != nil {
		err = m.spawn(ctx, sb, *tpl)
	} else {
		err = m.boot(ctx, sb)
	}
	if err != nil {
		sb.fail(err)
		m.unwind(ctx, sb)
		return Info{}, fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	if err := sb.transition(sbx.StateRunning, sbx.StateCreating); err != nil {
		return Info{}, err
	}
	m.saveMeta(sb)
	return sb.info(), nil
}

// existing answers a create for an ID that is already known.
func (m *Manager) existing(ctx context.Context, sb *sandbox, spec Spec) (Info, error) {
	if !sb.spec.sameRequest(spec) {
		return Info{}, fmt.Errorf("sandbox %s: %w with other parameters", spec.ID, ErrAlreadyExists)
	}
	// Wait for an in-flight create to finish, then report its outcome.
	if err := sb.lock(ctx); err != nil {
		return Info{}, err
	}
	sb.unlock()
	in := sb.info()
	if in.State != sbx.StateRunning {
		return in, &sbx.ErrTransition{ID: spec.ID, From: in.State, To: sbx.StateRunning}
	}
	return in, nil
}

// unwind removes what a failed create made; with a clean unwind the
// sandbox disappears, otherwise it stays in error for destroy to retry.
func (m *Manager) unwind(ctx context.Context, sb *sandbox) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.d.CleanupTimeout)
	defer cancel()
	if err := sb.transition(sbx.StateStopping, sbx.StateError); err != nil {
		sb.log.Error("unwind", "err", err)
		return
	}
	if err := m.cleanup(cctx, sb); err != nil {
		sb.fail(fmt.Errorf("unwind failed create: %w", err))
		return
	}
	if err := sb.transition(sbx.StateStopped, sbx.StateStopping); err == nil {
		m.forget(sb)
	}
}

// boot is the create path of a base template: disk → network → VM → envd.
// Each resource is recorded on sb as soon as it exists so cleanup finds it.
func (m *Manager) boot(ctx context.Context, sb *sandbox) error {
	spec := sb.spec
	if err := os.MkdirAll(sb.runDir, 0o700); err != nil {
		return err
	}
	m.saveMeta(sb)
	base := m.d.Images.RootfsPath(spec.TemplateID)
	if !exists(base) {
		return fmt.Errorf("template %s: image %s: %w", spec.TemplateID, base, ErrNotFound)
	}
	disk, err := m.d.Disks.Create(ctx, spec.ID, base, int64(spec.DiskSizeMB)*MiB)
	if err != nil {
		return fmt.Errorf("root disk: %w", err)
	}
	sb.mu.Lock()
	sb.disk = &disk
	sb.mu.Unlock()

	slot, err := m.d.Net.Setup(ctx, spec.ID, NetOptions{Egress: spec.Egress})
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	sb.mu.Lock()
	sb.slot, sb.slotGen = &slot, m.slotGens.Add(1)
	sb.mu.Unlock()

	cfg, err := m.machineConfig(sb, disk, slot)
	if err != nil {
		return err
	}
	cfg.KernelArgs += volumeArgs(spec)
	if err := m.startSlotServers(ctx, sb, slot, true); err != nil {
		return err
	}
	// The first /init proves itself with a secret only this boot's kernel
	// command line commits to (see internal/envd/initsecret).
	initSecret, initArg, err := initsecret.New()
	if err != nil {
		return err
	}
	cfg.KernelArgs += " " + initArg
	if m.d.Snapshots != nil {
		if cfg, err = m.d.Snapshots.PrepareBoot(cfg); err != nil {
			return fmt.Errorf("vmm: %w", err)
		}
	}
	machine, err := m.d.Driver.NewMachine(cfg)
	if err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	t0 := time.Now()
	sb.mu.Lock()
	sb.cfg = cfg
	sb.mu.Unlock()
	if err := m.startMachine(ctx, sb, machine); err != nil {
		return err
	}
	m.crash("create:vm-started")
	user := m.defaultUser(ctx, spec.TemplateID)
	if err := m.connectEnvd(ctx, sb, slot, user, initSecret, t0); err != nil {
		return err
	}
	return nil
}

func (m *Manager) machineConfig(sb *sandbox, disk rootfs.Disk, slot NetSlot) (vmm.Config, error) {
	args := "hearth.ip=" + GuestCIDR + " hearth.gw=" + GuestGateway
	if slot.DNS != "" {
		args += " hearth.dns=" + slot.DNS
	}
	cfg := vmm.Config{
		ID:             sb.spec.ID,
		RunDir:         filepath.Join(sb.runDir, "vm"),
		KernelPath:     m.d.Images.KernelPath(),
		InitrdPath:     m.d.Images.InitrdPath(),
		KernelArgs:     args,
		RootDisk:       disk.Path,
		RootDiskFormat: disk.Format,
		VCPUs:          sb.spec.VCPUs,
		MemoryMB:       sb.spec.MemoryMB,
		NetNS:          slot.NSPath,
		TapName:        slot.TapName,
		MAC:            GuestMAC,
	}
	if err := m.confine(&cfg, slot.Address); err != nil {
		return vmm.Config{}, fmt.Errorf("confine vmm: %w", err)
	}
	return cfg, nil
}

// startMachine starts m's VMM (or adopts an already started one when
// started is true) and watches for its exit.
func (m *Manager) startMachine(ctx context.Context, sb *sandbox, machine vmm.Machine) error {
	if err := os.MkdirAll(filepath.Join(sb.runDir, "vm"), 0o700); err != nil {
		return err
	}
	sb.mu.Lock()
	// Recorded before Start: a Start that fails halfway may leave a process
	// for cleanup to stop. exited stays nil until a watcher exists.
	sb.machine = machine
	sb.exited = nil
	sb.mu.Unlock()
	if err := machine.Start(ctx); err != nil {
		return fmt.Errorf("start vm: %w", err)
	}
	m.watch(sb, machine)
	m.saveMeta(sb)
	return nil
}

// watch moves the sandbox to error when its VMM exits on its own, and
// closes sb.exited when the process is gone.
func (m *Manager) watch(sb *sandbox, machine vmm.Machine) {
	exited := make(chan struct{})
	sb.mu.Lock()
	sb.exited = exited
	sb.mu.Unlock()
	go func() {
		err := machine.Wait(context.Background())
		close(exited)
		sb.mu.Lock()
		unexpected := sb.machine == machine && sb.state == sbx.StateRunning
		sb.mu.Unlock()
		if unexpected {
			sb.fail(fmt.Errorf("vmm exited unexpectedly: %v", err))
		}
	}()
}

// connectEnvd waits for envd's /health and sends /init.
func (m *Manager) connectEnvd(ctx context.Context, sb *sandbox, slot NetSlot, user, currentToken string, t0 time.Time) error {
	_, envdAddr := guestAddrs(slot.Address)
	e := m.d.Dial("http://"+envdAddr, sb.spec.AccessToken)
	sb.mu.Lock()
	exited := sb.exited
	sb.mu.Unlock()
	if err := waitHealthy(ctx, e, exited, m.d.BootTimeout); err != nil {
		closeEnvd(e)
		return err
	}
	sb.log.Info("envd ready", "boot_ms", time.Since(t0).Milliseconds(), "addr", envdAddr)
	if err := e.Init(ctx, EnvdInit{
		CurrentToken: currentToken,
		AccessToken:  sb.spec.AccessToken,
		EnvVars:      egressEnv(sb.spec),
		DefaultUser:  user,
		DefaultDir:   m.defaultDir(sb.spec.TemplateID, user),
		Now:          time.Now(),
	}); err != nil {
		closeEnvd(e)
		return fmt.Errorf("envd init: %w", err)
	}
	if err := m.trustEgressCA(ctx, sb, e); err != nil {
		closeEnvd(e)
		return err
	}
	// The guest's envd now holds this token: a restarted agent reconnects
	// with it. Kept beside the VM, whose RAM file holds it anyway.
	if err := writeFrozen(sb.runDir, frozenEnvd{Token: sb.spec.AccessToken, User: user}); err != nil {
		sb.log.Warn("record envd token", "err", err)
	}
	sb.mu.Lock()
	sb.envd = e
	sb.user = user
	sb.startedAt = time.Now().UTC()
	sb.mu.Unlock()
	return nil
}

// defaultUser is the user a sandbox's processes run as when they name
// none: a built template's last USER (E2B's setUser persists into its
// sandboxes), else the image's `user` account, else root.
func (m *Manager) defaultUser(ctx context.Context, templateID string) string {
	if bm, err := readBuildMeta(filepath.Dir(m.d.Images.RootfsPath(templateID))); err == nil && bm.Config.User != "" {
		u, _, _ := strings.Cut(bm.Config.User, ":") // USER name:group
		return u
	}
	return m.d.Images.DefaultUser(ctx, templateID)
}

// defaultDir is where a sandbox's processes start when they name no
// directory: a built template's last WORKDIR; without one, "" for a
// built template (envd then takes the user's home from /etc/passwd, or
// /), else /home/USER (/root).
func (m *Manager) defaultDir(templateID, user string) string {
	if bm, err := readBuildMeta(filepath.Dir(m.d.Images.RootfsPath(templateID))); err == nil {
		return bm.Config.Workdir
	}
	if user == "root" {
		return "/root"
	}
	return "/home/" + user
}

// closeEnvd releases an envd client's connections when it owns any.
func closeEnvd(e Envd) {
	if c, ok := e.(io.Closer); ok {
		_ = c.Close()
	}
}

// Health polling: while the guest boots, a connection attempt can hang
// (no ARP answer yet), so each attempt is bounded short and retried often;
// a late first answer costs at most healthMaxDelay of boot latency.
const (
	healthAttempt  = time.Second // a loaded TCG guest answers slowly: not too short
	healthMaxDelay = 50 * time.Millisecond
)

// waitHealthy polls envd's /health with backoff until it answers, the VMM
// exits, ctx ends or the boot timeout passes.
func waitHealthy(ctx context.Context, e Envd, exited <-chan struct{}, limit time.Duration) error {
	ctx, cancel := context.WithTimeoutCause(ctx, limit, fmt.Errorf("envd not healthy after %s", limit))
	defer cancel()
	delay := 10 * time.Millisecond
	var last error
	for {
		hctx, hcancel := context.WithTimeout(ctx, healthAttempt)
		last = e.Health(hctx)
		hcancel()
		if last == nil {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for envd: %w (last: %v)", context.Cause(ctx), last)
		case <-exited:
			t.Stop()
			return fmt.Errorf("vmm exited before envd was ready (last: %v)", last)
		case <-t.C:
		}
		delay = min(delay*2, healthMaxDelay)
	}
}

// cleanup releases everything a sandbox may hold. Every step is idempotent
// and runs even when an earlier one failed, so a retry finishes the job.
// Network teardown and disk removal run unconditionally: a Setup or Create
// that failed halfway may have left parts the sandbox never recorded.
func (m *Manager) cleanup(ctx context.Context, sb *sandbox) error {
	var errs []error
	sb.mu.Lock()
	machine, exited := sb.machine, sb.exited
	closeEnvd(sb.envd)
	sb.envd = nil
	sb.mu.Unlock()
	if machine != nil {
		if err := machine.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop vm: %w", err))
		} else {
			if exited != nil {
				select { // the watcher closes it once Wait has returned
				case <-exited:
				case <-ctx.Done():
				}
			}
			sb.mu.Lock()
			sb.machine = nil
			sb.mu.Unlock()
		}
	}
	id := sb.spec.ID
	sb.mu.Lock()
	vmGone := sb.machine == nil
	sb.mu.Unlock()
	m.stopSlotServers(sb)
	if m.d.Cgroups != nil && vmGone {
		if err := m.d.Cgroups.Remove(id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.d.Net.Teardown(ctx, id); err != nil {
		errs = append(errs, fmt.Errorf("network teardown: %w", err))
	} else {
		sb.mu.Lock()
		sb.slot = nil
		sb.mu.Unlock()
	}
	if m.d.Snapshots != nil {
		if err := m.d.Snapshots.Remove(ctx, id, snapshotDir(sb.runDir)); err != nil {
			errs = append(errs, fmt.Errorf("remove snapshot: %w", err))
		}
	}
	if err := m.d.Disks.Remove(ctx, id); err != nil {
		errs = append(errs, fmt.Errorf("remove root disk: %w", err))
	} else {
		sb.mu.Lock()
		sb.disk = nil
		sb.mu.Unlock()
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(sb.runDir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Destroy stops the sandbox and removes all it holds. Unknown IDs and
// already stopped sandboxes succeed.
func (m *Manager) Destroy(ctx context.Context, id string) error {
	sb, err := m.get(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err := sb.lock(ctx); err != nil {
		return err
	}
	defer sb.unlock()
	if sb.currentState() == sbx.StateStopped {
		return nil
	}
	if err := sb.transition(sbx.StateStopping); err != nil {
		return err
	}
	m.saveMeta(sb)
	m.crash("destroy:started")
	if err := m.cleanup(ctx, sb); err != nil {
		err = fmt.Errorf("destroy sandbox %s: %w", id, err)
		sb.fail(err)
		return err
	}
	if err := sb.transition(sbx.StateStopped, sbx.StateStopping); err != nil {
		return err
	}
	m.forget(sb)
	return nil
}

// Pause snapshots a running sandbox and frees its VM and network slot.
// Pausing a paused sandbox succeeds. A failed pause leaves it running.
func (m *Manager) Pause(ctx context.Context, id string) (Info, error) {
	if m.d.Snapshots == nil {
		return Info{}, fmt.Errorf("pause: %w", ErrUnimplemented)
	}
	sb, err := m.get(id)
	if err != nil {
		return Info{}, err
	}
	if err := sb.lock(ctx); err != nil {
		return Info{}, err
	}
	defer sb.unlock()
	if err := m.pauseLocked(ctx, sb); err != nil {
		return Info{}, err
	}
	return sb.info(), nil
}

// pauseLocked is Pause with sb's op slot held.
func (m *Manager) pauseLocked(ctx context.Context, sb *sandbox) error {
	id := sb.spec.ID
	if sb.currentState() == sbx.StatePaused {
		return nil
	}
	if err := sb.transition(sbx.StatePausing, sbx.StateRunning); err != nil {
		return err
	}
	m.recordPauseStart(sb)
	m.crash("pause:started")
	defer func() {
		sb.mu.Lock()
		sb.pauseFrom = nil
		sb.mu.Unlock()
	}()
	sb.mu.Lock()
	machine, exited, cfg, user := sb.machine, sb.exited, sb.cfg, sb.user
	sb.mu.Unlock()
	t0 := time.Now()
	if err := m.d.Snapshots.Pause(ctx, machine, cfg, snapshotDir(sb.runDir)); err != nil {
		err = fmt.Errorf("pause sandbox %s: %w", id, err)
		if isClosed(exited) {
			sb.fail(err)
		} else if terr := sb.transition(sbx.StateRunning, sbx.StatePausing); terr != nil {
			return errors.Join(err, terr)
		}
		sb.mu.Lock()
		sb.pauseFrom = nil
		sb.mu.Unlock()
		m.saveMeta(sb)
		return err
	}
	select { // Pause's contract: the VMM process has exited
	case <-exited:
	case <-ctx.Done():
	}
	m.crash("pause:vm-stopped")
	// The snapshot holds the guest's NFS client only; its server starts
	// again before the guest resumes.
	m.stopSlotServers(sb)
	// The frozen envd holds this token: a later resume or a template made
	// from this snapshot authenticates /init with it. The snapshot's memory
	// holds it anyway, so keeping it beside that memory exposes nothing new
	// (sandbox.json stays free of secrets).
	if err := writeFrozen(snapshotDir(sb.runDir), frozenEnvd{Token: sb.spec.AccessToken, User: user}); err != nil {
		sb.log.Warn("pause: record envd token", "err", err)
	}
	sb.mu.Lock()
	closeEnvd(sb.envd)
	sb.machine, sb.envd, sb.pauseFrom = nil, nil, nil
	sb.mu.Unlock()
	// Free the slot now; a teardown failure leaks nothing for long: destroy
	// and resume tear down unconditionally.
	if err := m.d.Net.Teardown(ctx, id); err != nil {
		sb.log.Warn("pause: network teardown", "err", err)
	} else {
		sb.mu.Lock()
		sb.slot = nil
		sb.mu.Unlock()
	}
	if err := sb.transition(sbx.StatePaused, sbx.StatePausing); err != nil {
		return err
	}
	sb.log.Info("paused", "ms", time.Since(t0).Milliseconds())
	m.saveMeta(sb)
	return nil
}

// Resume restores a paused sandbox. Resuming a running one succeeds. A
// failed resume leaves it paused (the snapshot is intact).
func (m *Manager) Resume(ctx context.Context, id, accessToken string, pol egress.Policy) (Info, error) {
	if m.d.Snapshots == nil {
		return Info{}, fmt.Errorf("resume: %w", ErrUnimplemented)
	}
	sb, err := m.get(id)
	if err != nil {
		return Info{}, err
	}
	if err := sb.lock(ctx); err != nil {
		return Info{}, err
	}
	defer sb.unlock()
	if err := m.resumeLocked(ctx, sb, accessToken, pol); err != nil {
		return Info{}, err
	}
	return sb.info(), nil
}

// resumeLocked is Resume with sb's op slot held.
func (m *Manager) resumeLocked(ctx context.Context, sb *sandbox, accessToken string, pol egress.Policy) error {
	id := sb.spec.ID
	if sb.currentState() == sbx.StateRunning {
		return nil
	}
	if err := sb.transition(sbx.StateResuming, sbx.StatePaused); err != nil {
		return err
	}
	frozen, ferr := readFrozen(snapshotDir(sb.runDir))
	prevToken := frozen.Token
	if ferr != nil || prevToken == "" {
		// No record (a snapshot written before the record existed): the
		// control plane's token is the one the sandbox was created with.
		prevToken = sb.spec.AccessToken
		if prevToken == "" {
			prevToken = accessToken
		}
	}
	switch {
	case accessToken != "":
		sb.spec.AccessToken = accessToken // guarded by op: only lifecycle ops read spec's token
	case sb.spec.AccessToken == "":
		// Re-adopted after a restart (sandbox.json keeps no token) and
		// resumed without a new one: it keeps the token it had.
		sb.spec.AccessToken = prevToken
	}
	sb.spec.Egress = pol
	user := frozen.User
	if user == "" {
		user = m.defaultUser(ctx, sb.spec.TemplateID)
	}
	// The token the guest gets by /init: a restarted agent that finds this
	// resume unfinished completes the /init with it.
	if err := writeFrozen(sb.runDir, frozenEnvd{Token: sb.spec.AccessToken, User: user}); err != nil {
		sb.log.Warn("record envd token", "err", err)
	}
	m.saveMeta(sb)
	m.crash("resume:started")
	t0 := time.Now()
	if err := m.restore(ctx, sb, snapshotDir(sb.runDir), user, prevToken); err != nil {
		err = fmt.Errorf("resume sandbox %s: %w", id, err)
		if cerr := m.releaseVM(context.WithoutCancel(ctx), sb); cerr != nil {
			sb.fail(errors.Join(err, cerr))
		} else if terr := sb.transition(sbx.StatePaused, sbx.StateResuming); terr != nil {
			return errors.Join(err, terr)
		}
		return err
	}
	m.crash("resume:initialized")
	sb.mu.Lock()
	sb.resumeAtStart = false
	sb.mu.Unlock()
	if err := sb.transition(sbx.StateRunning, sbx.StateResuming); err != nil {
		return err
	}
	sb.log.Info("resumed", "ms", time.Since(t0).Milliseconds())
	m.saveMeta(sb)
	return nil
}

// SetNetwork replaces a sandbox's egress policy: at once on a running
// sandbox's slot, at the next resume of a paused one.
func (m *Manager) SetNetwork(ctx context.Context, id string, pol egress.Policy) (Info, error) {
	sb, err := m.get(id)
	if err != nil {
		return Info{}, err
	}
	if err := sb.lock(ctx); err != nil {
		return Info{}, err
	}
	defer sb.unlock()
	switch st := sb.currentState(); st {
	case sbx.StateRunning:
		if err := m.d.Net.SetPolicy(ctx, id, pol); err != nil {
			return Info{}, fmt.Errorf("sandbox %s: network: %w", id, err)
		}
	case sbx.StatePaused:
	default:
		return Info{}, fmt.Errorf("sandbox %s is %s; its network changes only while running or paused: %w", id, st, ErrInUse)
	}
	sb.spec.Egress = pol // guarded by op, like the access token
	m.saveMeta(sb)
	return sb.info(), nil
}

// restore starts sb's VM from the snapshot in dir (its own, or a
// template's) on a new network slot and initialises envd, authenticating
// with prevToken (the token the frozen envd holds).
func (m *Manager) restore(ctx context.Context, sb *sandbox, dir, user, prevToken string) error {
	slot, err := m.d.Net.Setup(ctx, sb.spec.ID, NetOptions{Egress: sb.spec.Egress})
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	sb.mu.Lock()
	sb.slot, sb.slotGen = &slot, m.slotGens.Add(1)
	sb.mu.Unlock()
	disk, err := m.d.Disks.Lookup(ctx, sb.spec.ID)
	if err != nil {
		return fmt.Errorf("root disk: %w", err)
	}
	t0 := time.Now()
	cfg, err := m.machineConfig(sb, disk, slot)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		return err
	}
	// Recorded before the VMM starts, so that a restarted agent can adopt
	// it (and knows, by its pid file, that it was started).
	sb.mu.Lock()
	sb.cfg = cfg
	sb.mu.Unlock()
	m.saveMeta(sb)
	if err := m.startSlotServers(ctx, sb, slot, true); err != nil {
		return err
	}
	machine, err := m.d.Snapshots.Restore(ctx, cfg, dir)
	if machine != nil {
		// Recorded even on error: a restore that failed halfway may have
		// left a process for releaseVM to stop.
		sb.mu.Lock()
		sb.machine = machine
		sb.mu.Unlock()
		m.watch(sb, machine)
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	m.saveMeta(sb)
	m.crash("restore:vm-started")
	return m.connectEnvd(ctx, sb, slot, user, prevToken, t0)
}

// releaseVM stops the VM and frees the slot of a failed resume, keeping the
// disk and snapshot.
func (m *Manager) releaseVM(ctx context.Context, sb *sandbox) error {
	ctx, cancel := context.WithTimeout(ctx, m.d.CleanupTimeout)
	defer cancel()
	var errs []error
	sb.mu.Lock()
	machine, exited := sb.machine, sb.exited
	closeEnvd(sb.envd)
	sb.envd = nil
	sb.mu.Unlock()
	if machine != nil {
		if err := machine.Stop(ctx); err != nil {
			errs = append(errs, err)
		} else {
			if exited != nil {
				<-exited
			}
			sb.mu.Lock()
			sb.machine = nil
			sb.mu.Unlock()
		}
	}
	m.stopSlotServers(sb)
	if err := m.d.Net.Teardown(ctx, sb.spec.ID); err != nil {
		errs = append(errs, err)
	} else {
		sb.mu.Lock()
		sb.slot = nil
		sb.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Get returns one sandbox.
func (m *Manager) Get(id string) (Info, error) {
	sb, err := m.get(id)
	if err != nil {
		return Info{}, err
	}
	return sb.info(), nil
}

// List returns every sandbox this host knows, ordered by ID.
func (m *Manager) List() []Info {
	m.mu.Lock()
	sbs := make([]*sandbox, 0, len(m.sandboxes))
	for _, sb := range m.sandboxes {
		if !sb.spec.Internal {
			sbs = append(sbs, sb)
		}
	}
	m.mu.Unlock()
	out := make([]Info, 0, len(sbs))
	for _, sb := range sbs {
		out = append(out, sb.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// SandboxAddr returns the host-reachable address (IP) of a running
// sandbox's guest: dial SandboxAddr + ":" + port to reach a guest port.
func (m *Manager) SandboxAddr(id string) (string, error) {
	r, err := m.SandboxRoute(id)
	return r.Addr, err
}

// GuestRoute is how to reach a running sandbox's guest.
type GuestRoute struct {
	Addr string // host-reachable IP of the guest
	// Pool names the connection pool for it: the sandbox and its current
	// network slot. A pause or resume gives the sandbox a new slot (a new
	// namespace), so connections kept alive in the old pool are never
	// reused; the old pool is closed when idle.
	Pool string
}

// SandboxRoute returns the address and connection pool of a running
// sandbox's guest.
func (m *Manager) SandboxRoute(id string) (GuestRoute, error) {
	sb, err := m.get(id)
	if err != nil {
		return GuestRoute{}, err
	}
	in := sb.info()
	if in.State != sbx.StateRunning {
		return GuestRoute{}, &sbx.ErrTransition{ID: id, From: in.State, To: sbx.StateRunning}
	}
	sb.mu.Lock()
	gen := sb.slotGen
	sb.mu.Unlock()
	return GuestRoute{Addr: in.GuestAddr, Pool: id + "#" + strconv.FormatUint(gen, 10)}, nil
}

// envdOf returns the envd of a running sandbox and its default user.
func (m *Manager) envdOf(id string) (Envd, string, error) {
	sb, err := m.get(id)
	if err != nil {
		return nil, "", err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.state != sbx.StateRunning || sb.envd == nil {
		return nil, "", fmt.Errorf("sandbox %s is %s: %w", id, sb.state, &sbx.ErrTransition{ID: id, From: sb.state, To: sbx.StateRunning})
	}
	return sb.envd, sb.user, nil
}

// Shutdown stops accepting creates and stops every sandbox: paused when a
// Snapshotter is configured (re-adopted at the next start), else destroyed.
// A sandbox that cannot be paused (or was in error already) is not
// destroyed (DESIGN section 7: never lose what can be kept): its VM is
// stopped, its disk and run dir stay, and it is recorded in error with the
// reason, re-adopted so at the next start for the user to destroy. An
// older snapshot of it is no way back: its disk has moved on since.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	ids := make([]string, 0, len(m.sandboxes))
	for id := range m.sandboxes {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	var (
		wg   sync.WaitGroup
		emu  sync.Mutex
		errs []error
	)
	for _, id := range ids {
		wg.Go(func() {
			var err error
			if m.d.Snapshots != nil {
				err = m.shutdownPause(ctx, id)
			} else {
				err = m.Destroy(ctx, id)
			}
			if err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// shutdownPause pauses one sandbox at shutdown, or keeps it in error.
func (m *Manager) shutdownPause(ctx context.Context, id string) error {
	sb, err := m.get(id)
	if errors.Is(err, ErrNotFound) {
		return nil // destroyed meanwhile
	}
	if err := sb.lock(ctx); err != nil {
		return fmt.Errorf("shutdown: sandbox %s: %w", id, err)
	}
	defer sb.unlock()
	var cause error
	switch st := sb.currentState(); st {
	case sbx.StatePaused, sbx.StateStopped:
		return nil
	case sbx.StateRunning:
		if cause = m.pauseLocked(ctx, sb); cause == nil {
			sb.mu.Lock()
			sb.resumeAtStart = true
			sb.mu.Unlock()
			m.saveMeta(sb)
			return nil
		}
	default: // error (creating, pausing, resuming, stopping end before the op slot is free)
		cause = fmt.Errorf("was %s at shutdown", st)
		sb.mu.Lock()
		if sb.errMsg != "" {
			cause = fmt.Errorf("%w: %s", cause, sb.errMsg)
		}
		sb.mu.Unlock()
	}
	return m.keepInError(ctx, sb, cause)
}

// keepInError stops sb's VM and frees its network slot, keeping its disk
// and run dir, and records it in error with cause. With sb's op slot held.
func (m *Manager) keepInError(ctx context.Context, sb *sandbox, cause error) error {
	reason := fmt.Errorf("agent shutdown could not pause the sandbox; its VM was stopped and its disk kept (destroy it to free the disk): %w", cause)
	sb.log.Error("shutdown: pause failed: stopping the VM, keeping the disk, sandbox in error", "err", cause)
	err := m.releaseVM(context.WithoutCancel(ctx), sb)
	sb.fail(reason)
	sb.mu.Lock()
	sb.errMsg = reason.Error() // also when it was in error already
	sb.mu.Unlock()
	m.saveMeta(sb)
	if err != nil {
		return fmt.Errorf("shutdown: sandbox %s: stop VM: %w", sb.spec.ID, err)
	}
	return nil
}

// Usage sums the resources given to sandboxes holding a VM.
func (m *Manager) usage() (vcpus, memMB, count int) {
	for _, in := range m.List() {
		count++
		switch in.State {
		case sbx.StatePaused, sbx.StateStopped:
			continue
		}
		vcpus += in.VCPUs
		memMB += in.MemoryMB
	}
	return vcpus, memMB, count
}

// guestAddrs splits a slot address into the guest host and envd's
// host:port. An address with a port is envd's address as given.
func guestAddrs(addr string) (host, envd string) {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h, addr
	}
	return addr, net.JoinHostPort(addr, strconv.Itoa(EnvdPort))
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// CrashSteps lists the steps at which Deps.Crash is called, for crash
// tests (Options.CrashAt). The "snapshot:" steps are the snapshotter's:
// after a pause's device state is saved (memory not yet committed), and
// after the commit while the VM still exists.
func CrashSteps() []string {
	return []string{
		"create:vm-started",
		"pause:started", "snapshot:state", "snapshot:committed", "pause:vm-stopped",
		"resume:started", "restore:vm-started", "resume:initialized",
		"capture:frozen", "template:written",
		"destroy:started",
	}
}

func (m *Manager) crash(step string) {
	if m.d.Crash != nil {
		m.d.Crash(step)
	}
}
