// Package qemu is the QEMU driver: the microvm machine type booting an
// uncompressed vmlinux through its PVH entry, virtio-mmio disk and network,
// serial console to a file, control over QMP. It runs under KVM where a KVM
// guest actually boots and under TCG everywhere else.
//
// Snapshots use QEMU's migration stream with guest RAM in a shared file
// (memory-backend-file share=on) and the x-ignore-shared capability on both
// sides: the stream then holds only vCPU and device state (~0.1 MiB) while
// memory stays in the RAM file. Measured on the dev hosts: pause 5-9 ms,
// restore 32-75 ms for a 1 GiB guest (DESIGN.md section 5).
//
// A machine restored with RestoreSpec.MemoryPrivate maps its RAM file
// copy-on-write (share=off): restores are lazy and many machines share one
// file's clean pages. Its RAM is then private, which x-ignore-shared does
// not skip, so Snapshot migrates into a pipe and takes the guest RAM pages
// out of the stream (stream.go), leaving the same device-state-only file.
package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// Accelerators.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// Options configure the driver. Zero values pick defaults.
type Options struct {
	Binary string // default qemu-system-x86_64 from PATH
	Accel  string // AccelKVM or AccelTCG (default TCG)
	// TSCKHz is passed to the guest as tsc_early_khz; 0 reads the host's
	// from /proc/cpuinfo. Without it some TCG boots hang on calibration.
	TSCKHz int64
	// ProbeKernel is the vmlinux the KVM probe boots (no disk: the probe
	// succeeds when the kernel gets as far as panicking for want of a root
	// filesystem). Without it a KVM probe cannot prove anything and fails.
	ProbeKernel  string
	ProbeTimeout time.Duration // default 8 s
	StopGrace    time.Duration // QMP quit → SIGKILL; default 3 s
	Logger       *slog.Logger
}

// Driver implements vmm.Driver and vmm.Restorer for QEMU.
type Driver struct {
	opts Options

	probeOnce sync.Once
	probeErr  error
}

var (
	_ vmm.Driver   = (*Driver)(nil)
	_ vmm.Restorer = (*Driver)(nil)
	_ vmm.Adopter  = (*Driver)(nil)
)

// New returns a driver. It does not probe.
func New(opts Options) *Driver {
	if opts.Binary == "" {
		opts.Binary = "qemu-system-x86_64"
	}
	if opts.Accel == "" {
		opts.Accel = AccelTCG
	}
	if opts.ProbeTimeout == 0 {
		opts.ProbeTimeout = 8 * time.Second
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = 3 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.TSCKHz == 0 {
		opts.TSCKHz, _ = HostTSCKHz()
	}
	return &Driver{opts: opts}
}

// Name implements vmm.Driver.
func (d *Driver) Name() string { return "qemu" }

// Capabilities implements vmm.Driver: RAM in a shared file (QEMU
// memory-backend-file), device state in a migration stream.
func (d *Driver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{Memory: vmm.MemorySharedFile, PrivateRestore: true, SnapshotFormat: "qemu"}
}

// Accel returns the accelerator this driver uses.
func (d *Driver) Accel() string { return d.opts.Accel }

// Variant is "qemu-kvm" or "qemu-tcg", for logs and doctor output.
func (d *Driver) Variant() string { return "qemu-" + d.opts.Accel }

// Probe implements vmm.Driver; the result is cached for the driver's life.
func (d *Driver) Probe(ctx context.Context) error {
	d.probeOnce.Do(func() { d.probeErr = d.probe(ctx) })
	return d.probeErr
}

func (d *Driver) probe(ctx context.Context) error {
	bin, err := exec.LookPath(d.opts.Binary)
	if err != nil {
		return fmt.Errorf("%w: %s not found (install: apt-get install qemu-system-x86)", vmm.ErrUnsupported, d.opts.Binary)
	}
	if d.opts.Accel != AccelKVM {
		return nil
	}
	return ProbeKVM(ctx, bin, d.opts.ProbeKernel, d.opts.ProbeTimeout)
}

// Version returns QEMU's version line, e.g. "QEMU emulator version 7.2.22 (...)".
func (d *Driver) Version(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, d.opts.Binary, "-version").Output()
	if err != nil {
		return "", fmt.Errorf("%s -version: %w", d.opts.Binary, err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line), nil
}

// ProbeKVM proves that a KVM guest boots: it opens /dev/kvm and boots
// kernel under -accel kvm with no root disk, which must reach the kernel's
// "VFS: Unable to mount root" panic (QEMU then exits because of panic=-1
// and -no-reboot). Opening /dev/kvm alone proves nothing: on nested PVM
// hosts (kvm_pvm) QEMU aborts with "failed to set MSR 0x10a" or a stock
// kernel crawls through decompression.
func ProbeKVM(ctx context.Context, qemuBin, kernel string, timeout time.Duration) error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: /dev/kvm: %v (enable virtualization, load kvm_intel/kvm_amd, or add the user to group kvm)", vmm.ErrUnsupported, err)
	}
	f.Close()
	if kernel == "" {
		return fmt.Errorf("%w: no guest kernel to probe KVM with (run hearth image build)", vmm.ErrUnsupported)
	}
	if _, err := os.Stat(kernel); err != nil {
		return fmt.Errorf("%w: probe kernel: %v (run hearth image build)", vmm.ErrUnsupported, err)
	}
	if timeout <= 0 {
		timeout = 8 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBin,
		"-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on",
		"-accel", "kvm", "-cpu", "host", "-m", "128M", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "stdio", "-kernel", kernel,
		"-append", "console=ttyS0 panic=-1 reboot=t root=/dev/hearth-probe-none")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = time.Second
	runErr := cmd.Run()
	booted := bytes.Contains(out.Bytes(), []byte("Kernel panic")) || bytes.Contains(out.Bytes(), []byte("VFS:"))
	switch {
	case runErr == nil && booted:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%w: a KVM guest did not boot within %s (nested or paravirtual KVM such as kvm_pvm cannot run a stock kernel; QEMU uses TCG instead)", vmm.ErrUnsupported, timeout)
	default:
		return fmt.Errorf("%w: KVM guest failed: %s (nested or paravirtual KVM such as kvm_pvm cannot run a stock kernel; QEMU uses TCG instead)", vmm.ErrUnsupported, lastLine(out.Bytes()))
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.Contains(l, "Assertion") {
			return l
		}
	}
	if len(lines) > 0 {
		return lines[len(lines)-1]
	}
	return "no output"
}

