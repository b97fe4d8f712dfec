package sandboxsnap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/hearth-sandbox/hearth/internal/snapshot"
	"github.com/hearth-sandbox/hearth/internal/vmm"
	"golang.org/x/sys/unix"
)

// Lazy QEMU restore (see the package documentation, "Resume (QEMU)").
//
// A snapshot directory may hold ram-<seq>-<boot id>: the guest memory of
// header <seq> laid out flat, written during this boot of the host. It is a
// cache of the store, never the record: it is not fsynced (a host crash
// changes the boot id, which retires the file) and a restore that finds
// none materialises it once. Restores map it copy-on-write (QEMU
// memory-backend-file share=off), so pages come in through the page cache
// on first touch and every sandbox restored from one directory (all the
// children of a template) shares the clean ones.
const ramPrefix = "ram-"

// pageSize is the unit of guest memory QEMU hands out and working sets
// record.
const pageSize = 4096

func ramName(seq uint64, boot string) string {
	return fmt.Sprintf("%s%016x-%s", ramPrefix, seq, boot)
}

// parseRAMName returns the seq of a ram-<seq>-<boot> file of this boot.
func (s *Snapshotter) parseRAMName(name string) (uint64, bool) {
	rest, ok := strings.CutPrefix(name, ramPrefix)
	if !ok {
		return 0, false
	}
	hex, boot, ok := strings.Cut(rest, "-")
	if !ok || boot != s.boot {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil
}

// bootID identifies this boot of the host (a RAM file written before the
// last reboot may have lost writes that were never flushed).
func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// lazy reports whether QEMU restores map the RAM file copy-on-write.
func (s *Snapshotter) lazy() bool {
	return s.sharedMemory() && !s.o.EagerRestore && s.o.Driver.Capabilities().PrivateRestore
}

// ramFile returns dir's flat RAM file for snap, materialising it first if
// this boot has none (the one eager step, once per snapshot).
//
// Restores from one directory (the children of a template spawned at once)
// wait for each other here: one builds the file, the others map it.
func (s *Snapshotter) ramFile(ctx context.Context, dir string, snap *snapshot.Snapshot) (path string, built bool, err error) {
	unlock, err := s.lockDir(ctx, dir)
	if err != nil {
		return "", false, err
	}
	defer unlock()
	path = filepath.Join(dir, ramName(snap.Seq(), s.boot))
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	if _, err := Materialize(ctx, snap, path); err != nil {
		return "", false, err
	}
	s.removeStaleRAM(dir, filepath.Base(path))
	return path, true, nil
}

// lockDir serialises the writers of RAM files in one directory in this
// process.
func (s *Snapshotter) lockDir(ctx context.Context, dir string) (func(), error) {
	s.mu.Lock()
	ch, ok := s.ramLocks[dir]
	if !ok {
		ch = make(chan struct{}, 1)
		s.ramLocks[dir] = ch
	}
	s.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// removeStaleRAM deletes RAM files of dir other than keep (older seqs,
// earlier boots, interrupted writes). A running machine that maps one keeps
// its pages: the mapping holds the inode.
func (s *Snapshotter) removeStaleRAM(dir, keep string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		n := e.Name()
		if n != keep && (strings.HasPrefix(n, ramPrefix) || strings.HasPrefix(n, "."+ramPrefix)) {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

// privateRAM is a machine whose guest RAM is a copy-on-write mapping of a
// file (the QEMU driver's machines restored lazily).
type privateRAM interface {
	PrivateMemoryFile() string
}

// restoreLazy maps dir's RAM file copy-on-write into a new QEMU, after
// asking the kernel to read ahead the working set the last resume from
// dir touched, and records this resume's working set.
func (s *Snapshotter) restoreLazy(ctx context.Context, cfg vmm.Config, snap *snapshot.Snapshot, state, dir string) (vmm.Machine, error) {
	t0 := time.Now()
	ram, built, err := s.ramFile(ctx, dir, snap)
	if err != nil {
		return nil, err
	}
	prefetched := s.prefetchRAM(dir, ram, snap.NumBlocks()*snap.BlockSize()/pageSize)
	t1 := time.Now()
	cfg.MemoryFile = ram
	m, err := s.o.Driver.Restore(ctx, cfg, vmm.RestoreSpec{StatePath: state, MemoryPath: ram, MemoryPrivate: true})
	if err != nil {
		return m, err
	}
	s.log.Info("restored lazily", "sandbox", cfg.ID, "ram_file_built", built, "prepare_ms", t1.Sub(t0).Milliseconds(),
		"prefetch_bytes", prefetched, "vmm_ms", time.Since(t1).Milliseconds())
	if s.o.WorkingSetWindow > 0 {
		go s.recordWorkingSet(m.PID(), ram, dir, snap.NumBlocks()*snap.BlockSize()/pageSize)
	}
	return m, nil
}

// ramWriter receives the pages a private-RAM QEMU hands out while it is
// snapshotted and writes them into a RAM file of pages pages. With parent
// hashes (patch mode: the file holds the parent snapshot, the one the
// machine was restored from) only pages whose hash differs are written;
// without (a new sparse file) every non-zero page is. Every page written
// is marked in dirty, and a page handed out again (a live snapshot's
// later pass) is written whenever it was written before, even if it now
// equals the parent or zero, so the last copy of a page always wins.
// Consecutive pages are written in runs of up to 1 MiB.
type ramWriter struct {
	f      *os.File
	hashes []uint64
	zh     uint64
	dirty  *snapshot.Bitmap
	run    []byte
	runOff int64
}

func newRAMWriter(f *os.File, parent *snapshot.Header, pages int) *ramWriter {
	w := &ramWriter{f: f, run: make([]byte, 0, 1<<20)}
	if parent != nil {
		w.hashes = parent.Hashes
		w.zh = xxhash.Sum64(make([]byte, pageSize))
		pages = len(parent.Hashes)
	}
	w.dirty = snapshot.NewBitmap(pages)
	return w
}

func (w *ramWriter) page(off int64, data []byte) error {
	i := int(off / pageSize)
	if i < 0 || i >= w.dirty.Len() {
		return fmt.Errorf("guest page at %#x beyond the snapshot", off)
	}
	again := w.dirty.Test(i)
	switch {
	case w.hashes != nil && !again:
		h := w.zh
		if data != nil {
			h = xxhash.Sum64(data)
		}
		if h == w.hashes[i] {
			return nil
		}
	case w.hashes == nil && data == nil && !again:
		return nil // a new sparse file reads zero where nothing is written
	}
	w.dirty.Set(i)
	if data == nil {
		if err := w.flush(); err != nil {
			return err
		}
		// The page was zeroed: it must read as zero from the file too.
		return zeroRange(w.f, off, pageSize)
	}
	if len(w.run) > 0 && (w.runOff+int64(len(w.run)) != off || len(w.run) == cap(w.run)) {
		if err := w.flush(); err != nil {
			return err
		}
	}
	if len(w.run) == 0 {
		w.runOff = off
	}
	w.run = append(w.run, data...)
	return nil
}

func (w *ramWriter) flush() error {
	if len(w.run) == 0 {
		return nil
	}
	_, err := w.f.WriteAt(w.run, w.runOff)
	w.run = w.run[:0]
	return err
}

// zeroRange makes [off, off+n) of f read as zeros: a hole where the file
// system can punch one, written zeros elsewhere.
func zeroRange(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil || !unsupported(err) {
		return err
	}
	_, err = f.WriteAt(make([]byte, n), off)
	return err
}

// pausePrivate pauses a machine restored lazily: QEMU hands out every
// guest page while it writes the device state (its RAM is private, so it
// is not skipped). When the machine was restored from this directory's
// current snapshot, the pages that differ from it are patched into that
// snapshot's RAM file (moved to a staging name first: from then on it no
// longer holds that snapshot) and recorded as a diff; otherwise (a child
// of a template pausing for the first time) the pages go to a new sparse
// file, recorded in full. After the commit the file becomes the RAM file
// of the new snapshot, so the next resume maps it without copying.
func (s *Snapshotter) pausePrivate(ctx context.Context, m vmm.Snapshotter, cfg vmm.Config, dir, origin string) (st pauseStats, err error) {
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	stagingState := filepath.Join(dir, stagingPrefix+"state-"+suffix)
	stagingRAM := filepath.Join(dir, stagingPrefix+"ram-"+suffix)
	defer os.Remove(stagingState)
	defer os.Remove(stagingRAM) // renamed away on success
	size := int64(cfg.MemoryMB) << 20

	var (
		parent  *snapshot.Header
		prevMem *snapshot.Snapshot // the parent's memory, to roll patches back
	)
	if snap, err := snapshot.Open(filepath.Join(dir, memDirName)); err == nil {
		defer snap.Close()
		hdr := snap.Header()
		seq, ok := s.parseRAMName(filepath.Base(origin))
		// The file is gone after a failed pause whose rollback failed.
		_, serr := os.Stat(origin)
		if ok && seq == hdr.Seq && hdr.BlockSize == pageSize && int64(hdr.MemSize) == size &&
			filepath.Dir(origin) == filepath.Clean(dir) && serr == nil {
			parent, prevMem = hdr, snap
		}
	}
	var f *os.File
	if parent != nil {
		if err := os.Rename(origin, stagingRAM); err != nil {
			return st, fmt.Errorf("stage RAM file: %w", err)
		}
		f, err = os.OpenFile(stagingRAM, os.O_RDWR, 0)
	} else {
		f, err = os.OpenFile(stagingRAM, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			err = f.Truncate(size)
		}
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return st, fmt.Errorf("RAM file: %w", err)
	}
	defer f.Close()
	w := newRAMWriter(f, parent, int(size/pageSize))
	committed := false
	if parent != nil {
		defer func() {
			if err != nil && !committed {
				s.rollbackRAM(f, w, prevMem, stagingRAM, origin)
			}
		}()
	}
	t0 := time.Now()
	if err := m.Snapshot(ctx, vmm.SnapshotSpec{StatePath: stagingState, Pages: w.page}); err != nil {
		return st, fmt.Errorf("save device state and memory: %w", err)
	}
	if err := w.flush(); err != nil {
		return st, fmt.Errorf("write RAM file: %w", err)
	}
	st.state = time.Since(t0)
	s.crash("state")
	if err := s.step("state"); err != nil {
		return st, err
	}
	t1 := time.Now()
	seq, kind, dirty, err := s.writeMemory(ctx, dir, f, size, w.dirty)
	if err != nil {
		return st, err
	}
	committed = true
	st.memory, st.kind, st.dirty, st.seq = time.Since(t1), kind, dirty, seq
	s.keepRAMFile(dir, stagingRAM, seq)
	return st, s.commitState(dir, stagingState, seq)
}

// rollbackRAM undoes the patches of a failed pause: the patched pages are
// read back from the parent snapshot (still the committed one) and the
// file gets its name again, so the next pause patches it instead of
// writing all of memory. If that fails the file is dropped (the next
// resume rebuilds it).
func (s *Snapshotter) rollbackRAM(f *os.File, w *ramWriter, parent *snapshot.Snapshot, staged, origin string) {
	w.run = w.run[:0]
	buf := make([]byte, pageSize)
	err := func() error {
		for i := w.dirty.NextSet(0); i >= 0; i = w.dirty.NextSet(i + 1) {
			if err := parent.ReadBlock(i, buf); err != nil {
				return err
			}
			off := int64(i) * pageSize
			if _, _, zero := parent.Source(i); zero {
				if err := zeroRange(f, off, pageSize); err != nil {
					return err
				}
			} else if _, err := f.WriteAt(buf, off); err != nil {
				return err
			}
		}
		return os.Rename(staged, origin)
	}()
	if err != nil {
		s.log.Warn("roll back RAM file after a failed pause", "file", origin, "err", err)
	}
}

// keepRAMFile renames a RAM file holding exactly snapshot seq to its
// cache name (failure only costs the next resume a materialisation).
func (s *Snapshotter) keepRAMFile(dir, path string, seq uint64) {
	if unlock, err := s.lockDir(context.Background(), dir); err == nil {
		defer unlock()
	}
	name := ramName(seq, s.boot)
	if err := os.Rename(path, filepath.Join(dir, name)); err != nil {
		s.log.Warn("keep RAM file", "dir", dir, "err", err)
		return
	}
	s.removeStaleRAM(dir, name)
}

// copyRAMFile copies a shared RAM file (a booted machine's, in the memory
// dir) into dir as the RAM file of snapshot seq, sparse: holes are skipped.
func (s *Snapshotter) copyRAMFile(ctx context.Context, src *os.File, dir string, size int64, seq uint64) error {
	dst, err := os.CreateTemp(dir, "."+ramPrefix+"copy-*")
	if err != nil {
		return err
	}
	defer os.Remove(dst.Name()) // renamed away on success
	defer dst.Close()
	if err := dst.Truncate(size); err != nil {
		return err
	}
	mode, buf := "clone", []byte(nil)
	for pos := int64(0); pos < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(int(src.Fd()), pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		hole = min(hole, size)
		if mode, buf, err = placeRun(src, dst, data, data, hole-data, mode, buf); err != nil {
			return err
		}
		pos = hole
	}
	if err := dst.Close(); err != nil {
		return err
	}
	s.keepRAMFile(dir, dst.Name(), seq)
	return nil
}
