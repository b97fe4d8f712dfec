package agent

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/rootfs"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
)

// Snapshot templates live in DATA/templates/<template>/:
//
//	snapshot/      the frozen memory (one generation) + device state, in the
//	               layout Snapshotter.Restore reads (sandboxsnap)
//	rootfs.ext4    the disk, a byte-for-byte sparse (or reflinked) copy
//	template.json  templateMeta (0600: holds the frozen envd's token)
//
// The directory is built under a staging name and renamed into place, so a
// template exists completely or not at all.
//
// Why the disk is not flattened with rootfs.FlattenRootfs (resize2fs -M):
// the frozen guest kernel has the mounted ext4's block layout (allocation
// bitmaps, extent trees, the journal position, the device size) cached in
// its memory. Shrinking relocates blocks, so every sandbox spawned from the
// template would write into blocks its kernel believes hold something else.
// A memory-snapshot template keeps its disk exactly as the guest left it;
// only base templates made from disks (no memory) are flattened and shrunk.
// Spawned disks are clones of it at exactly its filesystem size, so the
// root-disk backend never runs e2fsck or resize2fs on it.

const templateMetaFile = "template.json"

type templateMeta struct {
	TemplateID    string `json:"template_id"`
	SourceSandbox string `json:"source_sandbox"`
	VCPUs         int    `json:"vcpus"`
	MemoryMB      int    `json:"memory_mb"`
	DiskSizeMB    int    `json:"disk_size_mb"`
	DiskFSBytes   int64  `json:"disk_fs_bytes"` // ext4 size: spawned disks are cloned at exactly this size
	Driver        string `json:"driver"`        // the snapshot format (vmm.Capabilities.SnapshotFormat)
	User          string `json:"user"`
	Token         string `json:"token"` // the frozen envd's access token: /init re-auth
	// Volumes the frozen guest has mounted: every sandbox spawned from
	// the template mounts the same volumes of this host (its kernel
	// reconnects to the volume server the spawn starts).
	Volumes   []VolumeMount `json:"volumes,omitempty"`
	CreatedAt time.Time     `json:"created_at"`
}

func (m *Manager) templatesDir() string { return filepath.Join(m.d.DataDir, "templates") }

func (m *Manager) templateDir(id string) string { return filepath.Join(m.templatesDir(), id) }

func readTemplate(dir string) (templateMeta, error) {
	var t templateMeta
	b, err := os.ReadFile(filepath.Join(dir, templateMetaFile))
	if err != nil {
		return t, err
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return t, fmt.Errorf("%s: %w", filepath.Join(dir, templateMetaFile), err)
	}
	return t, nil
}

// checkTemplate loads spec's snapshot template and fixes the spec's shape
// to it: vCPUs and memory are baked into the frozen state (a request for
// others is refused naming the field), the disk is the template's.
func (m *Manager) checkTemplate(spec *Spec) (templateMeta, error) {
	if m.d.Snapshots == nil {
		return templateMeta{}, fmt.Errorf("create from snapshot template %s: %w", spec.TemplateID, ErrUnimplemented)
	}
	t, err := readTemplate(m.templateDir(spec.TemplateID))
	if errors.Is(err, os.ErrNotExist) {
		return t, fmt.Errorf("snapshot template %s: %w", spec.TemplateID, ErrNotFound)
	}
	if err != nil {
		return t, err
	}
	if f := m.d.Driver.Capabilities().SnapshotFormat; t.Driver != f {
		return t, fmt.Errorf("snapshot template %s was made with %s, this host runs %s: %w", t.TemplateID, t.Driver, f, ErrInvalid)
	}
	// Firecracker templates need no special case: its snapshot records the
	// drive's path, and every firecracker process sees its own disk at one
	// fixed path in its own mount namespace (vmm/firecracker package doc),
	// so a spawned sandbox opens its clone, not the source's disk.
	if spec.VCPUs != t.VCPUs {
		return t, &FieldError{Field: "vcpus", Msg: fmt.Sprintf("%d: snapshot template %s is fixed at %d", spec.VCPUs, t.TemplateID, t.VCPUs)}
	}
	if spec.MemoryMB != t.MemoryMB {
		return t, &FieldError{Field: "memory_mb", Msg: fmt.Sprintf("%d: snapshot template %s is fixed at %d", spec.MemoryMB, t.TemplateID, t.MemoryMB)}
	}
	if spec.DiskSizeMB < t.DiskSizeMB {
		return t, &FieldError{Field: "disk_size_mb", Msg: fmt.Sprintf("%d: snapshot template %s needs %d", spec.DiskSizeMB, t.TemplateID, t.DiskSizeMB)}
	}
	// The guest's file system is frozen at the template's size: a bigger
	// request gets the template's disk (it cannot grow under a live kernel).
	spec.DiskSizeMB = t.DiskSizeMB
	if len(t.Volumes) > 0 {
		if err := m.volumesExist(t.Volumes); err != nil {
			return t, fmt.Errorf("snapshot template %s mounts %w", t.TemplateID, err)
		}
		spec.Volumes = t.Volumes
	}
	return t, nil
}

