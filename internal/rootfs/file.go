package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
)

var sandboxIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

func checkCreate(sandboxID string, sizeBytes int64) error {
	if !sandboxIDRE.MatchString(sandboxID) {
		return fmt.Errorf("rootfs: invalid sandbox id %q", sandboxID)
	}
	if sizeBytes <= 0 || sizeBytes%4096 != 0 {
		return fmt.Errorf("rootfs: disk size %d must be a positive multiple of 4096", sizeBytes)
	}
	return nil
}

// FileBackend keeps each sandbox disk as a raw ext4 file cloned from a
// size variant of the base: with FICLONE on a reflink filesystem
// ("reflink": milliseconds, no space) or as a sparse copy ("copy": works
// on any filesystem, costs the base's data once per sandbox).
//
// Layout under Dir: bases/ (variants), disks/<sandboxID>.ext4.
type FileBackend struct {
	name  string
	dir   string
	cache *baseCache
	pool  *Pool // the xfs pool dir lives in, when Select/New mounted one
}

var (
	_ Backend       = (*FileBackend)(nil)
	_ VariantPruner = (*FileBackend)(nil)
)

// NewReflink returns the reflink backend rooted at dir, which must be on a
// filesystem supporting FICLONE (see OpenPool when it is not).
func NewReflink(dir string, log *slog.Logger) (*FileBackend, error) {
	if err := canReflink(dir); err != nil {
		return nil, fmt.Errorf("rootfs: %s cannot reflink: %w", dir, err)
	}
	return newFileBackend("reflink", dir, true, log), nil
}

// NewCopy returns the sparse-copy backend rooted at dir.
func NewCopy(dir string, log *slog.Logger) *FileBackend {
	return newFileBackend("copy", dir, false, log)
}

func newFileBackend(name, dir string, reflink bool, log *slog.Logger) *FileBackend {
	if log == nil {
		log = slog.Default()
	}
	return &FileBackend{name: name, dir: dir, cache: &baseCache{dir: filepath.Join(dir, "bases"), reflink: reflink, log: log}}
}

func (b *FileBackend) Name() string { return b.name }

func (b *FileBackend) diskPath(id string) string { return filepath.Join(b.dir, "disks", id+".ext4") }

func (b *FileBackend) Create(ctx context.Context, sandboxID, baseImage string, sizeBytes int64) (Disk, error) {
	if err := checkCreate(sandboxID, sizeBytes); err != nil {
		return Disk{}, err
	}
	dst := b.diskPath(sandboxID)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return Disk{}, err
	}
	if _, err := os.Stat(dst); err == nil {
		return Disk{}, fmt.Errorf("rootfs %s: disk of %s already exists", b.name, sandboxID)
	}
	if err := b.cache.withVariant(ctx, baseImage, sizeBytes, true, func(v string) error {
		if err := stageFile(dst, func(tmp string) error { return b.cache.clone(v, tmp) }); err != nil {
			return fmt.Errorf("create %s: %w", sandboxID, err)
		}
		return nil
	}); err != nil {
		return Disk{}, fmt.Errorf("rootfs %s: %w", b.name, err)
	}
	return Disk{Path: dst, Format: "raw"}, nil
}

// noRefs: clones and copies are standalone, no disk depends on a variant.
func noRefs() (map[string]bool, error) { return nil, nil }

func (b *FileBackend) PruneVariants(_ context.Context, keepBases []string) ([]string, error) {
	return b.cache.pruneVariants(keepBases, "", noRefs)
}

func (b *FileBackend) DropVariants(_ context.Context, base string) ([]string, error) {
	return b.cache.pruneVariants(nil, base, noRefs)
}

// Close releases the xfs pool the backend's disks live in, if Select or
// New mounted one (Pool.Close: refused while any process uses a file in
// it, e.g. a VMM its disk). Disks stay in the pool file and are found
// again when the next OpenPool mounts it. Without a pool: nothing to do.
func (b *FileBackend) Close() error {
	if b.pool == nil {
		return nil
	}
	return b.pool.Close()
}

func (b *FileBackend) Remove(_ context.Context, sandboxID string) error {
	if !sandboxIDRE.MatchString(sandboxID) {
		return fmt.Errorf("rootfs: invalid sandbox id %q", sandboxID)
	}
	if err := os.Remove(b.diskPath(sandboxID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rootfs %s: remove %s: %w", b.name, sandboxID, err)
	}
	return nil
}

func (b *FileBackend) Lookup(_ context.Context, sandboxID string) (Disk, error) {
	if !sandboxIDRE.MatchString(sandboxID) {
		return Disk{}, fmt.Errorf("rootfs: invalid sandbox id %q", sandboxID)
	}
	p := b.diskPath(sandboxID)
	if _, err := os.Stat(p); err != nil {
		return Disk{}, fmt.Errorf("rootfs %s: %s: %w", b.name, sandboxID, err)
	}
	return Disk{Path: p, Format: "raw"}, nil
}
