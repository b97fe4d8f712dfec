//go:build vm

package qemu_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/vmmtest"
)

// TestConformance runs the VMM conformance suite against real QEMU: the
// tiny image boots to envd in a network namespace, commands run through
// envd, and the restored guest still holds what it wrote to tmpfs.
func TestConformance(t *testing.T) {
	d, im := tinyTCG(t)
	vmmtest.Conformance(t, vmmtest.Target{
		Driver: d,
		Config: func(t *testing.T, dir string) vmm.Config {
			ns, tap := vmmtest.NetNSWithTap(t)
			return vmm.Config{
				ID: "conformance", KernelPath: im.Kernel, InitrdPath: im.Initrd, KernelArgs: tinyKernelArgs,
				RootDisk: vmmtest.CopyFile(t, im.Tiny, dir), RootDiskFormat: "raw", VCPUs: 1, MemoryMB: 256,
				NetNS: ns, TapName: tap, MAC: vmmtest.GuestMAC,
			}
		},
		Ready: func(ctx context.Context, t *testing.T, m vmm.Machine, cfg vmm.Config) error {
			log, err := vmmtest.WaitForConsole(ctx, vmm.ConsoleLog(cfg.RunDir), 0, envdMarker, waitExit(m))
			if err != nil {
				return fmt.Errorf("%w\nconsole:\n%s", err, tail(log))
			}
			return nil
		},
		GuestAddr: "169.254.0.21:49983",
		Timeout:   4 * time.Minute,
	})
}
