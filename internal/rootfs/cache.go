package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// baseCache keeps, per base image version and disk size, an ext4 image
// already resized to that size ("variant"). A sandbox disk is then a clone
// (reflink), an overlay (qcow2) or a snapshot (device-mapper) of a variant,
// so e2fsck/resize2fs run once per (base, size), not per sandbox.
//
// A variant's name includes the base's identity (path, inode, size, mtime):
// when EnsureImageSizes or a rebuild replaces a base, new variants are made
// and the old ones, which qcow2 overlays and dm snapshots of paused
// sandboxes may still depend on, are never modified.
type baseCache struct {
	dir     string
	reflink bool // clone with FICLONE inside dir (else sparse copies)
	log     *slog.Logger

	mu sync.Mutex // serializes variant builds (rare); files are staged + renamed
}

func baseKey(base string) (pathKey, verKey string, err error) {
	abs, err := filepath.Abs(base)
	if err != nil {
		return "", "", err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", "", err
	}
	var ino uint64
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = s.Ino
	}
	p := sha256.Sum256([]byte(abs))
	v := sha256.Sum256([]byte(fmt.Sprintf("%s|%d|%d|%d", abs, ino, st.Size(), st.ModTime().UnixNano())))
	return hex.EncodeToString(p[:6]), hex.EncodeToString(v[:6]), nil
}

// variant returns the path of base resized to size, building it if needed.
// With prune, older versions of the same base are deleted (safe only when
// disks do not reference variants: reflink and copy clones are standalone).
func (c *baseCache) variant(ctx context.Context, base string, size int64, prune bool) (string, error) {
	pk, vk, err := baseKey(base)
	if err != nil {
		return "", fmt.Errorf("base image: %w", err)
	}
	path := filepath.Join(c.dir, fmt.Sprintf("%s-%s-%d.ext4", pk, vk, size))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return "", err
	}
	src := base
	if c.reflink {
		// Import the base into the clone filesystem once per version so
		// every size variant shares its blocks.
		imported := filepath.Join(c.dir, fmt.Sprintf("%s-%s.ext4", pk, vk))
		if _, err := os.Stat(imported); err != nil {
			if err := stageFile(imported, func(tmp string) error {
				if err := reflinkFile(base, tmp); err == nil {
					return nil
				}
				return sparseCopy(base, tmp) // base on another filesystem
			}); err != nil {
				return "", fmt.Errorf("import base %s: %w", base, err)
			}
		}
		src = imported
	}
	if err := stageFile(path, func(tmp string) error {
		if err := c.clone(src, tmp); err != nil {
			return err
		}
		return resizeImage(ctx, tmp, size)
	}); err != nil {
		return "", fmt.Errorf("size variant of %s: %w", base, err)
	}
	c.log.Info("rootfs: built base variant", "base", base, "size", size, "path", path)
	if prune {
		c.prune(pk, vk)
	}
	return path, nil
}

func (c *baseCache) clone(src, dst string) error {
	if c.reflink {
		return reflinkFile(src, dst)
	}
	return sparseCopy(src, dst)
}

// prune removes cached files of older versions of one base.
func (c *baseCache) prune(pathKey, verKey string) {
	old, _ := filepath.Glob(filepath.Join(c.dir, pathKey+"-*.ext4"))
	for _, f := range old {
		if !strings.HasPrefix(filepath.Base(f), pathKey+"-"+verKey) {
			os.Remove(f)
		}
	}
}

// stageFile builds dst through a temporary file in the same directory and
// renames it into place, so dst is either absent or complete.
func stageFile(dst string, build func(tmp string) error) error {
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-"+strconv.Itoa(os.Getpid()))
	os.Remove(tmp) // left by a crash of this same pid number
	if err := build(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
