package rootfs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// EnsureImageSizes grows every base image imagesDir/<name>/*.ext4 whose
// filesystem is smaller than defaultBytes to exactly defaultBytes, so
// default-size sandboxes take the fast path (no per-size variant). It never
// shrinks. Each image is grown on a staged copy (reflink or sparse copy)
// that then replaces it by rename: a reader holding the old file keeps a
// consistent image, and the new version gets a new identity, so variants
// that paused sandboxes depend on are never touched. Idempotent.
func EnsureImageSizes(ctx context.Context, imagesDir string, defaultBytes int64) error {
	imgs, err := filepath.Glob(filepath.Join(imagesDir, "*", "*.ext4"))
	if err != nil {
		return err
	}
	for _, img := range imgs {
		size, bs, err := fsSize(img)
		if err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		if size >= defaultBytes {
			continue
		}
		want := defaultBytes - defaultBytes%bs
		if err := stageFile(img, func(tmp string) error {
			if err := reflinkFile(img, tmp); err != nil {
				if err := sparseCopy(img, tmp); err != nil {
					return err
				}
			}
			if err := resizeImage(ctx, tmp, want); err != nil {
				return err
			}
			return os.Chmod(tmp, 0o644)
		}); err != nil {
			return fmt.Errorf("rootfs: grow %s: %w", img, err)
		}
		slog.InfoContext(ctx, "rootfs: grew base image", "image", img, "from", size, "to", want)
	}
	return nil
}

// FlattenRootfs writes disk (raw file, block device or qcow2) as a new
// standalone ext4 image at dst, shrunk to its minimum with resize2fs -M so
// stored templates are compact (EnsureImageSizes grows them back). The
// sandbox must be stopped or paused so the disk is consistent; the journal
// is replayed by e2fsck. dst appears atomically.
func FlattenRootfs(ctx context.Context, disk Disk, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	err := stageFile(dst, func(tmp string) error {
		switch disk.Format {
		case "qcow2":
			if _, err := run(ctx, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", disk.Path, tmp); err != nil {
				return err
			}
		case "raw", "":
			if err := sparseCopy(disk.Path, tmp); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown disk format %q", disk.Format)
		}
		if err := shrinkImage(ctx, tmp); err != nil {
			return err
		}
		return os.Chmod(tmp, 0o644)
	})
	if err != nil {
		return fmt.Errorf("rootfs: flatten %s to %s: %w", disk.Path, dst, err)
	}
	return nil
}

// ResizeImage makes the ext4 filesystem in the unmounted raw image at path
// size bytes (a multiple of its block size), growing sparsely or shrinking.
func ResizeImage(ctx context.Context, path string, size int64) error {
	if err := resizeImage(ctx, path, size); err != nil {
		return fmt.Errorf("rootfs: resize %s: %w", path, err)
	}
	return nil
}
