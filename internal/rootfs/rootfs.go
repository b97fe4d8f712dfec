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
