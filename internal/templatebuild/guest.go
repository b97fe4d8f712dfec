package templatebuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// GuestBinariesFrom reads hearth-init and envd out of an existing hearth
// root disk (debugfs, no mount): an OCI image gets exactly the guest
// programs this host's own images boot with.
func GuestBinariesFrom(rootfsPath string) func(ctx context.Context) ([]byte, []byte, error) {
	return func(ctx context.Context) ([]byte, []byte, error) {
		dir, err := os.MkdirTemp("", "hearth-guestbin-")
		if err != nil {
			return nil, nil, err
		}
		defer os.RemoveAll(dir)
		var out [2][]byte
		for i, p := range []string{"/sbin/init", "/usr/bin/envd"} {
			dst := filepath.Join(dir, filepath.Base(p))
			if b, err := exec.CommandContext(ctx, "debugfs", "-R", "dump "+p+" "+dst, rootfsPath).CombinedOutput(); err != nil {
				return nil, nil, fmt.Errorf("debugfs dump %s from %s: %w: %s", p, rootfsPath, err, b)
			}
			if out[i], err = os.ReadFile(dst); err != nil || len(out[i]) == 0 {
				return nil, nil, fmt.Errorf("%s has no %s", rootfsPath, p)
			}
		}
		return out[0], out[1], nil
	}
}
