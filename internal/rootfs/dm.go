package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// DeviceMapper gives each sandbox a dm-snapshot: a read-only loop device of
// the base variant (shared by every sandbox of that base and size) as
// origin, and a sparse copy-on-write file, attached by its own loop device,
// as exception store. Creating one costs two ioctls and a dmsetup call and
// no data; the CoW file is sized independently of the origin
// (CreateSnapshot's cowSizeBytes).
//
// Layout under Dir: bases/ (variants), cow/<sandboxID>.cow and
// cow/<sandboxID>.origin (the origin image's path, so variant pruning
// knows a snapshot's origin even when its device is gone, e.g. after a
// reboot); devices /dev/mapper/<DMPrefix><sandboxID>.
type DeviceMapper struct {
	dir   string
	cache *baseCache
	log   *slog.Logger

	// mu guards origins and serializes origin attach/release, so one
	// variant never gets two origin loop devices.
	mu      sync.Mutex
	origins map[string]*origin // by variant path
}

type origin struct {
	dev  string
	refs int
}

var (
	_ Backend       = (*DeviceMapper)(nil)
	_ VariantPruner = (*DeviceMapper)(nil)
)

// DMPrefix names hearth's device-mapper devices.
const DMPrefix = "hth-"

// dmChunkSectors is the snapshot chunk: 8 sectors = 4 KiB, the guest's
// block size, so a 4 KiB write copies 4 KiB.
const dmChunkSectors = 8

// snapshotTable is the dm table of a persistent snapshot covering sectors.
func snapshotTable(sectors int64, originDev, cowDev string) string {
	return fmt.Sprintf("0 %d snapshot %s %s P %d", sectors, originDev, cowDev, dmChunkSectors)
}

func dmCreateArgs(name, table string) []string {
	return []string{"create", name, "--table", table}
}

func dmRemoveArgs(name string) []string {
	return []string{"remove", "--retry", name}
}

// DMUsable reports why device-mapper snapshots cannot be used here, or nil.
func DMUsable(ctx context.Context) error {
	misc, err := os.ReadFile("/proc/misc")
	if err != nil {
		return fmt.Errorf("device-mapper: %w", err)
	}
	if !strings.Contains(string(misc), "device-mapper") {
		return errors.New("device-mapper: not in this kernel (/proc/misc has no device-mapper): modprobe dm_mod dm_snapshot, or use a kernel with CONFIG_BLK_DEV_DM and CONFIG_DM_SNAPSHOT")
	}
	out, err := run(ctx, "dmsetup", "targets")
	if err != nil {
		return fmt.Errorf("device-mapper: %w (install dmsetup)", err)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "snapshot" {
			return nil
		}
	}
	return errors.New("device-mapper: no snapshot target: modprobe dm_snapshot")
}

// NewDeviceMapper returns the device-mapper backend rooted at dir.
func NewDeviceMapper(ctx context.Context, dir string, log *slog.Logger) (*DeviceMapper, error) {
	if err := DMUsable(ctx); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &DeviceMapper{dir: dir, log: log, origins: map[string]*origin{},
		cache: &baseCache{dir: filepath.Join(dir, "bases"), reflink: canReflink(dir) == nil, log: log}}, nil
}

func (b *DeviceMapper) Name() string                { return "devicemapper" }
func (b *DeviceMapper) cowPath(id string) string    { return filepath.Join(b.dir, "cow", id+".cow") }
func (b *DeviceMapper) originPath(id string) string { return filepath.Join(b.dir, "cow", id+".origin") }
func (b *DeviceMapper) mapperPath(id string) string { return "/dev/mapper/" + DMPrefix + id }

// Create snapshots the base variant of sizeBytes with a CoW file able to
// absorb a rewrite of the whole disk (sparse: it costs nothing until used).
func (b *DeviceMapper) Create(ctx context.Context, sandboxID, baseImage string, sizeBytes int64) (Disk, error) {
	if err := checkCreate(sandboxID, sizeBytes); err != nil {
		return Disk{}, err
	}
	var disk Disk
	err := b.cache.withVariant(ctx, baseImage, sizeBytes, false, func(v string) error {
		var err error
		disk, err = b.CreateSnapshot(ctx, sandboxID, v, sizeBytes)
		return err
	})
	if err != nil {
		return Disk{}, fmt.Errorf("rootfs devicemapper: %w", err)
	}
	return disk, nil
}

