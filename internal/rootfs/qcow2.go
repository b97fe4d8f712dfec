package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
)

// Qcow2Backend gives QEMU a qcow2 overlay per sandbox.
//
// Why the filesystem really is disk_size_mb: a qcow2 overlay of a raw ext4
// only enlarges the block device; the ext4 inside cannot be resize2fs'ed on
// the host without nbd (absent here), and growing it from inside the guest
// needs an online resize at every boot. So the backing file is not the base
// itself but a size variant (baseCache): the base cloned and resize2fs'ed
// to exactly sizeBytes once per (base version, size), then shared read-only
// by every overlay of that size. The overlay's virtual size equals the
// filesystem size. Variants are never pruned automatically: overlays of
// paused sandboxes reference them by path.
//
// Layout under Dir: bases/ (variants), disks/<sandboxID>.qcow2.
type Qcow2Backend struct {
	dir   string
	cache *baseCache
}

var _ Backend = (*Qcow2Backend)(nil)

// NewQcow2 returns the qcow2 backend rooted at dir; variants are reflinked
// when dir can reflink, sparse-copied otherwise.
func NewQcow2(dir string, log *slog.Logger) *Qcow2Backend {
	if log == nil {
		log = slog.Default()
	}
	return &Qcow2Backend{dir: dir, cache: &baseCache{dir: filepath.Join(dir, "bases"), reflink: canReflink(dir) == nil, log: log}}
}

func (b *Qcow2Backend) Name() string              { return "qcow2" }
func (b *Qcow2Backend) diskPath(id string) string { return filepath.Join(b.dir, "disks", id+".qcow2") }

// qcow2CreateArgs is the qemu-img command line of an overlay.
func qcow2CreateArgs(backing, dst string, size int64) []string {
	return []string{"create", "-q", "-f", "qcow2", "-b", backing, "-F", "raw", dst, strconv.FormatInt(size, 10)}
}

func (b *Qcow2Backend) Create(ctx context.Context, sandboxID, baseImage string, sizeBytes int64) (Disk, error) {
	if err := checkCreate(sandboxID, sizeBytes); err != nil {
		return Disk{}, err
	}
	v, err := b.cache.variant(ctx, baseImage, sizeBytes, false)
	if err != nil {
		return Disk{}, fmt.Errorf("rootfs qcow2: %w", err)
	}
	dst := b.diskPath(sandboxID)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return Disk{}, err
	}
	if _, err := os.Stat(dst); err == nil {
		return Disk{}, fmt.Errorf("rootfs qcow2: disk of %s already exists", sandboxID)
	}
	if err := stageFile(dst, func(tmp string) error {
		_, err := run(ctx, "qemu-img", qcow2CreateArgs(v, tmp, sizeBytes)...)
		return err
	}); err != nil {
		return Disk{}, fmt.Errorf("rootfs qcow2: create %s: %w", sandboxID, err)
	}
	return Disk{Path: dst, Format: "qcow2"}, nil
}

func (b *Qcow2Backend) Remove(_ context.Context, sandboxID string) error {
	if !sandboxIDRE.MatchString(sandboxID) {
		return fmt.Errorf("rootfs: invalid sandbox id %q", sandboxID)
	}
	if err := os.Remove(b.diskPath(sandboxID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rootfs qcow2: remove %s: %w", sandboxID, err)
	}
	return nil
}

func (b *Qcow2Backend) Lookup(_ context.Context, sandboxID string) (Disk, error) {
	if !sandboxIDRE.MatchString(sandboxID) {
		return Disk{}, fmt.Errorf("rootfs: invalid sandbox id %q", sandboxID)
	}
	p := b.diskPath(sandboxID)
	if _, err := os.Stat(p); err != nil {
		return Disk{}, fmt.Errorf("rootfs qcow2: %s: %w", sandboxID, err)
	}
	return Disk{Path: p, Format: "qcow2"}, nil
}
