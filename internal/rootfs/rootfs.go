// Package rootfs provides sandbox root disks cloned from base images, each
// sized to the sandbox's disk_size_mb. Backends: devicemapper (snapshot
// targets over loop devices), reflink (xfs/btrfs clone), qcow2 (QEMU
// overlays) and copy (sparse copy, works everywhere).
package rootfs

import "context"

// Disk is a sandbox's root disk as the VMM sees it.
type Disk struct {
	Path   string // file or block device
	Format string // "raw" or "qcow2"
}

// Backend creates and removes per-sandbox root disks.
type Backend interface {
	Name() string
	// Create makes the root disk of sandboxID from baseImage (an ext4 image)
	// with a filesystem of exactly sizeBytes.
	Create(ctx context.Context, sandboxID, baseImage string, sizeBytes int64) (Disk, error)
	// Remove deletes everything Create made for sandboxID; idempotent.
	Remove(ctx context.Context, sandboxID string) error
	// Path returns the disk of an existing sandbox (after agent restart).
	Lookup(ctx context.Context, sandboxID string) (Disk, error)
}

// VariantPruner is implemented by the backends that keep a cache of base
// variants (every backend here). Variants a disk of the backend depends on
// (a qcow2 overlay's backing file, a device-mapper snapshot's origin) are
// never removed: the backend reads those references from the disks
// themselves, so no caller can get the live set wrong.
type VariantPruner interface {
	// PruneVariants removes every cached variant that is neither of the
	// current version of a base in keepBases (images and templates this
	// host still holds) nor depended on by a disk, and returns the paths
	// removed.
	PruneVariants(ctx context.Context, keepBases []string) ([]string, error)
	// DropVariants removes the cached variants of base (every version and
	// size), e.g. of a deleted template's disk, except those a disk depends
	// on (which PruneVariants removes once the disk is gone).
	DropVariants(ctx context.Context, base string) ([]string, error)
}