// CreateSnapshot creates /dev/mapper/<DMPrefix><sandboxID> over origin (an
// ext4 image, attached read-only and shared) with a sparse CoW file of
// cowSizeBytes. The snapshot has the origin's size; cowSizeBytes only
// bounds how much the sandbox may change (plus dm's metadata).
func (b *DeviceMapper) CreateSnapshot(ctx context.Context, sandboxID, originImage string, cowSizeBytes int64) (_ Disk, err error) {
	if !sandboxIDRE.MatchString(sandboxID) {
		return Disk{}, fmt.Errorf("rootfs: invalid sandbox id %q", sandboxID)
	}
	if cowSizeBytes <= 0 {
		return Disk{}, fmt.Errorf("rootfs devicemapper: cow size %d", cowSizeBytes)
	}
	st, err := os.Stat(originImage)
	if err != nil {
		return Disk{}, err
	}
	absOrigin, err := filepath.Abs(originImage)
	if err != nil {
		return Disk{}, err
	}
	cow := b.cowPath(sandboxID)
	if err := os.MkdirAll(filepath.Dir(cow), 0o755); err != nil {
		return Disk{}, err
	}
	// The origin record comes first: a cow file never exists without it.
	if err := stageFile(b.originPath(sandboxID), func(tmp string) error {
		return os.WriteFile(tmp, []byte(absOrigin+"\n"), 0o600)
	}); err != nil {
		return Disk{}, err
	}
	if err := os.WriteFile(cow, nil, 0o600); err != nil {
		os.Remove(b.originPath(sandboxID))
		return Disk{}, err
	}
	defer func() {
		if err != nil {
			os.Remove(cow)
			os.Remove(b.originPath(sandboxID))
		}
	}()
	if err := os.Truncate(cow, cowSizeBytes); err != nil {
		return Disk{}, err
	}
	cowDev, cowF, err := attachLoop(cow, false, true)
	if err != nil {
		return Disk{}, fmt.Errorf("rootfs devicemapper: cow loop: %w", err)
	}
	defer cowF.Close() // autoclear: dm holds it from now on, or it detaches
	originDev, err := b.acquireOrigin(originImage)
	if err != nil {
		return Disk{}, err
	}
	table := snapshotTable(st.Size()/512, originDev, cowDev)
	if _, err := run(ctx, "dmsetup", dmCreateArgs(DMPrefix+sandboxID, table)...); err != nil {
		b.releaseOrigin(originImage)
		return Disk{}, fmt.Errorf("rootfs devicemapper: %w", err)
	}
	return Disk{Path: b.mapperPath(sandboxID), Format: "raw"}, nil
}

// acquireOrigin returns the shared read-only loop device of image,
// attaching it on first use (or finding the one a previous agent left).
func (b *DeviceMapper) acquireOrigin(image string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if o, ok := b.origins[image]; ok {
		o.refs++
		return o.dev, nil
	}
	loops, err := listLoops()
	if err != nil {
		return "", err
	}
	for _, l := range loops {
		if l.Backing == image && !l.Deleted {
			b.origins[image] = &origin{dev: l.Dev, refs: 1}
			return l.Dev, nil
		}
	}
	// Not autoclear: the origin outlives each snapshot and is released by
	// refcount (releaseOrigin) or CleanupStale.
	dev, f, err := attachLoop(image, true, false)
	if err != nil {
		return "", fmt.Errorf("rootfs devicemapper: origin loop: %w", err)
	}
	f.Close()
	b.origins[image] = &origin{dev: dev, refs: 1}
	return dev, nil
}

func (b *DeviceMapper) releaseOrigin(image string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.origins[image]
	if !ok {
		return
	}
	if o.refs--; o.refs > 0 {
		return
	}
	delete(b.origins, image)
	if err := detachLoop(o.dev); err != nil {
		b.log.Warn("rootfs devicemapper: detach origin", "dev", o.dev, "err", err)
	}
}

// originOf reads the origin image of a snapshot from its table.
func (b *DeviceMapper) originOf(ctx context.Context, sandboxID string) (string, error) {
	out, err := run(ctx, "dmsetup", "table", DMPrefix+sandboxID)
	if err != nil {
		return "", err
	}
	f := strings.Fields(out) // 0 N snapshot MAJ:MIN MAJ:MIN P 8
	if len(f) < 5 {
		return "", fmt.Errorf("unexpected table %q", out)
	}
	loops, err := listLoops()
	if err != nil {
		return "", err
	}
	for _, l := range loops {
		dev, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(l.Dev), "dev"))
		if err == nil && strings.TrimSpace(string(dev)) == f[3] {
			return l.Backing, nil
		}
	}
	return "", fmt.Errorf("origin %s of %s not found", f[3], sandboxID)
}

