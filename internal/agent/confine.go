package agent

import (
	"net/netip"

	"github.com/hearth-sandbox/hearth/internal/cgroup"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// Cgroups gives each sandbox's VMM its own cgroup (internal/cgroup).
type Cgroups interface {
	Create(id string, lim cgroup.Limits) (*cgroup.Group, error)
	// Remove deletes a sandbox's group once its VMM is gone.
	Remove(id string) error
	// Prune removes groups whose sandbox keep does not know.
	Prune(keep func(id string) bool) error
}

var _ Cgroups = (*cgroup.Manager)(nil)

// DefaultVMMUIDBase is the first uid of the range VMMs run as: far above
// the ranges of /etc/passwd accounts and of the usual subordinate uid
// ranges (100000 + 65536·n), so a VMM's uid owns nothing on the host.
const DefaultVMMUIDBase = 1_000_000_000

// VMMMemoryOverheadMB is what a VMM may use beyond its guest's RAM before
// its cgroup's memory.max stops it: QEMU's own heap, device emulation and,
// under TCG, translated code. Measured (tests/e2e TestVMMConfined, TCG,
// 512 MiB guest with ~400 MiB of it written): peak 647 MiB, so QEMU's own
// share is at most ~135-170 MiB; 256 leaves room for KVM/TCG differences.
const VMMMemoryOverheadMB = 256

// vmmPidsMax bounds a VMM's threads (vCPU threads, QEMU's I/O thread pool
// of up to 64, RCU and main loop): a guest escaping into QEMU cannot fork
// bomb the host, while QEMU never comes near it.
const vmmPidsMax = 256

// confine sets cfg's user and cgroup for sandbox id: the uid is the base
// plus the slot address's low 24 bits, unique among this host's running
// sandboxes (slot pools never overlap), so no two VMMs share a uid.
func (m *Manager) confine(cfg *vmm.Config, slotAddr string) error {
	if m.d.VMMUIDBase > 0 {
		if a, err := netip.ParseAddr(slotAddr); err == nil && a.Is4() {
			b := a.As4()
			off := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
			cfg.RunAsUID, cfg.RunAsGID = m.d.VMMUIDBase+off, m.d.VMMUIDBase+off
		}
	}
	if m.d.Cgroups == nil {
		return nil
	}
	g, err := m.d.Cgroups.Create(cfg.ID, cgroup.Limits{
		MemoryBytes: int64(cfg.MemoryMB+VMMMemoryOverheadMB) * MiB,
		CPUs:        cfg.VCPUs,
		Pids:        vmmPidsMax,
	})
	if err != nil {
		return err
	}
	cfg.Cgroup = g
	return nil
}