// spawn is the create path of a snapshot template: disk clone → network →
// restore the frozen VM (no boot) → envd /init with the new token.
func (m *Manager) spawn(ctx context.Context, sb *sandbox, t templateMeta) error {
	spec := sb.spec
	if err := os.MkdirAll(sb.runDir, 0o700); err != nil {
		return err
	}
	m.saveMeta(sb)
	dir := m.templateDir(spec.TemplateID)
	disk, err := m.d.Disks.Create(ctx, spec.ID, filepath.Join(dir, "rootfs.ext4"), t.DiskFSBytes)
	if err != nil {
		return fmt.Errorf("root disk: %w", err)
	}
	sb.mu.Lock()
	sb.disk = &disk
	sb.mu.Unlock()
	return m.restore(ctx, sb, filepath.Join(dir, "snapshot"), t.User, t.Token)
}

// SnapshotInfo describes a snapshot template.
type SnapshotInfo struct {
	TemplateID string
	VCPUs      int
	MemoryMB   int
	DiskSizeMB int
}

// CreateSnapshot makes snapshot template templateID from a running sandbox
// (standing still only for the capture, see captureRunning) or a paused
// one. Idempotent: a retry
// for the same sandbox returns the existing template.
func (m *Manager) CreateSnapshot(ctx context.Context, sandboxID, templateID string) (SnapshotInfo, error) {
	if !validTemplate.MatchString(templateID) {
		return SnapshotInfo{}, &FieldError{Field: "template_id", Msg: fmt.Sprintf("%q", templateID)}
	}
	sb, err := m.get(sandboxID)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if m.d.Snapshots == nil {
		return SnapshotInfo{}, fmt.Errorf("create snapshot: %w", ErrUnimplemented)
	}
	if err := sb.lock(ctx); err != nil {
		return SnapshotInfo{}, err
	}
	defer sb.unlock()
	dst := m.templateDir(templateID)
	if t, err := readTemplate(dst); err == nil {
		if t.SourceSandbox != sandboxID {
			return SnapshotInfo{}, fmt.Errorf("snapshot template %s: %w", templateID, ErrAlreadyExists)
		}
		return t.info(), nil
	}
	state := sb.currentState()
	if state != sbx.StateRunning && state != sbx.StatePaused {
		return SnapshotInfo{}, &sbx.ErrTransition{ID: sandboxID, From: state, To: sbx.StatePaused}
	}
	t0 := time.Now()
	var t templateMeta
	if state == sbx.StateRunning {
		t, err = m.captureRunning(ctx, sb, templateID, dst)
	}
	if state == sbx.StatePaused || errors.Is(err, errors.ErrUnsupported) {
		t, err = m.capturePaused(ctx, sb, templateID, dst, state == sbx.StateRunning)
	}
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("create snapshot %s of %s: %w", templateID, sandboxID, err)
	}
	m.crash("template:written")
	sb.log.Info("snapshot template created", "template", templateID, "ms", time.Since(t0).Milliseconds())
	return t.info(), nil
}

func (t templateMeta) info() SnapshotInfo {
	return SnapshotInfo{TemplateID: t.TemplateID, VCPUs: t.VCPUs, MemoryMB: t.MemoryMB, DiskSizeMB: t.DiskSizeMB}
}

// captureClonePrefix names the root-disk clones captureRunning makes beside
// a sandbox's disk (removed at start-up if a capture was cut short).
const captureClonePrefix = ".capture-"