func (b *DeviceMapper) Remove(ctx context.Context, sandboxID string) error {
	if !sandboxIDRE.MatchString(sandboxID) {
		return fmt.Errorf("rootfs: invalid sandbox id %q", sandboxID)
	}
	if _, err := os.Stat(b.mapperPath(sandboxID)); err == nil {
		originImage, oerr := b.originOf(ctx, sandboxID)
		if _, err := run(ctx, "dmsetup", dmRemoveArgs(DMPrefix+sandboxID)...); err != nil {
			return fmt.Errorf("rootfs devicemapper: %w", err)
		}
		if oerr == nil {
			b.mu.Lock()
			_, known := b.origins[originImage]
			if !known { // adopted after a restart
				b.origins[originImage] = &origin{refs: 1}
				if loops, err := listLoops(); err == nil {
					for _, l := range loops {
						if l.Backing == originImage {
							b.origins[originImage].dev = l.Dev
						}
					}
				}
			}
			b.mu.Unlock()
			b.releaseOrigin(originImage)
		}
	}
	// The cow loop is autoclear; detach explicitly in case dm never held it.
	cow := b.cowPath(sandboxID)
	if loops, err := listLoops(); err == nil {
		for _, l := range loops {
			if l.Backing == cow && l.Holders == 0 {
				detachLoop(l.Dev)
			}
		}
	}
	if err := os.Remove(cow); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rootfs devicemapper: %w", err)
	}
	// Last: while the cow file exists its origin must stay known.
	if err := os.Remove(b.originPath(sandboxID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rootfs devicemapper: %w", err)
	}
	return nil
}

func (b *DeviceMapper) PruneVariants(ctx context.Context, keepBases []string) ([]string, error) {
	return b.cache.pruneVariants(keepBases, "", func() (map[string]bool, error) { return b.refs(ctx) })
}

func (b *DeviceMapper) DropVariants(ctx context.Context, base string) ([]string, error) {
	return b.cache.pruneVariants(nil, base, func() (map[string]bool, error) { return b.refs(ctx) })
}

// refs returns the origin images snapshots depend on: every attached loop
// device's backing file (a live snapshot's origin stays attached), the
// origin record of every cow file, and, for a cow file without a record
// (made before records existed), its live device's table. A cow file whose
// origin cannot be told is an error: better no pruning than a snapshot
// without its origin.
func (b *DeviceMapper) refs(ctx context.Context) (map[string]bool, error) {
	used := map[string]bool{}
	loops, err := listLoops()
	if err != nil {
		return nil, err
	}
	for _, l := range loops {
		used[l.Backing] = true
	}
	cows, err := filepath.Glob(filepath.Join(b.dir, "cow", "*.cow"))
	if err != nil {
		return nil, err
	}
	for _, cow := range cows {
		id := strings.TrimSuffix(filepath.Base(cow), ".cow")
		if rec, err := os.ReadFile(b.originPath(id)); err == nil {
			used[strings.TrimSpace(string(rec))] = true
			continue
		}
		o, err := b.originOf(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("origin of %s unknown (no record, no device): %w", cow, err)
		}
		used[o] = true
	}
	return used, nil
}

func (b *DeviceMapper) Lookup(_ context.Context, sandboxID string) (Disk, error) {
	if !sandboxIDRE.MatchString(sandboxID) {
		return Disk{}, fmt.Errorf("rootfs: invalid sandbox id %q", sandboxID)
	}
	p := b.mapperPath(sandboxID)
	if _, err := os.Stat(p); err != nil {
		return Disk{}, fmt.Errorf("rootfs devicemapper: %s: %w", sandboxID, err)
	}
	return Disk{Path: p, Format: "raw"}, nil
}

// dmDevices lists hearth's device-mapper devices by name.
func dmDevices(ctx context.Context) ([]string, error) {
	out, err := run(ctx, "dmsetup", "ls")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], DMPrefix) {
			names = append(names, f[0])
		}
	}
	return names, nil
}
