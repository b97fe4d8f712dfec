package rootfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
)

// Select picks the root-disk backend for dataDir and logs why:
// devicemapper if device-mapper snapshots work, else reflink on the data
// dir's own filesystem, else reflink in an xfs pool (OpenPool), else copy.
// Disks live under dataDir/rootfs (or the pool; the backend's Close
// unmounts a pool it mounted).
func Select(ctx context.Context, dataDir string, log *slog.Logger) (Backend, error) {
	if log == nil {
		log = slog.Default()
	}
	dir := filepath.Join(dataDir, "rootfs")
	dmErr := DMUsable(ctx)
	if dmErr == nil {
		b, err := NewDeviceMapper(ctx, dir, log)
		if err == nil {
			log.Info("rootfs: backend devicemapper", "dir", dir)
			return b, nil
		}
		dmErr = err
	}
	rlErr := canReflink(dir)
	if rlErr == nil {
		log.Info("rootfs: backend reflink", "dir", dir, "devicemapper", dmErr.Error())
		return newFileBackend("reflink", dir, true, log), nil
	}
	pool, poolErr := OpenPool(ctx, dataDir, log)
	if poolErr == nil {
		log.Info("rootfs: backend reflink (xfs pool)", "pool", pool.Mount, "devicemapper", dmErr.Error(), "native reflink", rlErr.Error())
		b := newFileBackend("reflink", pool.Mount, true, log)
		b.pool = pool
		return b, nil
	}
	log.Warn("rootfs: backend copy (slow creates)", "dir", dir, "devicemapper", dmErr.Error(),
		"native reflink", rlErr.Error(), "pool", poolErr.Error())
	return NewCopy(dir, log), nil
}

// New returns a backend by name ("devicemapper", "reflink", "qcow2",
// "copy"), for configuration that overrides Select. "reflink" uses the data
// dir when it can reflink and the xfs pool otherwise.
func New(ctx context.Context, name, dataDir string, log *slog.Logger) (Backend, error) {
	dir := filepath.Join(dataDir, "rootfs")
	switch name {
	case "devicemapper":
		return NewDeviceMapper(ctx, dir, log)
	case "reflink":
		if canReflink(dir) == nil {
			return newFileBackend("reflink", dir, true, log), nil
		}
		pool, err := OpenPool(ctx, dataDir, log)
		if err != nil {
			return nil, err
		}
		b, err := NewReflink(pool.Mount, log)
		if err != nil {
			return nil, errors.Join(err, pool.Close())
		}
		b.pool = pool
		return b, nil
	case "qcow2":
		return NewQcow2(dir, log), nil
	case "copy":
		return NewCopy(dir, log), nil
	}
	return nil, fmt.Errorf("rootfs: unknown backend %q", name)
}

// CleanupStale removes what a crash left behind under dataDir: hearth's
// device-mapper snapshots of sandboxes not in live, then loop devices whose
// backing file is under dataDir and that nothing uses any more (no holder,
// not mounted, not the CoW file of a live sandbox). live holds sandbox IDs.
func CleanupStale(ctx context.Context, dataDir string, live map[string]bool) error {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	var errs []error
	if DMUsable(ctx) == nil {
		names, err := dmDevices(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, n := range names {
			if live[strings.TrimPrefix(n, DMPrefix)] {
				continue
			}
			if _, err := run(ctx, "dmsetup", dmRemoveArgs(n)...); err != nil {
				errs = append(errs, err)
			}
		}
	}
	loops, err := listLoops()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	mounted, err := mountedDevices()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, l := range loops {
		if !strings.HasPrefix(l.Backing, abs+"/") || l.Holders > 0 || mounted[l.Dev] {
			continue
		}
		if filepath.Ext(l.Backing) == ".cow" && live[strings.TrimSuffix(filepath.Base(l.Backing), ".cow")] {
			continue
		}
		slog.InfoContext(ctx, "rootfs: detaching stale loop device", "dev", l.Dev, "backing", l.Backing)
		if err := detachLoop(l.Dev); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rootfs: cleanup: %w", err)
	}
	return nil
}
