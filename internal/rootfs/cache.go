package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
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

	// use is held shared from a variant lookup until the disk made from it
	// exists (withVariant), and exclusively by pruning, so a prune never
	// deletes a variant between lookup and clone/overlay/snapshot and
	// always sees the disk that references it. Taken before mu.
	use sync.RWMutex
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

// withVariant runs makeDisk with the variant of base at size (see variant),
// holding off pruning until makeDisk has returned.
func (c *baseCache) withVariant(ctx context.Context, base string, size int64, prune bool, makeDisk func(variant string) error) error {
	c.use.RLock()
	defer c.use.RUnlock()
	v, err := c.variant(ctx, base, size, prune)
	if err != nil {
		return err
	}
	return makeDisk(v)
}

// variant returns the path of base resized to size, building it if needed.
// With prune, older versions of the same base are deleted (safe only when
// disks do not reference variants: reflink and copy clones are standalone).
// Callers hold use (withVariant).
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

// Variant file names: <pathKey>-<verKey>.ext4 (a base imported into a
// reflink cache) and <pathKey>-<verKey>-<size>.ext4 (a size variant).
var variantName = regexp.MustCompile(`^([0-9a-f]{12})-([0-9a-f]{12})(-[0-9]+)?\.ext4$`)

// pruneVariants removes cached files that nothing needs any more and
// returns their paths. A file stays when it belongs to the current version
// of a base in keepBases (the cache of an image or template this host
// still holds), or when refs() names it: the variants disks depend on
// (qcow2 backing files, device-mapper origins), read from the disks
// themselves under the exclusive lock, so a disk made concurrently is
// seen. With only != "" just the variants of that base path (every
// version) are considered, else also leftover staging files. refs errs
// when it cannot tell what disks reference: then nothing is removed.
func (c *baseCache) pruneVariants(keepBases []string, only string, refs func() (map[string]bool, error)) ([]string, error) {
	c.use.Lock()
	defer c.use.Unlock()
	c.mu.Lock() // no build in flight: staging files are leftovers
	defer c.mu.Unlock()
	keep := map[string]bool{} // pathKey-verKey
	for _, b := range keepBases {
		if pk, vk, err := baseKey(b); err == nil {
			keep[pk+"-"+vk] = true
		}
	}
	onlyKey := ""
	if only != "" {
		abs, err := filepath.Abs(only)
		if err != nil {
			return nil, err
		}
		p := sha256.Sum256([]byte(abs))
		onlyKey = hex.EncodeToString(p[:6])
	}
	used, err := refs()
	if err != nil {
		return nil, fmt.Errorf("rootfs: prune variants: %w", err)
	}
	ents, err := os.ReadDir(c.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		name, path := e.Name(), filepath.Join(c.dir, e.Name())
		m := variantName.FindStringSubmatch(name)
		switch {
		case m == nil:
			if onlyKey != "" || !strings.HasPrefix(name, ".") || !strings.Contains(name, ".tmp-") {
				continue // not ours to judge
			}
		case onlyKey != "" && m[1] != onlyKey, keep[m[1]+"-"+m[2]], referenced(used, path):
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, path)
		c.log.Info("rootfs: removed unreferenced base variant", "path", path)
	}
	return removed, errors.Join(errs...)
}

// referenced reports whether used names path in any of the spellings a
// reference may have: as built, absolute, or symlinks resolved.
func referenced(used map[string]bool, path string) bool {
	if used[path] || used[absOf(path)] {
		return true
	}
	a, err := filepath.Abs(path)
	return err == nil && used[a]
}

// absOf is p resolved the way the kernel reports loop backing files
// (absolute, symlinks resolved), or as absolute as it gets.
func absOf(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		if a, err := filepath.Abs(r); err == nil {
			return a
		}
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
