package sandboxsnap

import (
	"errors"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/firecracker"
	"github.com/hearth-sandbox/hearth/internal/vmm/qemu"
)

// capsDriver is a real driver declaring other capabilities, as a third
// driver might.
type capsDriver struct {
	Driver
	caps vmm.Capabilities
}

func (d capsDriver) Capabilities() vmm.Capabilities { return d.caps }

// The snapshotter picks its path from capabilities: a driver that declares
// none (or an incomplete model) is refused, never sent down another
// driver's path; the names play no part.
func TestNewAsksCapabilities(t *testing.T) {
	fc := firecracker.New(firecracker.Options{})
	for _, tc := range []struct {
		name       string
		d          Driver
		ok, shared bool
	}{
		{"qemu", qemu.New(qemu.Options{}), true, true},
		{"firecracker", fc, true, false},
		{"no snapshots", capsDriver{fc, vmm.Capabilities{}}, false, false},
		{"vmm-written without lazy restore", capsDriver{fc, vmm.Capabilities{Memory: vmm.MemoryVMMWritten, DiffSnapshots: true}}, false, false},
		{"shared file under another name", capsDriver{fc, vmm.Capabilities{Memory: vmm.MemorySharedFile}}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Options{Driver: tc.d, DataDir: t.TempDir()})
			switch {
			case !tc.ok && !errors.Is(err, errors.ErrUnsupported):
				t.Fatalf("New: %v, want ErrUnsupported", err)
			case tc.ok && err != nil:
				t.Fatal(err)
			case tc.ok && s.sharedMemory() != tc.shared:
				t.Fatalf("shared memory %v, want %v", s.sharedMemory(), tc.shared)
			}
		})
	}
}