// captureRunning makes the template of a running sandbox, which keeps
// running: its ID, processes, network slot (so connections to it survive),
// envd and expiry stay. The guest stands still while the Capturer saves its
// state and copies its memory, and the root disk is cloned then: a reflink
// beside the disk (milliseconds) copied into the template once the guest
// runs again, or, where the disk's filesystem cannot reflink, a copy made
// while it stands still. errors.ErrUnsupported: no Capturer for this driver.
func (m *Manager) captureRunning(ctx context.Context, sb *sandbox, templateID, dst string) (templateMeta, error) {
	c, ok := m.d.Snapshots.(Capturer)
	if !ok {
		return templateMeta{}, errors.ErrUnsupported
	}
	sb.mu.Lock()
	machine, cfg, user := sb.machine, sb.cfg, sb.user
	sb.mu.Unlock()
	disk, err := m.d.Disks.Lookup(ctx, sb.spec.ID)
	if err != nil {
		return templateMeta{}, fmt.Errorf("root disk: %w", err)
	}
	return m.writeTemplate(ctx, sb, templateID, dst, func(tmp string) (frozenEnvd, error) {
		diskDst := filepath.Join(tmp, "rootfs.ext4")
		var clone string
		defer func() {
			if clone != "" {
				os.Remove(clone)
			}
		}()
		stood, err := c.Capture(ctx, machine, cfg, filepath.Join(tmp, "snapshot"), func(ctx context.Context) error {
			p := filepath.Join(filepath.Dir(disk.Path), captureClonePrefix+templateID+"-"+filepath.Base(disk.Path))
			if rootfs.Reflink(disk.Path, p) == nil {
				clone = p
			} else if err := copyDisk(ctx, disk, diskDst); err != nil {
				return err
			}
			m.crash("capture:frozen")
			return nil
		})
		if err != nil {
			return frozenEnvd{}, err
		}
		// How long the source stood still: what snapshot and fork callers
		// wait on (docs/e2b.md compares it with a pause).
		sb.log.Info("source captured", "template", templateID, "standstill_ms", stood.Milliseconds(), "disk_reflinked", clone != "")
		if clone != "" {
			if err := copyDisk(ctx, rootfs.Disk{Path: clone, Format: disk.Format}, diskDst); err != nil {
				return frozenEnvd{}, fmt.Errorf("copy root disk: %w", err)
			}
		}
		// The running envd holds the sandbox's current token.
		return frozenEnvd{Token: sb.spec.AccessToken, User: user}, nil
	})
}

// capturePaused makes the template from a paused sandbox's snapshot; a
// running one (wasRunning: a driver without a Capturer) is paused for the
// copy and resumed, standing still for all of it.
func (m *Manager) capturePaused(ctx context.Context, sb *sandbox, templateID, dst string, wasRunning bool) (templateMeta, error) {
	if wasRunning {
		paused := time.Now()
		if err := m.pauseLocked(ctx, sb); err != nil {
			return templateMeta{}, err
		}
		defer func() {
			// Resume whatever happened to the copy: the sandbox was running.
			if err := m.resumeLocked(context.WithoutCancel(ctx), sb, "", sb.spec.Egress); err != nil {
				sb.log.Error("resume after snapshot", "err", err)
				return
			}
			sb.log.Info("source resumed after snapshot", "template", templateID, "standstill_ms", time.Since(paused).Milliseconds())
		}()
	}
	return m.writeTemplate(ctx, sb, templateID, dst, func(tmp string) (frozenEnvd, error) {
		src := snapshotDir(sb.runDir)
		frozen, err := readFrozen(src)
		if err != nil {
			return frozen, fmt.Errorf("frozen envd record: %w", err)
		}
		if err := m.d.Snapshots.Export(ctx, src, filepath.Join(tmp, "snapshot")); err != nil {
			return frozen, err
		}
		disk, err := m.d.Disks.Lookup(ctx, sb.spec.ID)
		if err != nil {
			return frozen, fmt.Errorf("root disk: %w", err)
		}
		if err := copyDisk(ctx, disk, filepath.Join(tmp, "rootfs.ext4")); err != nil {
			return frozen, fmt.Errorf("copy root disk: %w", err)
		}
		return frozen, nil
	})
}

// writeTemplate stages template templateID of sb: fill writes the snapshot
// and rootfs.ext4 into the staging dir and returns the frozen envd's
// record; then the metadata is written and the dir renamed to dst.
func (m *Manager) writeTemplate(ctx context.Context, sb *sandbox, templateID, dst string, fill func(tmp string) (frozenEnvd, error)) (t templateMeta, err error) {
	if err := os.MkdirAll(m.templatesDir(), 0o700); err != nil {
		return t, err
	}
	tmp, err := os.MkdirTemp(m.templatesDir(), ".staging-"+templateID+"-")
	if err != nil {
		return t, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	frozen, err := fill(tmp)
	if err != nil {
		return t, err
	}
	fsBytes, err := ext4Size(filepath.Join(tmp, "rootfs.ext4"))
	if err != nil {
		return t, err
	}
	t = templateMeta{
		TemplateID: templateID, SourceSandbox: sb.spec.ID,
		VCPUs: sb.spec.VCPUs, MemoryMB: sb.spec.MemoryMB, DiskSizeMB: sb.spec.DiskSizeMB, DiskFSBytes: fsBytes,
		Driver: m.d.Driver.Capabilities().SnapshotFormat, User: frozen.User, Token: frozen.Token, CreatedAt: time.Now().UTC(),
		Volumes: sb.spec.Volumes,
	}
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return t, err
	}
	if err := writeFileAtomic(filepath.Join(tmp, templateMetaFile), b); err != nil {
		return t, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return t, err
	}
	return t, nil
}

