package sandboxsnap

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/vmm/qemu"
)

// A new Snapshotter removes the RAM copies a killed agent's captures left
// in its memory dir, and nothing else there.
func TestNewRemovesCaptureLeftovers(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{capturePrefix + "sbx1-abc.ram", "sbx2.ram"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(Options{Driver: qemu.New(qemu.Options{}), MemoryDir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, capturePrefix+"sbx1-abc.ram")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("capture leftover still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sbx2.ram")); err != nil {
		t.Errorf("a running sandbox's RAM file was removed: %v", err)
	}
}
