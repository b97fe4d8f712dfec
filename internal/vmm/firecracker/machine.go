// Package firecracker is the Firecracker driver: it launches the
// `firecracker --api-sock` binary (inside the sandbox's network namespace,
// in its own process group), configures the VM over the HTTP API on that
// unix socket and boots it; pause, snapshot (Full/Diff) and restore (File or
// Uffd memory backend) use the same API. See api.go for the wire types.
package firecracker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/vmmproc"
)

const (
	apiSockName = "api.sock"
	fcLogName   = "firecracker.log"
	// The guest sees one disk and one NIC with these ids.
	rootDriveID = "rootfs"
	ifaceID     = "eth0"
	// rootDiskName is the root disk's file name in Options.StableDir.
	rootDiskName = "rootfs"
	// DefaultStableDir is where each firecracker process sees its disks.
	DefaultStableDir = "/run/hearth/vm"
)

// Options configure the driver. Zero values pick defaults.
type Options struct {
	Binary       string // default firecracker from PATH
	ProbeKernel  string // vmlinux the probe boots
	ProbeTimeout time.Duration
	// StableDir is the directory at which every firecracker process sees
	// its root disk, in its own mount namespace (default DefaultStableDir;
	// created empty on the host if missing). It must be the same for all
	// agents whose snapshots are restored on this host.
	StableDir string
	// Jailer is Firecracker's jailer binary (same release as Binary);
	// empty: "jailer" from PATH when there is one. With it every machine
	// runs chrooted below ChrootBase as its vmm.Config.RunAsUID/GID.
	Jailer string
	// ChrootBase is the jailer's --chroot-base-dir. Root disks are
	// hard-linked into it, so it must be on the root disks' file system.
	// Empty: JailDirName at the top of the file system holding each
	// machine's root disk (DefaultChrootBase for a block-device disk).
	ChrootBase string
	// AllowRoot lets Firecracker run as root, unconfined, when there is no
	// jailer (or a machine has no RunAsUID). Off: such a start is refused
	// with ErrNoJailer, and Probe fails.
	AllowRoot bool
	Logger    *slog.Logger
}

// Driver implements vmm.Driver and vmm.Restorer.
type Driver struct {
	opts      Options
	probeOnce sync.Once
	probeErr  error
}

var (
	_ vmm.Driver   = (*Driver)(nil)
	_ vmm.Restorer = (*Driver)(nil)
)

