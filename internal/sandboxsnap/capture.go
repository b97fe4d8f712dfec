package sandboxsnap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/rootfs"
	"github.com/hearth-sandbox/hearth/internal/snapshot"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// Capture writes a template snapshot (the layout Export writes) of the
// running machine m, booted or restored with cfg, into dst (which must not
// exist), and leaves m running with its network, disk and processes.
//
// The guest stands still only while its device state is saved and its
// memory is taken, and while frozen runs (the caller clones the root disk
// there, so memory, device state and disk are of one instant); then QMP
// cont re-activates its block devices and it runs again, before the copy
// is written into dst. Memory is taken in one of three ways: a shared RAM
// file is copied within the tmpfs after QMP stop + migrate with
// x-ignore-shared; the pages of a private mapping (a resumed sandbox, a
// template's child) come out of a live migration (vmm.LiveSnapshotter)
// while the guest still runs, and it is stopped only for the last pass;
// a driver that cannot migrate live stops it for the whole stream. The
// returned duration is that standstill; m runs again on error too, unless
// the error says it could not be continued.
//
// Only drivers whose guest RAM is a shared file (QEMU) can do this; others
// return errors.ErrUnsupported, and the caller pauses, copies and resumes.
//
// Measured alternatives (QEMU 7.2 here): the background-snapshot migration
// capability works with the share=on RAM file (6 ms downtime for 256 MiB),
// but it puts RAM into the migration stream, which the template format
// does not hold (a conversion QEMU would have to load it again), and it
// needs userfaultfd in the unprivileged VMM.
func (s *Snapshotter) Capture(ctx context.Context, m vmm.Machine, cfg vmm.Config, dst string, frozen func(context.Context) error) (stood time.Duration, err error) {
	sm, ok := m.(vmm.Snapshotter)
	if !ok || !s.sharedMemory() {
		return 0, fmt.Errorf("sandboxsnap: capture a running %s machine: %w", s.o.Driver.Name(), errors.ErrUnsupported)
	}
	tmp, err := stageDir(dst)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	// The device state goes to the tmpfs first: nothing is synced to disk
	// while the guest stands still; it is copied into dst after.
	stem := filepath.Join(s.o.MemoryDir, capturePrefix+cfg.ID+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	state, ram := stem+".state", stem+".ram"
	defer os.Remove(state)
	defer os.Remove(ram)
	size := int64(cfg.MemoryMB) << 20
	pm, private := m.(privateRAM)
	private = private && pm.PrivateMemoryFile() != ""
	var parent *snapshot.Snapshot
	if private {
		// RAM mapped copy-on-write (a resumed sandbox, a template's child):
		// the pages the guest never wrote are the mapped file's. Copied
		// now, while the guest runs, only the pages whose hash differs
		// are written below, like a pause of it does.
		if parent = s.originSnapshot(pm.PrivateMemoryFile(), size); parent != nil {
			if err := rootfs.CopyFile(pm.PrivateMemoryFile(), ram); err != nil {
				s.log.Warn("capture: copy the mapped RAM file", "sandbox", cfg.ID, "err", err)
				os.Remove(ram)
				parent.Close()
				parent = nil
			} else {
				defer parent.Close()
			}
		}
	}
	var before time.Duration // standing still when the guest was stopped for us
	t0 := time.Now()
	live, isLive := m.(vmm.LiveSnapshotter)
	switch {
	case private && isLive:
		// Its pages come out of the migration stream into the copy while
		// it runs; QEMU stops it for the last pass only.
		err = s.captureStream(ram, size, parent, func(pages vmm.PageFunc) error {
			var err error
			before, err = live.SnapshotLive(ctx, vmm.SnapshotSpec{StatePath: state, Pages: pages})
			return err
		})
		t0 = time.Now()
	case private:
		err = s.captureStream(ram, size, parent, func(pages vmm.PageFunc) error {
			return sm.Snapshot(ctx, vmm.SnapshotSpec{StatePath: state, Pages: pages})
		})
	default:
		err = sm.Snapshot(ctx, vmm.SnapshotSpec{StatePath: state})
		if err == nil {
			// tmpfs to tmpfs, data extents only: what the guest never
			// touched is a hole and costs nothing.
			err = rootfs.CopyFile(s.MemoryFile(cfg.ID), ram)
		}
	}
	if err == nil && frozen != nil {
		err = frozen(ctx)
	}
	if rerr := sm.Resume(context.WithoutCancel(ctx)); rerr != nil {
		err = errors.Join(err, fmt.Errorf("continue the captured vm: %w", rerr))
	}
	stood = before + time.Since(t0)
	if err != nil {
		return stood, fmt.Errorf("capture %s: %w", cfg.ID, err)
	}
	f, err := os.Open(ram)
	if err != nil {
		return stood, err
	}
	defer f.Close()
	t1 := time.Now()
	if err := s.fillTemplate(ctx, tmp, f, int64(cfg.MemoryMB)<<20, 0, func(final string) error {
		return copySynced(state, final)
	}); err != nil {
		return stood, fmt.Errorf("capture %s: %w", cfg.ID, err)
	}
	if err := publishDir(tmp, dst); err != nil {
		return stood, err
	}
	s.log.Info("captured", "sandbox", cfg.ID, "standstill_ms", stood.Milliseconds(), "write_ms", time.Since(t1).Milliseconds(),
		"private_ram", private, "patched", parent != nil)
	return stood, nil
}

// captureStream runs save, which hands out the memory pages of a
// private-RAM machine, into ram: with parent, ram already holds parent's
// memory and only the pages that differ are written; without, ram is a new
// sparse file of size bytes.
func (s *Snapshotter) captureStream(ram string, size int64, parent *snapshot.Snapshot, save func(vmm.PageFunc) error) error {
	flag := os.O_RDWR
	if parent == nil {
		flag |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(ram, flag, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	var hdr *snapshot.Header
	if parent != nil {
		hdr = parent.Header()
	} else if err := f.Truncate(size); err != nil {
		return err
	}
	w := newRAMWriter(f, hdr, int(size/pageSize))
	if err := save(w.page); err != nil {
		return fmt.Errorf("save device state and memory: %w", err)
	}
	return w.flush()
}

// copySynced copies the file src to a new file dst and syncs it.
func copySynced(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// originSnapshot opens the committed snapshot whose memory the RAM file
// origin (ram-<seq>-<boot> in a snapshot directory) holds, or returns nil
// when origin holds no snapshot known to be that one.
func (s *Snapshotter) originSnapshot(origin string, size int64) *snapshot.Snapshot {
	seq, ok := s.parseRAMName(filepath.Base(origin))
	if !ok {
		return nil
	}
	snap, err := snapshot.Open(filepath.Join(filepath.Dir(origin), memDirName))
	if err != nil {
		return nil
	}
	if h := snap.Header(); h.Seq != seq || h.BlockSize != pageSize || int64(h.MemSize) != size {
		snap.Close()
		return nil
	}
	return snap
}

// capturePrefix names the RAM copies of captures in MemoryDir.
const capturePrefix = ".capture-"

// removeCaptureLeftovers deletes the RAM copies a killed agent's captures
// left in MemoryDir (tmpfs: they hold memory). MemoryDir is this agent's
// alone and a capture never outlives its process.
func (s *Snapshotter) removeCaptureLeftovers() {
	ents, _ := os.ReadDir(s.o.MemoryDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), capturePrefix) {
			if err := os.Remove(filepath.Join(s.o.MemoryDir, e.Name())); err != nil {
				s.log.Warn("remove a capture's RAM copy", "file", e.Name(), "err", err)
			}
		}
	}
}

// stageDir makes the staging directory beside dst that publishDir renames
// to dst.
func stageDir(dst string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", err
	}
	return os.MkdirTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".staging-")
}

// fillTemplate writes mem (size bytes of guest memory) as one generation
// into tmp's store and puts the matching device state in place with
// placeState (given the final name).
func (s *Snapshotter) fillTemplate(ctx context.Context, tmp string, mem io.ReaderAt, size int64, blockSize int, placeState func(final string) error) error {
	st, err := snapshot.NewStore(filepath.Join(tmp, memDirName), snapshot.Options{BlockSize: blockSize, Logger: s.log})
	if err != nil {
		return err
	}
	if err := st.WriteFull(ctx, mem, size); err != nil {
		return fmt.Errorf("write template memory: %w", err)
	}
	hdr, err := st.Current()
	if err != nil {
		return err
	}
	if err := placeState(filepath.Join(tmp, stateName(hdr.Seq))); err != nil {
		return fmt.Errorf("template device state: %w", err)
	}
	return syncDir(tmp)
}

// publishDir renames a complete staging directory to dst.
func publishDir(tmp, dst string) error {
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("publish %s: %w", dst, err)
	}
	return syncDir(filepath.Dir(dst))
}