// copyDisk copies a paused sandbox's disk byte for byte (never fsck'd or
// resized: see the comment at the top of this file).
func copyDisk(ctx context.Context, disk rootfs.Disk, dst string) error {
	if disk.Format == "qcow2" {
		out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", disk.Path, dst).CombinedOutput()
		if err != nil {
			return fmt.Errorf("qemu-img convert: %w: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return rootfs.CopyFile(disk.Path, dst)
}

// ext4Size reads the file system size (blocks × block size) from an ext4
// superblock.
func ext4Size(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return 0, fmt.Errorf("read superblock of %s: %w", path, err)
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xEF53 {
		return 0, fmt.Errorf("%s: not an ext4 file system", path)
	}
	blocks := uint64(binary.LittleEndian.Uint32(sb[0x4:]))
	if binary.LittleEndian.Uint32(sb[0x60:])&0x80 != 0 { // 64bit feature
		blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
	}
	return int64(blocks) * (1024 << binary.LittleEndian.Uint32(sb[0x18:])), nil
}

// DeleteSnapshot removes a snapshot template's files; idempotent. It is
// refused (FAILED_PRECONDITION) while sandboxes of this host were created
// from it: their disks were cloned from its disk and paused ones may need
// its state again.
func (m *Manager) DeleteSnapshot(ctx context.Context, templateID string) error {
	if !validTemplate.MatchString(templateID) {
		return &FieldError{Field: "template_id", Msg: fmt.Sprintf("%q", templateID)}
	}
	var users []string
	m.mu.Lock()
	for id, sb := range m.sandboxes {
		if sb.spec.TemplateKind == sbx.KindSnapshot && sb.spec.TemplateID == templateID {
			users = append(users, id)
		}
	}
	m.mu.Unlock()
	if len(users) > 0 {
		return fmt.Errorf("snapshot template %s is used by sandboxes %v: %w", templateID, users, ErrInUse)
	}
	dir := m.templateDir(templateID)
	if !exists(dir) {
		return nil
	}
	// Rename first: the template disappears at once, a failed removal
	// leaves only garbage (collected at start-up).
	trash, err := os.MkdirTemp(m.templatesDir(), ".deleting-"+templateID+"-")
	if err != nil {
		return err
	}
	if err := os.Rename(dir, filepath.Join(trash, "t")); err != nil {
		os.Remove(trash)
		return fmt.Errorf("delete snapshot template %s: %w", templateID, err)
	}
	// The root-disk backend cached the template's disk (spawned disks are
	// made from it like from a base image); those variants go too. The
	// backend keeps any a disk still depends on (none: no sandbox here
	// was created from the template) and the start-up prune takes the
	// rest.
	if p, ok := m.d.Disks.(rootfs.VariantPruner); ok {
		if _, err := p.DropVariants(ctx, filepath.Join(dir, "rootfs.ext4")); err != nil {
			m.log.Warn("delete snapshot template: remove cached disk variants", "template", templateID, "err", err)
		}
	}
	return os.RemoveAll(trash)
}

// templateDisks returns the disk of every snapshot template held here.
func (m *Manager) templateDisks() []string {
	ents, _ := os.ReadDir(m.templatesDir())
	var disks []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			disks = append(disks, filepath.Join(m.templatesDir(), e.Name(), "rootfs.ext4"))
		}
	}
	return disks
}

// cleanTemplateLeftovers removes staging and trash dirs of a crashed agent.
func (m *Manager) cleanTemplateLeftovers() {
	ents, _ := os.ReadDir(m.templatesDir())
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".staging-") || strings.HasPrefix(e.Name(), ".deleting-") {
			if err := os.RemoveAll(filepath.Join(m.templatesDir(), e.Name())); err != nil {
				m.log.Warn("remove template leftover", "dir", e.Name(), "err", err)
			}
		}
	}
}

// frozenEnvd is what the frozen guest's envd was initialised with, kept in
// the snapshot dir (0600).
type frozenEnvd struct {
	Token string `json:"token"`
	User  string `json:"user"`
}

const frozenFile = "envd.json"

func writeFrozen(dir string, f frozenEnvd) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, frozenFile), b)
}

func readFrozen(dir string) (frozenEnvd, error) {
	var f frozenEnvd
	b, err := os.ReadFile(filepath.Join(dir, frozenFile))
	if err != nil {
		return f, err
	}
	return f, json.Unmarshal(b, &f)
}
