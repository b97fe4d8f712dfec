package firecracker

import (
	"testing"

	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/vmmtest"
)

// TestConformance runs the VMM conformance suite against the fake
// Firecracker (fcfake): the driver's process handling, API calls (checked
// against Firecracker's spec), snapshot files and restore (the fake checks
// every restored page) are real; the fake runs no guest, so the suite's
// exec-through-envd steps are skipped, and it says so.
func TestConformance(t *testing.T) {
	d, _ := fakeEnv(t)
	vmmtest.Conformance(t, vmmtest.Target{
		Driver: d,
		Config: func(t *testing.T, dir string) vmm.Config {
			cfg := testConfig(dir)
			cfg.RootDisk = disk(t, dir, "sbx1.ext4", "conformance")
			return cfg
		},
	})
}
