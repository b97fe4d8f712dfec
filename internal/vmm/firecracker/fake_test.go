package firecracker

// The fake Firecracker (internal/vmm/firecracker/fcfake): the test binary
// re-executes itself as `firecracker`.

import (
	"os"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/vmm/firecracker/fcfake"
)

func TestMain(m *testing.M) {
	fcfake.Main()
	os.Exit(m.Run())
}
