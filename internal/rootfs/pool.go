package rootfs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Pool is an xfs filesystem (reflink=1) in a sparse file, mounted through a
// loop device under the data dir. It gives reflink clones (ms, no space)
// to hosts whose data dir is on ext4.
//
// Thin provisioning: the pool's apparent size defaults to the size of the
// filesystem holding it, so it can never promise more than the host has;
// it is mounted with -o discard so deleted sandbox disks return their
// blocks to the host file as holes.
type Pool struct {
	Image string // the sparse file
	Mount string // where it is mounted
}

const (
	poolImageName = "rootfs-pool.xfs"
	poolMountName = "rootfs-pool"
	minPoolSize   = 64 << 30
)

// OpenPool mounts the pool of dataDir, creating it on first use; calling it
// again (or after an agent restart, when the mount still exists) reuses
// what is there.
func OpenPool(ctx context.Context, dataDir string, log *slog.Logger) (*Pool, error) {
	if log == nil {
		log = slog.Default()
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	p := &Pool{Image: filepath.Join(abs, poolImageName), Mount: filepath.Join(abs, poolMountName)}
	if src, err := mountSource(p.Mount); err != nil {
		return nil, err
	} else if src != "" {
		return p, nil
	}
	if err := os.MkdirAll(p.Mount, 0o755); err != nil {
		return nil, err
	}
	if _, err := os.Stat(p.Image); os.IsNotExist(err) {
		var st unix.Statfs_t
		if err := unix.Statfs(abs, &st); err != nil {
			return nil, err
		}
		size := max(int64(st.Blocks)*st.Bsize, minPoolSize)
		if err := stageFile(p.Image, func(tmp string) error {
			if err := os.WriteFile(tmp, nil, 0o600); err != nil {
				return err
			}
			if err := os.Truncate(tmp, size); err != nil {
				return err
			}
			_, err := run(ctx, "mkfs.xfs", "-q", "-m", "reflink=1", tmp)
			return err
		}); err != nil {
			return nil, fmt.Errorf("rootfs: create pool %s: %w (needs xfsprogs)", p.Image, err)
		}
		log.Info("rootfs: created xfs reflink pool", "image", p.Image, "size", size)
	}
	dev, f, err := attachLoop(p.Image, false, true)
	if err != nil {
		return nil, fmt.Errorf("rootfs: pool loop: %w", err)
	}
	// The mount holds the device; with autoclear it detaches on unmount.
	defer f.Close()
	if err := unix.Mount(dev, p.Mount, "xfs", 0, "discard"); err != nil {
		return nil, fmt.Errorf("rootfs: mount pool %s on %s: %w", dev, p.Mount, err)
	}
	log.Info("rootfs: mounted xfs reflink pool", "device", dev, "mount", p.Mount)
	return p, nil
}

// Close unmounts the pool (the loop device goes with it). Only for tests
// and `hearth` maintenance: a running agent keeps its pool mounted.
func (p *Pool) Close() error {
	if err := unix.Unmount(p.Mount, 0); err != nil && err != unix.EINVAL {
		return fmt.Errorf("rootfs: unmount pool %s: %w", p.Mount, err)
	}
	return nil
}