// HostTSCKHz returns the host TSC frequency in kHz from /proc/cpuinfo.
func HostTSCKHz() (int64, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, fmt.Errorf("cpuinfo cpu MHz %q: %w", v, err)
		}
		return int64(mhz*1000 + 0.5), nil
	}
	return 0, errors.New("cpu MHz not in /proc/cpuinfo")
}

// NewMachine implements vmm.Driver.
func (d *Driver) NewMachine(cfg vmm.Config) (vmm.Machine, error) {
	return d.newMachine(cfg, nil)
}

func (d *Driver) newMachine(cfg vmm.Config, restore *vmm.RestoreSpec) (*Machine, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	return &Machine{d: d, cfg: cfg, restore: restore}, nil
}

// Restore implements vmm.Restorer: it starts a new QEMU that maps the RAM
// file, loads the state stream and continues the guest.
func (d *Driver) Restore(ctx context.Context, cfg vmm.Config, snap vmm.RestoreSpec) (vmm.Snapshotter, error) {
	if snap.StatePath == "" {
		return nil, errors.New("qemu restore: StatePath is required")
	}
	if snap.MemoryPath == "" {
		snap.MemoryPath = cfg.MemoryFile
	}
	cfg.MemoryFile = snap.MemoryPath
	m, err := d.newMachine(cfg, &snap)
	if err != nil {
		return nil, err
	}
	if m.pit, err = withPIT(snap.StatePath); err != nil {
		return nil, fmt.Errorf("qemu restore: %w", err)
	}
	if err := m.Start(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

func validate(cfg vmm.Config) error {
	var missing []string
	if cfg.RunDir == "" {
		missing = append(missing, "RunDir")
	}
	if cfg.KernelPath == "" {
		missing = append(missing, "KernelPath")
	}
	if cfg.VCPUs <= 0 {
		missing = append(missing, "VCPUs")
	}
	if cfg.MemoryMB <= 0 {
		missing = append(missing, "MemoryMB")
	}
	if len(missing) > 0 {
		return fmt.Errorf("qemu config: missing %s", strings.Join(missing, ", "))
	}
	switch cfg.RootDiskFormat {
	case "", "raw", "qcow2":
	default:
		return fmt.Errorf("qemu config: root disk format %q (want raw or qcow2)", cfg.RootDiskFormat)
	}
	if cfg.TapName != "" && cfg.MAC == "" {
		return errors.New("qemu config: TapName set without MAC")
	}
	// sun_path is 108 bytes including the NUL.
	if p := filepath.Join(cfg.RunDir, qmpSockName); len(p) > 107 {
		return fmt.Errorf("qemu config: QMP socket path %q longer than 107 bytes; use a shorter RunDir", p)
	}
	return nil
}

// pitSection is how a migration stream names the i8254 PIT's section: the
// length-prefixed id string and instance 0.
var pitSection = []byte("\x05i8254\x00\x00\x00\x00")

// stateTail is how much of a state stream's end withPIT reads: device
// sections follow guest RAM (when the stream holds any) and take ~100 KiB.
const stateTail = 1 << 20

// withPIT reports whether the snapshot at statePath was taken with a PIT.
// Machines now boot without one (see Args), but QEMU refuses a stream with
// a section for a device the machine lacks, so snapshots taken before that
// restore with the PIT. A stray match only adds a PIT, which restores fine.
func withPIT(statePath string) (bool, error) {
	f, err := os.Open(statePath)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	off := max(0, fi.Size()-stateTail)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	return bytes.Contains(b, pitSection), nil
}