// New returns a driver. It does not probe.
func New(opts Options) *Driver {
	if opts.Binary == "" {
		opts.Binary = "firecracker"
	}
	if opts.ProbeTimeout == 0 {
		opts.ProbeTimeout = 8 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StableDir == "" {
		opts.StableDir = DefaultStableDir
	}
	if opts.Jailer == "" {
		if p, err := exec.LookPath("jailer"); err == nil {
			opts.Jailer = p
		}
	}
	return &Driver{opts: opts}
}

// Name implements vmm.Driver.
func (d *Driver) Name() string { return "firecracker" }

// Capabilities implements vmm.Driver: Firecracker writes guest memory
// itself (Full or Diff) and loads it from a file or a Uffd page server.
func (d *Driver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{Memory: vmm.MemoryVMMWritten, DiffSnapshots: true, LazyRestore: true, SnapshotFormat: "firecracker"}
}

// RootDrivePath is the root drive's path as every firecracker process sees
// it (and records it in snapshots): StableDir/rootfs, bound to the
// machine's own Config.RootDisk in its mount namespace.
func (d *Driver) RootDrivePath() string { return filepath.Join(d.opts.StableDir, rootDiskName) }

// Probe implements vmm.Driver (cached): the binary exists, /dev/kvm opens,
// and a guest really boots under Firecracker (it must reach the kernel's
// "no root filesystem" panic). Opening /dev/kvm is not enough: nested PVM
// hosts expose it but cannot run a stock kernel.
func (d *Driver) Probe(ctx context.Context) error {
	d.probeOnce.Do(func() { d.probeErr = d.probe(ctx) })
	return d.probeErr
}

func (d *Driver) probe(ctx context.Context) error {
	if _, err := exec.LookPath(d.opts.Binary); err != nil {
		return fmt.Errorf("%w: %s binary not found (install a release from github.com/firecracker-microvm/firecracker/releases into PATH)", vmm.ErrUnsupported, d.opts.Binary)
	}
	if err := d.jailerReady(); err != nil {
		return fmt.Errorf("%w: %w", vmm.ErrUnsupported, err)
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: /dev/kvm: %v (Firecracker needs KVM)", vmm.ErrUnsupported, err)
	}
	f.Close()
	if d.opts.ProbeKernel == "" {
		return fmt.Errorf("%w: no guest kernel to probe a Firecracker boot with (run hearth image build)", vmm.ErrUnsupported)
	}
	dir, err := os.MkdirTemp("", "hearth-fc-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, d.opts.ProbeTimeout)
	defer cancel()
	m, err := d.newMachine(vmm.Config{
		ID: "probe", RunDir: dir, KernelPath: d.opts.ProbeKernel,
		KernelArgs: "root=/dev/hearth-probe-none", VCPUs: 1, MemoryMB: 128,
	}, nil)
	if err != nil {
		return err
	}
	// The probe boots hearth's own kernel with no disk, no network and
	// no guest code: it runs as the agent, outside any jail.
	m.probe = true
	if err := m.Start(ctx); err != nil {
		return fmt.Errorf("%w: probe boot: %v", vmm.ErrUnsupported, err)
	}
	defer func() { _ = m.Stop(context.Background()) }()
	for {
		b, _ := os.ReadFile(vmm.ConsoleLog(dir))
		if strings.Contains(string(b), "Kernel panic") || strings.Contains(string(b), "VFS:") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: a Firecracker guest did not boot within %s (nested or paravirtual KVM such as kvm_pvm cannot run a stock kernel)", vmm.ErrUnsupported, d.opts.ProbeTimeout)
		case <-m.proc.Done():
			if strings.Contains(string(b), "Kernel panic") {
				return nil
			}
			return fmt.Errorf("%w: firecracker exited during the probe boot: %v", vmm.ErrUnsupported, m.proc.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// NewMachine implements vmm.Driver.
func (d *Driver) NewMachine(cfg vmm.Config) (vmm.Machine, error) { return d.newMachine(cfg, nil) }

func (d *Driver) newMachine(cfg vmm.Config, restore *vmm.RestoreSpec) (*Machine, error) {
	var missing []string
	if cfg.RunDir == "" {
		missing = append(missing, "RunDir")
	}
	if restore == nil && cfg.KernelPath == "" {
		missing = append(missing, "KernelPath")
	}
	if cfg.VCPUs <= 0 {
		missing = append(missing, "VCPUs")
	}
	if cfg.MemoryMB <= 0 {
		missing = append(missing, "MemoryMB")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("firecracker config: missing %s", strings.Join(missing, ", "))
	}
	if cfg.RootDiskFormat != "" && cfg.RootDiskFormat != "raw" {
		return nil, fmt.Errorf("firecracker config: root disk format %q (Firecracker takes raw images only)", cfg.RootDiskFormat)
	}
	if cfg.RootDisk != "" && !filepath.IsAbs(cfg.RootDisk) {
		return nil, fmt.Errorf("firecracker config: root disk %q is not an absolute path", cfg.RootDisk)
	}
	if p := filepath.Join(cfg.RunDir, apiSockName); len(p) > 107 {
		return nil, fmt.Errorf("firecracker config: API socket path %q longer than 107 bytes", p)
	}
	return &Machine{d: d, cfg: cfg, restore: restore}, nil
}

// Restore implements vmm.Restorer: a fresh firecracker process loads the
// snapshot (memory from a file or from a userfaultfd page server).
func (d *Driver) Restore(ctx context.Context, cfg vmm.Config, snap vmm.RestoreSpec) (vmm.Snapshotter, error) {
	if snap.StatePath == "" {
		return nil, errors.New("firecracker restore: StatePath is required")
	}
	if snap.MemoryPath == "" && snap.UffdSocket == "" {
		return nil, errors.New("firecracker restore: MemoryPath or UffdSocket is required")
	}
	m, err := d.newMachine(cfg, &snap)
	if err != nil {
		return nil, err
	}
	if err := m.Start(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// Machine is one firecracker process. It implements vmm.Snapshotter.
type Machine struct {
	d       *Driver
	cfg     vmm.Config
	restore *vmm.RestoreSpec

	probe bool  // Probe's machine: never jailed
	jail  *jail // nil: not jailed

	// API paths inside the jail (set by Start when jailed).
	jailKernel, jailInitrd string
	jailRestore            *vmm.RestoreSpec

	mu      sync.Mutex
	proc    *vmmproc.Process
	api     *Client
	stopped bool
}

// jailerReady says whether machines may be started: with a jailer, or
// as root when the operator allowed it.
func (d *Driver) jailerReady() error {
	if d.opts.Jailer == "" {
		if d.opts.AllowRoot {
			return nil
		}
		return fmt.Errorf("%w: install `jailer` from the same Firecracker release as firecracker into PATH, or pass --firecracker-jailer PATH (--firecracker-allow-root runs Firecracker as root instead: not recommended)", ErrNoJailer)
	}
	if _, err := exec.LookPath(d.opts.Jailer); err != nil {
		return fmt.Errorf("firecracker jailer %s: %w", d.opts.Jailer, err)
	}
	return nil
}

// jailFor returns the machine's jail, nil when it runs unjailed (allowed
// only with AllowRoot).
func (d *Driver) jailFor(cfg vmm.Config) (*jail, error) {
	if d.opts.Jailer == "" || cfg.RunAsUID <= 0 {
		if d.opts.AllowRoot {
			return nil, nil
		}
		if d.opts.Jailer != "" {
			return nil, fmt.Errorf("firecracker %s: no uid to run as (the agent's VMM uid range is off): %w; --firecracker-allow-root runs it as root", cfg.ID, ErrNoJailer)
		}
		return nil, d.jailerReady()
	}
	bin, err := exec.LookPath(d.opts.Binary)
	if err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	bin, err = filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	base := d.opts.ChrootBase
	if base == "" {
		if base, err = defaultChrootBase(cfg.RootDisk); err != nil {
			return nil, err
		}
	}
	j, err := newJail(d.opts.Jailer, bin, base, cfg.ID, cfg.RunAsUID, cfg.RunAsGID)
	if err != nil {
		return nil, err
	}
	return &j, nil
}

var _ vmm.Snapshotter = (*Machine)(nil)

// APISocket is the path of the machine's API socket on the host.
func (m *Machine) APISocket() string {
	if m.jail != nil {
		return m.jail.hostPath(jailAPISock)
	}
	return filepath.Join(m.cfg.RunDir, apiSockName)
}

// BootArgs returns the guest kernel command line.
func (m *Machine) BootArgs() string {
	// reboot=k: a guest reboot (or panic=-1) makes Firecracker exit.
	parts := []string{"console=ttyS0", "reboot=k", "panic=-1", "pci=off"}
	if a := strings.TrimSpace(m.cfg.KernelArgs); a != "" {
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// Start implements vmm.Machine: launch, configure, InstanceStart (or load
// the snapshot when restoring).
func (m *Machine) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil {
		return errors.New("firecracker: machine already started")
	}
	if err := os.MkdirAll(m.cfg.RunDir, 0o755); err != nil {
		return fmt.Errorf("firecracker: run dir: %w", err)
	}
	_ = os.Remove(m.APISocket())
	// Firecracker's stdout is the guest serial console.
	console, err := os.OpenFile(vmm.ConsoleLog(m.cfg.RunDir), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("firecracker: console log: %w", err)
	}
	defer console.Close()
	vmmLog, err := os.OpenFile(filepath.Join(m.cfg.RunDir, vmm.VMMLogName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("firecracker: vmm log: %w", err)
	}
	defer vmmLog.Close()
	id := m.cfg.ID
	if id == "" {
		id = "hearth"
	}
	popts := vmmproc.Options{NetNS: m.cfg.NetNS, PIDFile: filepath.Join(m.cfg.RunDir, vmm.PIDFileName), Cgroup: m.cfg.Cgroup}
	var cmd *exec.Cmd
	if !m.probe {
		j, err := m.d.jailFor(m.cfg)
		if err != nil {
			return err
		}
		m.jail = j
	}
	if j := m.jail; j != nil {
		kernel, initrd, restore, err := j.prepare(m.cfg, m.restore)
		if err != nil {
			m.removeJail()
			return fmt.Errorf("firecracker %s: %w", m.cfg.ID, err)
		}
		m.jailKernel, m.jailInitrd, m.jailRestore = kernel, initrd, restore
		if m.cfg.TapName != "" {
			if err := setTapOwner(m.cfg.NetNS, m.cfg.TapName, j.uid, j.gid); err != nil {
				return fmt.Errorf("firecracker %s: %w", m.cfg.ID, err)
			}
		}
		// The jailer joins the namespace itself (--netns).
		cmd = exec.Command(j.jailer, j.args(m.cfg.NetNS, "--api-sock", jailAPISock)...)
		popts.NetNS = ""
	} else {
		cmd = exec.Command(m.d.opts.Binary, "--api-sock", m.APISocket(), "--id", id)
		if m.cfg.RootDisk != "" {
			// The same at boot and at every restore: see the package doc.
			popts.Mounts = &vmmproc.Mounts{Dir: m.d.opts.StableDir, Files: []vmmproc.BindFile{{Name: rootDiskName, Source: m.cfg.RootDisk}}}
		}
	}
	cmd.Stdout, cmd.Stderr = console, vmmLog
	cmd.Stdin = nil
	proc, err := vmmproc.StartWith(cmd, popts)
	if err != nil {
		m.removeJail()
		return fmt.Errorf("firecracker: %w", err)
	}
	m.proc = proc
	m.api = NewClient(m.APISocket())
	if err := m.configure(ctx); err != nil {
		killCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = proc.KillAndWait(killCtx)
		m.api.Close()
		m.removeJail()
		m.stopped = true
		return fmt.Errorf("firecracker %s: %w", m.cfg.ID, err)
	}
	return nil
}

func (m *Machine) configure(ctx context.Context) error {
	if err := m.waitAPI(ctx); err != nil {
		return err
	}
	logPath := filepath.Join(m.cfg.RunDir, fcLogName)
	kernel, initrd, restore, drive := m.cfg.KernelPath, m.cfg.InitrdPath, m.restore, m.d.RootDrivePath()
	if m.jail != nil {
		// prepare created the log and linked the files in.
		logPath, kernel, initrd, restore, drive = jailLog, m.jailKernel, m.jailInitrd, m.jailRestore, jailRootfs
	} else if f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		// Firecracker opens an existing file or FIFO; it does not create one.
		f.Close()
	}
	if err := m.api.PutLogger(ctx, Logger{LogPath: logPath, Level: "Warning"}); err != nil {
		return err
	}
	if r := restore; r != nil {
		load := SnapshotLoadParams{
			SnapshotPath:    r.StatePath,
			TrackDirtyPages: r.TrackDirtyPages,
			ResumeVM:        !r.Paused,
			MemBackend:      &MemoryBackend{BackendType: "File", BackendPath: r.MemoryPath},
		}
		if r.UffdSocket != "" {
			load.MemBackend = &MemoryBackend{BackendType: "Uffd", BackendPath: r.UffdSocket}
		}
		if m.cfg.TapName != "" {
			load.NetworkOverrides = []NetworkOverride{{IfaceID: ifaceID, HostDevName: m.cfg.TapName}}
		}
		return m.api.LoadSnapshot(ctx, load)
	}
	// Dirty page tracking from boot: every sandbox may be paused, and only
	// tracked VMs can write Diff snapshots.
	track := true
	mc := MachineConfiguration{VCPUCount: m.cfg.VCPUs, MemSizeMib: m.cfg.MemoryMB, TrackDirtyPages: &track}
	if err := m.api.PutMachineConfig(ctx, mc); err != nil {
		return err
	}
	if err := m.api.PutBootSource(ctx, BootSource{
		KernelImagePath: kernel, InitrdPath: initrd, BootArgs: m.BootArgs(),
	}); err != nil {
		return err
	}
	if m.cfg.RootDisk != "" {
		ro := false
		if err := m.api.PutDrive(ctx, Drive{
			DriveID: rootDriveID, IsRootDevice: true, IsReadOnly: &ro, PathOnHost: drive,
		}); err != nil {
			return err
		}
	}
	if m.cfg.TapName != "" {
		if err := m.api.PutNetworkInterface(ctx, NetworkInterface{
			IfaceID: ifaceID, HostDevName: m.cfg.TapName, GuestMAC: m.cfg.MAC,
		}); err != nil {
			return err
		}
	}
	if err := m.api.PutEntropy(ctx); err != nil {
		return err
	}
	return m.api.InstanceStart(ctx)
}

// waitAPI polls GET / until the API socket answers.
func (m *Machine) waitAPI(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if _, err := m.api.DescribeInstance(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("API socket %s did not answer: %w", m.APISocket(), ctx.Err())
		case <-m.proc.Done():
			return fmt.Errorf("firecracker exited during start: %v", m.proc.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// PID implements vmm.Machine.
func (m *Machine) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.PID()
}

// Wait implements vmm.Machine.
func (m *Machine) Wait(ctx context.Context) error {
	m.mu.Lock()
	proc := m.proc
	m.mu.Unlock()
	if proc == nil {
		return errors.New("firecracker: machine not started")
	}
	return proc.Wait(ctx)
}

// Stop implements vmm.Machine. Firecracker has no graceful "quit" for a
// running guest on x86 short of a guest reboot, and the VM's state is
// disposable at this point (a pause snapshots first), so it is killed.
func (m *Machine) Stop(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil || m.stopped {
		m.stopped = true
		return nil
	}
	if err := m.proc.KillAndWait(ctx); err != nil {
		return fmt.Errorf("firecracker stop %s: %w", m.cfg.ID, err)
	}
	m.api.Close()
	_ = os.Remove(m.APISocket())
	m.removeJail()
	m.stopped = true
	return nil
}

// removeJail removes the machine's chroot once its process is gone: the
// jailer leaves it behind (its docs: cleanup is the caller's); the links
// in it keep nothing alive once removed.
func (m *Machine) removeJail() {
	if m.jail == nil {
		return
	}
	if err := os.RemoveAll(m.jail.dir()); err != nil {
		m.d.opts.Logger.Warn("firecracker: remove jail", "dir", m.jail.dir(), "err", err)
	}
}

func (m *Machine) client() (*Client, error) {
	if m.proc == nil || m.stopped || m.proc.Exited() {
		return nil, errors.New("firecracker: machine not running")
	}
	return m.api, nil
}

// Pause implements vmm.Snapshotter (PATCH /vm Paused).
func (m *Machine) Pause(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.client()
	if err != nil {
		return err
	}
	return c.PatchVM(ctx, "Paused")
}

// Resume implements vmm.Snapshotter (PATCH /vm Resumed).
func (m *Machine) Resume(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.client()
	if err != nil {
		return err
	}
	return c.PatchVM(ctx, "Resumed")
}

// Snapshot implements vmm.Snapshotter (PUT /snapshot/create on a paused VM).
func (m *Machine) Snapshot(ctx context.Context, snap vmm.SnapshotSpec) error {
	if snap.StatePath == "" || snap.MemoryPath == "" {
		return errors.New("firecracker snapshot: StatePath and MemoryPath are required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.client()
	if err != nil {
		return err
	}
	if err := c.PatchVM(ctx, "Paused"); err != nil {
		return err
	}
	typ := "Full"
	if snap.Diff {
		typ = "Diff"
	}
	if m.jail == nil {
		return c.CreateSnapshot(ctx, SnapshotCreateParams{
			SnapshotPath: snap.StatePath, MemFilePath: snap.MemoryPath, SnapshotType: typ,
		})
	}
	// Jailed: written inside the jail, then moved where the caller wants.
	for _, p := range []string{jailSnapState, jailSnapMem} {
		_ = os.Remove(m.jail.hostPath(p))
	}
	if err := c.CreateSnapshot(ctx, SnapshotCreateParams{
		SnapshotPath: jailSnapState, MemFilePath: jailSnapMem, SnapshotType: typ,
	}); err != nil {
		return err
	}
	if err := m.jail.collect(jailSnapState, snap.StatePath); err != nil {
		return err
	}
	return m.jail.collect(jailSnapMem, snap.MemoryPath)
}

var (
	_ vmm.Adopter   = (*Driver)(nil)
	_ vmm.RunStater = (*Machine)(nil)
)

// Adopt implements vmm.Adopter: it takes over the firecracker process pid
// started (by an earlier agent) for cfg, through its API socket. The pid
// is trusted only when its command line names cfg's API socket: pids are
// reused. A machine whose memory an earlier agent's page server served
// (a lazy restore) must not be adopted: the caller checks that, as only it
// knows how the machine was restored.
func (d *Driver) Adopt(ctx context.Context, cfg vmm.Config, pid int) (vmm.Snapshotter, error) {
	m, err := d.newMachine(cfg, nil)
	if err != nil {
		return nil, err
	}
	if m.jail, err = d.jailFor(cfg); err != nil {
		return nil, fmt.Errorf("firecracker adopt %s: %w", cfg.ID, err)
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, fmt.Errorf("firecracker adopt %s: pid %d: %w", cfg.ID, pid, err)
	}
	// A jailed firecracker names its jail's socket (/api.sock) and gets
	// --id=<id> from the jailer.
	want := [][]byte{[]byte("--api-sock\x00" + m.APISocket() + "\x00")}
	if m.jail != nil {
		want = [][]byte{[]byte("--api-sock\x00" + jailAPISock + "\x00"), []byte("--id=" + cfg.ID + "\x00")}
	}
	for _, w := range want {
		if !bytes.Contains(cmdline, w) {
			return nil, fmt.Errorf("firecracker adopt %s: pid %d is not this machine's firecracker", cfg.ID, pid)
		}
	}
	proc, err := vmmproc.Adopt(pid, filepath.Join(cfg.RunDir, vmm.PIDFileName))
	if err != nil {
		return nil, fmt.Errorf("firecracker adopt %s: %w", cfg.ID, err)
	}
	m.proc, m.api = proc, NewClient(m.APISocket())
	if _, err := m.api.DescribeInstance(ctx); err != nil {
		m.api.Close()
		return nil, fmt.Errorf("firecracker adopt %s: API socket: %w", cfg.ID, err)
	}
	return m, nil
}

// GuestRunning implements vmm.RunStater (GET / state).
func (m *Machine) GuestRunning(ctx context.Context) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.client()
	if err != nil {
		return false, err
	}
	info, err := c.DescribeInstance(ctx)
	if err != nil {
		return false, err
	}
	return info.State == "Running", nil
}
