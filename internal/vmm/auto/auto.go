// Package auto picks the VMM driver a host can run: Firecracker when it
// probes OK (binary + a guest that really boots under KVM), else QEMU with
// KVM when a KVM guest really boots, else QEMU with TCG. Probes are cached
// for the Selector's life (one per agent process).
package auto

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/firecracker"
	"github.com/hearth-sandbox/hearth/internal/vmm/qemu"
)

// Options configure the candidates.
type Options struct {
	// KernelPath is the guest vmlinux the KVM probes boot.
	KernelPath        string
	FirecrackerBinary string // default "firecracker"
	// Firecracker's jailer (firecracker.Options Jailer, ChrootBase,
	// AllowRoot): without a jailer Firecracker is not selected unless
	// root is allowed.
	FirecrackerJailer, FirecrackerChrootBase string
	FirecrackerAllowRoot                     bool
	QEMUBinary                               string // default "qemu-system-x86_64"
	// Prefer restricts the choice to one of "firecracker", "qemu-kvm",
	// "qemu-tcg" (or "qemu": either QEMU); empty: the first that works.
	Prefer string
	Logger *slog.Logger
}

// Selector probes once and remembers.
type Selector struct {
	opts       Options
	candidates []candidate

	once    sync.Once
	chosen  vmm.Driver
	results []vmm.ProbeResult
	err     error
}

type candidate struct {
	name   string
	driver vmm.Driver
}

// New returns a selector; nothing is probed until Select.
func New(opts Options) *Selector {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	fc := firecracker.New(firecracker.Options{
		Binary: opts.FirecrackerBinary, ProbeKernel: opts.KernelPath, Logger: opts.Logger,
		Jailer: opts.FirecrackerJailer, ChrootBase: opts.FirecrackerChrootBase, AllowRoot: opts.FirecrackerAllowRoot,
	})
	kvm := qemu.New(qemu.Options{Binary: opts.QEMUBinary, Accel: qemu.AccelKVM, ProbeKernel: opts.KernelPath, Logger: opts.Logger})
	tcg := qemu.New(qemu.Options{Binary: opts.QEMUBinary, Accel: qemu.AccelTCG, Logger: opts.Logger})
	return &Selector{opts: opts, candidates: []candidate{
		{"firecracker", fc}, {"qemu-kvm", kvm}, {"qemu-tcg", tcg},
	}}
}

// Select returns the chosen driver and every candidate's probe result (all
// candidates are probed so doctor can explain the whole picture).
func (s *Selector) Select(ctx context.Context) (vmm.Driver, []vmm.ProbeResult, error) {
	s.once.Do(func() { s.chosen, s.results, s.err = s.selectDriver(ctx) })
	return s.chosen, s.results, s.err
}

func (s *Selector) selectDriver(ctx context.Context) (vmm.Driver, []vmm.ProbeResult, error) {
	var (
		chosen  vmm.Driver
		name    string
		results []vmm.ProbeResult
		errs    []string
	)
	for _, c := range s.candidates {
		start := time.Now()
		err := c.driver.Probe(ctx)
		results = append(results, vmm.ProbeResult{Driver: c.name, Err: err, Elapsed: time.Since(start)})
		if err != nil {
			errs = append(errs, c.name+": "+err.Error())
			continue
		}
		if chosen == nil && s.allowed(c.name) {
			chosen, name = c.driver, c.name
		}
	}
	if chosen == nil {
		return nil, results, fmt.Errorf("%w: no VMM driver can run here (prefer %q): %s", vmm.ErrUnsupported, s.opts.Prefer, strings.Join(errs, "; "))
	}
	s.opts.Logger.Info("vmm: selected driver", "driver", name)
	return chosen, results, nil
}

func (s *Selector) allowed(name string) bool {
	switch p := s.opts.Prefer; p {
	case "":
		return true
	case "qemu":
		return strings.HasPrefix(name, "qemu-")
	default:
		return name == p
	}
}

// Variant names a driver as Select reports it ("firecracker", "qemu-kvm",
// "qemu-tcg").
func Variant(d vmm.Driver) string {
	switch d := d.(type) {
	case nil:
		return ""
	case *qemu.Driver:
		return d.Variant()
	default:
		return d.Name()
	}
}
