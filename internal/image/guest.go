package image

import (
	"context"
	"os"
)

// InstallGuest makes a root tree a hearth guest whatever its distribution:
// hearth-init as /sbin/init, envd, and the "user" account with a home
// (bash as its shell and passwordless sudo when the tree has bash).
// Template builds call it on OCI images.
func InstallGuest(tree string, initBin, envdBin []byte) error {
	r, err := os.OpenRoot(tree)
	if err != nil {
		return err
	}
	// Through os.Root: an absolute symlink in the tree must not resolve on
	// the build host.
	_, err = r.Stat("bin/bash")
	r.Close()
	return installGuest(tree, guestBinaries{init: initBin, envd: envdBin}, err == nil)
}

// MkfsFromDir writes tree as a new ext4 image at out, sized to fit it with
// headroom but at least minMB.
func MkfsFromDir(ctx context.Context, tree, out string, minMB int64) error {
	used, err := treeSize(tree)
	if err != nil {
		return err
	}
	return mkfsFromDir(ctx, tree, out, max(fitMB(used), minMB))
}
