package rootfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
// filesystem size. Overlays reference their variant by path, so variants
// are never pruned on build; PruneVariants and DropVariants keep every
// variant an existing overlay names as its backing file.
//
// Layout under Dir: bases/ (variants), disks/<sandboxID>.qcow2.
type Qcow2Backend struct {
	dir   string
	cache *baseCache
}

var (
	_ Backend       = (*Qcow2Backend)(nil)
	_ VariantPruner = (*Qcow2Backend)(nil)
)

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
	dst := b.diskPath(sandboxID)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return Disk{}, err
	}
	if _, err := os.Stat(dst); err == nil {
		return Disk{}, fmt.Errorf("rootfs qcow2: disk of %s already exists", sandboxID)
	}
	if err := b.cache.withVariant(ctx, baseImage, sizeBytes, false, func(v string) error {
		if err := stageFile(dst, func(tmp string) error {
			_, err := run(ctx, "qemu-img", qcow2CreateArgs(v, tmp, sizeBytes)...)
			return err
		}); err != nil {
			return fmt.Errorf("create %s: %w", sandboxID, err)
		}
		return nil
	}); err != nil {
		return Disk{}, fmt.Errorf("rootfs qcow2: %w", err)
	}
	return Disk{Path: dst, Format: "qcow2"}, nil
}

func (b *Qcow2Backend) PruneVariants(_ context.Context, keepBases []string) ([]string, error) {
	return b.cache.pruneVariants(keepBases, "", b.refs)
}

func (b *Qcow2Backend) DropVariants(_ context.Context, base string) ([]string, error) {
	return b.cache.pruneVariants(nil, base, b.refs)
}

// refs returns the backing files of every overlay in disks/ (staging
// leftovers included: when in doubt, keep).
func (b *Qcow2Backend) refs() (map[string]bool, error) {
	ents, err := os.ReadDir(filepath.Join(b.dir, "disks"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, e := range ents {
		p := filepath.Join(b.dir, "disks", e.Name())
		backing, err := qcow2Backing(p)
		if err != nil {
			return nil, err
		}
		if backing != "" {
			used[backing] = true
		}
		if raw, err := qcow2BackingRaw(p); err == nil && raw != "" && !filepath.IsAbs(raw) {
			// A relative name written relative to the working directory
			// (a relative data dir): keep that reading too.
			if abs, err := filepath.Abs(raw); err == nil {
				used[abs] = true
			}
		}
	}
	return used, nil
}

// qcow2Backing returns the backing file of a qcow2 file as an absolute
// path ("" when it has none).
func qcow2Backing(path string) (string, error) {
	backing, err := qcow2BackingRaw(path)
	if err != nil || backing == "" {
		return backing, err
	}
	if !filepath.IsAbs(backing) {
		backing = filepath.Join(filepath.Dir(path), backing)
	}
	return filepath.Abs(backing)
}

// qcow2BackingRaw reads the backing file name from a qcow2 header (QEMU's
// docs/interop/qcow2.txt: magic "QFI\xfb", then version (4 bytes),
// backing_file_offset (8), backing_file_size (4), all big-endian), as
// written.
func qcow2BackingRaw(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := make([]byte, 20)
	if _, err := io.ReadFull(f, h); err != nil {
		return "", fmt.Errorf("qcow2 header of %s: %w", path, err)
	}
	if string(h[:4]) != "QFI\xfb" {
		return "", fmt.Errorf("%s: not a qcow2 file", path)
	}
	off, n := binary.BigEndian.Uint64(h[8:]), binary.BigEndian.Uint32(h[16:])
	if off == 0 || n == 0 {
		return "", nil
	}
	if n > 1023 { // the format's limit
		return "", fmt.Errorf("%s: backing file name of %d bytes", path, n)
	}
	name := make([]byte, n)
	if _, err := f.ReadAt(name, int64(off)); err != nil {
		return "", fmt.Errorf("qcow2 backing name of %s: %w", path, err)
	}
	return string(name), nil
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
