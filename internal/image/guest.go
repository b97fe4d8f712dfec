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
	bash := err == nil
	// A scratch image has none of the directories a running system needs.
	for _, d := range []string{"etc", "tmp", "root", "dev", "proc", "sys", "run"} {
		if err := r.MkdirAll(d, 0o755); err != nil {
			r.Close()
			return err
		}
	}
	if err := r.Chmod("tmp", 0o1777|os.ModeSticky); err != nil {
		r.Close()
		return err
	}
	// envd runs build steps and commands as root by name: minimal images
	// (distroless, scratch) may have no account database at all.
	for _, l := range [][3]string{{"etc/passwd", "root:", "root:x:0:0:root:/root:/bin/sh"}, {"etc/group", "root:", "root:x:0:"}} {
		if err := ensureLine(r, l[0], l[1], l[2], 0o644); err != nil {
			r.Close()
			return err
		}
	}
	r.Close()
	return installGuest(tree, guestBinaries{init: initBin, envd: envdBin}, bash)
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
