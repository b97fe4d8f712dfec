package rootfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

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
	// A loop device still attached to the image (the filesystem is alive
	// somewhere: another mount namespace, a lazy unmount) is mounted again,
	// which shares its superblock; a second device would mount a second
	// xfs instance on the same file and corrupt it.
	dev, err := attachedLoop(p.Image)
	if err != nil {
		return nil, err
	}
	if dev == "" {
		var f *os.File
		dev, f, err = attachLoop(p.Image, false, true)
		if err != nil {
			return nil, fmt.Errorf("rootfs: pool loop: %w", err)
		}
		// The mount holds the device; with autoclear it detaches on unmount.
		defer f.Close()
	}
	if err := unix.Mount(dev, p.Mount, "xfs", 0, "discard"); err != nil {
		return nil, fmt.Errorf("rootfs: mount pool %s on %s: %w", dev, p.Mount, err)
	}
	log.Info("rootfs: mounted xfs reflink pool", "device", dev, "mount", p.Mount)
	return p, nil
}

// attachedLoop returns a loop device attached to image, or "".
func attachedLoop(image string) (string, error) {
	loops, err := listLoops()
	if err != nil {
		return "", err
	}
	want := absOf(image)
	for _, l := range loops {
		if l.Backing == want && !l.Deleted {
			return l.Dev, nil
		}
	}
	return "", nil
}

// ErrPoolBusy: the pool is in use and stays mounted.
var ErrPoolBusy = errors.New("rootfs: pool in use")

// Close unmounts the pool and detaches its loop device, so a stopped agent
// (or a deleted data dir) leaves nothing behind; the data stays in the
// image and the next OpenPool mounts it again. Idempotent.
//
// It refuses with ErrPoolBusy, leaving everything mounted, while anything
// else uses the filesystem: a process with a file in it open or mapped
// (a VMM and its disk), or a mount of it in another mount namespace that
// the unmount would not take along (a VMM's bind mount of its disk):
// unmounting here would leave the filesystem alive there, and a later
// OpenPool would have to find its loop device again. A pool created
// outside OpenPool may leave Image empty; it is read from the device.
func (p *Pool) Close() error {
	src, err := mountSource(p.Mount)
	if err != nil {
		return err
	}
	image := p.Image
	if src != "" && image == "" {
		b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(src), "loop", "backing_file"))
		if err == nil {
			image = strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		}
	}
	if src != "" {
		var st unix.Stat_t
		if err := unix.Stat(p.Mount, &st); err != nil {
			return fmt.Errorf("rootfs: pool %s: %w", p.Mount, err)
		}
		// Copies of the mount in other namespaces do not block: they use
		// no data, the loop device (autoclear) goes with the last of them,
		// and OpenPool reuses that device meanwhile, so the filesystem is
		// never mounted through two devices.
		users, copies, err := fsUsers(p.Mount, st.Dev)
		if err != nil {
			return fmt.Errorf("rootfs: pool %s: %w", p.Mount, err)
		}
		if len(users) > 0 {
			return fmt.Errorf("%w: %s stays mounted: %s", ErrPoolBusy, p.Mount, strings.Join(users, "; "))
		}
		if err := unix.Unmount(p.Mount, 0); errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%w: unmount %s: %w", ErrPoolBusy, p.Mount, err)
		} else if err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("rootfs: unmount pool %s: %w", p.Mount, err)
		}
		if len(copies) > 0 {
			return nil // the loop device goes with the last copy (autoclear)
		}
	}
	if image == "" {
		return nil
	}
	// Autoclear detached the device with the unmount; a device left over
	// (an older agent, a crash between attach and mount) goes now if no
	// one holds it.
	loops, err := listLoops()
	if err != nil {
		return err
	}
	mounted, err := mountedDevices()
	if err != nil {
		return err
	}
	want := absOf(image)
	for _, l := range loops {
		if l.Backing != want || l.Deleted {
			continue
		}
		if l.Holders > 0 || mounted[l.Dev] {
			return fmt.Errorf("%w: loop device %s of %s is still in use", ErrPoolBusy, l.Dev, image)
		}
		if err := detachLoop(l.Dev); err != nil {
			return fmt.Errorf("rootfs: pool loop %s: %w", l.Dev, err)
		}
	}
	if dev, err := attachedLoop(image); err != nil {
		return err
	} else if dev != "" {
		// LOOP_CLR_FD defers the detach while the device is open.
		return fmt.Errorf("%w: loop device %s of %s is still open", ErrPoolBusy, dev, image)
	}
	return nil
}
