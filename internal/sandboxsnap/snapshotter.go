package sandboxsnap

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hearth-sandbox/hearth/internal/pagesrv"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
	"github.com/hearth-sandbox/hearth/internal/snapshot"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// Names inside a snapshot directory (see the package documentation).
const (
	memDirName    = "mem"
	statePrefix   = "state-"
	stagingPrefix = ".staging-"
	uffdSockName  = "uffd.sock"
	// servedName marks, in a machine's run dir, that a page server of this
	// process serves its memory (removed when the server ends; a killed
	// agent leaves it, which is the point: see ServedByPageServer).
	servedName     = "page-served"
	workingSetName = "workingset"
)

// Driver is what the snapshotter needs from a VMM driver.
type Driver interface {
	vmm.Driver
	vmm.Restorer
}

// Options configure a Snapshotter.
type Options struct {
	Driver Driver
	// MemoryDir holds the guest RAM files of running QEMU sandboxes
	// (<MemoryDir>/<sandbox>.ram). It should be a tmpfs: guest RAM kept in a
	// disk file would be written back to disk by the kernel. Default
	// /dev/shm/hearth-<hash of DataDir>.
	MemoryDir string
	// DataDir only seeds the default MemoryDir (so two agents on one host
	// never share RAM files).
	DataDir string
	// MaxGenerations bounds a sandbox's generation chain (merged beyond;
	// default 8).
	MaxGenerations int
	// Prefetch (Firecracker) maps the working set recorded by the previous
	// resume while faults are served; for QEMU it asks the kernel to read
	// the working set's pages of the RAM file ahead (default on;
	// NoPrefetch turns it off).
	NoPrefetch bool
	// EagerRestore makes QEMU restores copy the snapshot into a RAM file
	// of their own in MemoryDir (shared mapping) as before lazy restore,
	// instead of mapping the snapshot's RAM file copy-on-write. For hosts
	// whose data disk cannot hold a second copy of paused memory, and the
	// baseline of the density benchmarks.
	EagerRestore bool
	// WorkingSetWindow is how long after a lazy QEMU restore the pages the
	// guest has touched are recorded as the working set of the directory
	// it was restored from (default 3 s; negative: never).
	WorkingSetWindow time.Duration
	// FailAt, when set, is called at named steps of a pause ("state": the
	// device state is staged; "memory-read": every read of guest memory
	// while the new generation is written) and aborts the pause with its
	// error. For tests that inject failures; nil in production.
	FailAt func(step string) error
	// Crash, when set, is called after a pause's device state is saved
	// ("state") and after its snapshot is committed, before the VM stops
	// ("committed"): crash tests kill the process there. nil in production.
	Crash  func(step string)
	Logger *slog.Logger
}

// Snapshotter pauses sandboxes into snapshot directories and restores them
// (the agent's Snapshotter). One value serves every sandbox of a host.
type Snapshotter struct {
	o   Options
	log *slog.Logger

	// needFull records Firecracker machines whose dirty bitmap was reset by a
	// snapshot/create whose pause then failed: their next snapshot must be
	// Full, a Diff would miss the pages dirtied before that create.
	mu       sync.Mutex
	needFull map[vmm.Machine]bool

	boot     string                   // this host boot's id: names the RAM files valid now
	ramLocks map[string]chan struct{} // per snapshot dir: writers of RAM files (lockDir)
}

// DefaultMemoryDir is where the RAM files of the agent with this data dir
// live when Options.MemoryDir is not set.
func DefaultMemoryDir(dataDir string) (string, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(abs))
	return filepath.Join("/dev/shm", "hearth-"+hex.EncodeToString(h[:4])), nil
}

// New returns a Snapshotter for o.Driver.
func New(o Options) (*Snapshotter, error) {
	if o.Driver == nil {
		return nil, errors.New("sandboxsnap: Driver is required")
	}
	switch c := o.Driver.Capabilities(); {
	case c.Memory == vmm.MemorySharedFile:
	case c.Memory == vmm.MemoryVMMWritten && c.DiffSnapshots && c.LazyRestore:
		// Pauses write Diffs after the first; resumes serve memory lazily.
	default:
		return nil, fmt.Errorf("sandboxsnap: driver %s cannot be snapshotted here (memory %s, diff %v, lazy restore %v): %w",
			o.Driver.Name(), c.Memory, c.DiffSnapshots, c.LazyRestore, errors.ErrUnsupported)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MemoryDir == "" {
		dir, err := DefaultMemoryDir(o.DataDir)
		if err != nil {
			return nil, err
		}
		o.MemoryDir = dir
	}
	if o.MaxGenerations == 0 {
		o.MaxGenerations = 8
	}
	if o.WorkingSetWindow == 0 {
		o.WorkingSetWindow = 3 * time.Second
	}
	boot, err := bootID()
	if err != nil {
		return nil, err
	}
	s := &Snapshotter{o: o, log: o.Logger.With("component", "sandboxsnap"), needFull: map[vmm.Machine]bool{}, boot: boot, ramLocks: map[string]chan struct{}{}}
	s.removeCaptureLeftovers()
	return s, nil
}

// sharedMemory: guest RAM lives in a file this package saves and
// materialises (QEMU's model); otherwise the VMM writes and loads it
// (Firecracker's). New refused every other model.
func (s *Snapshotter) sharedMemory() bool {
	return s.o.Driver.Capabilities().Memory == vmm.MemorySharedFile
}

// MemoryFile is the RAM file of a running QEMU sandbox.
func (s *Snapshotter) MemoryFile(sandboxID string) string {
	return filepath.Join(s.o.MemoryDir, sandboxID+".ram")
}

// PrepareBoot adjusts the config of a machine about to boot so that it can
// be paused later: QEMU keeps guest RAM in a shared file (MemoryFile).
func (s *Snapshotter) PrepareBoot(cfg vmm.Config) (vmm.Config, error) {
	if !s.sharedMemory() {
		return cfg, nil
	}
	if err := os.MkdirAll(s.o.MemoryDir, 0o700); err != nil {
		return cfg, fmt.Errorf("sandboxsnap: memory dir: %w", err)
	}
	cfg.MemoryFile = s.MemoryFile(cfg.ID)
	_ = os.Remove(cfg.MemoryFile) // left by a crash: never map stale RAM
	return cfg, nil
}

func (s *Snapshotter) crash(step string) {
	if s.o.Crash != nil {
		s.o.Crash(step)
	}
}

func (s *Snapshotter) step(name string) error {
	if s.o.FailAt == nil {
		return nil
	}
	if err := s.o.FailAt(name); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (s *Snapshotter) store(dir string) (*snapshot.Store, error) {
	return snapshot.NewStore(filepath.Join(dir, memDirName), snapshot.Options{
		MaxGenerations: s.o.MaxGenerations, Logger: s.log,
	})
}

// Pause snapshots machine m (booted or restored with cfg) into dir and stops
// it. On error the previous snapshot in dir is intact and m runs again.
func (s *Snapshotter) Pause(ctx context.Context, m vmm.Machine, cfg vmm.Config, dir string) error {
	sm, ok := m.(vmm.Snapshotter)
	if !ok {
		return fmt.Errorf("sandboxsnap: %T cannot be snapshotted", m)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	t0 := time.Now()
	var (
		stats pauseStats
		err   error
	)
	if pm, ok := m.(privateRAM); ok && s.sharedMemory() && pm.PrivateMemoryFile() != "" {
		stats, err = s.pausePrivate(ctx, sm, cfg, dir, pm.PrivateMemoryFile())
	} else if s.sharedMemory() {
		stats, err = s.pauseQEMU(ctx, sm, cfg, dir)
	} else {
		stats, err = s.pauseFirecracker(ctx, sm, cfg, dir)
	}
	if err != nil {
		// The VM was stopped (vCPUs frozen) for the snapshot: let it run.
		if rerr := sm.Resume(context.WithoutCancel(ctx)); rerr != nil {
			return errors.Join(err, fmt.Errorf("resume after failed pause: %w", rerr))
		}
		return err
	}
	s.crash("committed")
	if err := sm.Stop(ctx); err != nil {
		// The snapshot is committed; the caller's cleanup stops it again.
		return fmt.Errorf("stop paused vm: %w", err)
	}
	if s.sharedMemory() {
		if err := os.Remove(s.MemoryFile(cfg.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove RAM file", "sandbox", cfg.ID, "err", err)
		}
	}
	s.forgetMachine(m)
	s.log.Info("paused", "sandbox", cfg.ID, "total_ms", time.Since(t0).Milliseconds(),
		"state_ms", stats.state.Milliseconds(), "memory_ms", stats.memory.Milliseconds(),
		"kind", stats.kind, "dirty_blocks", stats.dirty, "seq", stats.seq)
	return nil
}

type pauseStats struct {
	state, memory time.Duration
	kind          string
	dirty         int
	seq           uint64
}

// pauseQEMU: QMP stop + migrate the device state (x-ignore-shared, so the
// stream holds no RAM) to a staging file, then record the RAM file in the
// store: full the first time, else the blocks whose hash changed.
func (s *Snapshotter) pauseQEMU(ctx context.Context, m vmm.Snapshotter, cfg vmm.Config, dir string) (st pauseStats, err error) {
	// The RAM file's name depends on the sandbox only (booted through
	// PrepareBoot or restored by Restore).
	cfg.MemoryFile = s.MemoryFile(cfg.ID)
	staging := filepath.Join(dir, stagingPrefix+"state-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	defer os.Remove(staging) // renamed away on success
	t0 := time.Now()
	if err := m.Snapshot(ctx, vmm.SnapshotSpec{StatePath: staging}); err != nil {
		return st, fmt.Errorf("save device state: %w", err)
	}
	st.state = time.Since(t0)
	s.crash("state")
	if err := s.step("state"); err != nil {
		return st, err
	}
	ram, err := os.Open(cfg.MemoryFile)
	if err != nil {
		return st, fmt.Errorf("open RAM file: %w", err)
	}
	defer ram.Close()
	t1 := time.Now()
	seq, kind, dirty, err := s.writeMemory(ctx, dir, ram, int64(cfg.MemoryMB)<<20, nil)
	if err != nil {
		return st, err
	}
	st.memory, st.kind, st.dirty, st.seq = time.Since(t1), kind, dirty, seq
	if err := s.commitState(dir, staging, seq); err != nil {
		return st, err
	}
	if s.lazy() {
		// The next resume maps the snapshot's RAM file: write it now, from
		// the RAM file that holds exactly this snapshot.
		if err := s.copyRAMFile(ctx, ram, dir, int64(cfg.MemoryMB)<<20, seq); err != nil {
			s.log.Warn("copy RAM file into the snapshot", "sandbox", cfg.ID, "err", err)
		}
	}
	return st, nil
}

// pauseFirecracker: PATCH /vm Paused + snapshot/create (Full the first
// time, Diff afterwards: Firecracker tracks dirty pages from boot and from
// every load) into staging files, then the memory file into the store.
func (s *Snapshotter) pauseFirecracker(ctx context.Context, m vmm.Snapshotter, cfg vmm.Config, dir string) (st pauseStats, err error) {
	_, herr := s.currentHeader(dir)
	s.mu.Lock()
	diff := herr == nil && !s.needFull[vmm.Machine(m)]
	s.mu.Unlock()
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	stagingState := filepath.Join(dir, stagingPrefix+"state-"+suffix)
	stagingMem := filepath.Join(dir, stagingPrefix+"mem-"+suffix)
	defer os.Remove(stagingState)
	defer os.Remove(stagingMem)
	t0 := time.Now()
	if err := m.Pause(ctx); err != nil {
		return st, fmt.Errorf("pause vm: %w", err)
	}
	// A snapshot/create resets Firecracker's dirty bitmap, so if this pause
	// fails from here on the next snapshot must be Full. Marked before the
	// create: Firecracker documents a failed create as free of side
	// effects, but a Full snapshot is always correct and a Diff on a
	// bitmap reset by a half-done create would silently lose pages.
	s.mu.Lock()
	s.needFull[m] = true
	s.mu.Unlock()
	if err := m.Snapshot(ctx, vmm.SnapshotSpec{StatePath: stagingState, MemoryPath: stagingMem, Diff: diff}); err != nil {
		return st, fmt.Errorf("snapshot/create: %w", err)
	}
	st.state = time.Since(t0)
	s.crash("state")
	if err := s.step("state"); err != nil {
		return st, err
	}
	mem, err := os.Open(stagingMem)
	if err != nil {
		return st, fmt.Errorf("open memory file: %w", err)
	}
	defer mem.Close()
	var dirty *snapshot.Bitmap
	if diff {
		hdr, err := s.currentHeader(dir)
		if err != nil {
			return st, err
		}
		if dirty, err = snapshot.DirtyFromSparse(mem, int(hdr.BlockSize), hdr.NumBlocks()); err != nil {
			return st, err
		}
	}
	t1 := time.Now()
	seq, kind, n, err := s.writeMemory(ctx, dir, mem, int64(cfg.MemoryMB)<<20, dirty)
	if err != nil {
		return st, err
	}
	st.memory, st.kind, st.dirty, st.seq = time.Since(t1), kind, n, seq
	if err := s.commitState(dir, stagingState, seq); err != nil {
		return st, err
	}
	s.mu.Lock()
	delete(s.needFull, m)
	s.mu.Unlock()
	return st, nil
}

func (s *Snapshotter) forgetMachine(m vmm.Machine) {
	s.mu.Lock()
	delete(s.needFull, m)
	s.mu.Unlock()
}

func (s *Snapshotter) currentHeader(dir string) (*snapshot.Header, error) {
	st, err := s.store(dir)
	if err != nil {
		return nil, err
	}
	return st.Current()
}

// writeMemory records guest memory (laid out linearly in mem) as the next
// generation of dir's store. dirty == nil: QEMU (the dirty set is found by
// hashing against the current header) or a first, full snapshot.
func (s *Snapshotter) writeMemory(ctx context.Context, dir string, mem *os.File, size int64, dirty *snapshot.Bitmap) (seq uint64, kind string, n int, err error) {
	st, err := s.store(dir)
	if err != nil {
		return 0, "", 0, err
	}
	r := &failingReader{r: mem, s: s}
	prev, err := snapshot.Open(st.Dir())
	switch {
	case errors.Is(err, snapshot.ErrNoSnapshot):
		kind = "full"
		if err := st.WriteFull(ctx, r, size); err != nil {
			return 0, "", 0, fmt.Errorf("write memory: %w", err)
		}
	case err != nil:
		return 0, "", 0, fmt.Errorf("open previous snapshot: %w", err)
	default:
		kind = "diff"
		if prev.Size() != size {
			prev.Close()
			return 0, "", 0, fmt.Errorf("memory is %d bytes, previous snapshot %d", size, prev.Size())
		}
		if dirty == nil {
			dirty, err = prev.DiffAgainst(ctx, mem)
		}
		prev.Close()
		if err != nil {
			return 0, "", 0, fmt.Errorf("diff memory: %w", err)
		}
		n = dirty.Count()
		if err := st.WriteDiff(ctx, r, dirty); err != nil {
			return 0, "", 0, fmt.Errorf("write memory diff: %w", err)
		}
	}
	hdr, err := st.Current()
	if err != nil {
		return 0, "", 0, err
	}
	if kind == "diff" && len(hdr.Gens) == 1 && n > 0 && n < hdr.NumBlocks() {
		kind = "merged"
	}
	return hdr.Seq, kind, n, nil
}

// failingReader lets tests fail a pause in the middle of the memory write
// (FailAt("memory-read")), exercising the store's rollback for real.
type failingReader struct {
	r io.ReaderAt
	s *Snapshotter
}

func (f *failingReader) ReadAt(p []byte, off int64) (int, error) {
	if err := f.s.step("memory-read"); err != nil {
		return 0, err
	}
	return f.r.ReadAt(p, off)
}

// commitState renames the staged device state to state-<seq>, the name the
// committed memory header's sequence number points at, and removes older
// state files. The memory commit (the store's CURRENT) happened just
// before; this rename is the only step after it, and it happens regardless
// of ctx so a cancelled pause never leaves memory and state apart.
func (s *Snapshotter) commitState(dir, staging string, seq uint64) error {
	final := filepath.Join(dir, stateName(seq))
	if err := os.Rename(staging, final); err != nil {
		return fmt.Errorf("commit device state: %w", err)
	}
	if err := syncDir(dir); err != nil {
		s.log.Warn("fsync snapshot dir", "dir", dir, "err", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if n := e.Name(); (strings.HasPrefix(n, statePrefix) && n != stateName(seq)) || strings.HasPrefix(n, stagingPrefix) {
			os.Remove(filepath.Join(dir, n))
		}
	}
	return nil
}

func stateName(seq uint64) string { return fmt.Sprintf("%s%016x", statePrefix, seq) }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Committed reports whether dir holds a complete snapshot (memory header
// and its device state).
func Committed(dir string) bool {
	snap, err := snapshot.Open(filepath.Join(dir, memDirName))
	if err != nil {
		return false
	}
	defer snap.Close()
	_, err = os.Stat(filepath.Join(dir, stateName(snap.Seq())))
	return err == nil
}

// Info describes the committed snapshot of a directory.
type Info struct {
	Seq         uint64
	Generations int
	MemoryBytes int64
	StoredBytes int64 // generation files' data
}

// Stat returns what dir's committed snapshot holds.
func Stat(dir string) (Info, error) {
	snap, err := snapshot.Open(filepath.Join(dir, memDirName))
	if err != nil {
		return Info{}, err
	}
	defer snap.Close()
	h := snap.Header()
	in := Info{Seq: h.Seq, Generations: len(h.Gens), MemoryBytes: int64(h.MemSize)}
	for _, g := range h.Gens {
		in.StoredBytes += int64(g.Blocks) * int64(h.BlockSize)
	}
	return in, nil
}

// openCommitted opens dir's snapshot and the path of its device state.
func openCommitted(dir string) (*snapshot.Snapshot, string, error) {
	snap, err := snapshot.Open(filepath.Join(dir, memDirName))
	if err != nil {
		return nil, "", fmt.Errorf("open snapshot %s: %w", dir, err)
	}
	state := filepath.Join(dir, stateName(snap.Seq()))
	if _, err := os.Stat(state); err != nil {
		snap.Close()
		return nil, "", fmt.Errorf("snapshot %s: device state of seq %d: %w", dir, snap.Seq(), err)
	}
	return snap, state, nil
}

// Restore starts a machine from dir's snapshot with cfg (a fresh tap and
// RunDir; for QEMU the RAM file is rebuilt from the snapshot, for
// Firecracker memory is served lazily by a userfaultfd page server). The
// guest runs when Restore returns. On error the returned machine, if not
// nil, must be stopped by the caller.
func (s *Snapshotter) Restore(ctx context.Context, cfg vmm.Config, dir string) (vmm.Machine, error) {
	snap, state, err := openCommitted(dir)
	if err != nil {
		return nil, err
	}
	if want := int64(cfg.MemoryMB) << 20; snap.Size() != want {
		snap.Close()
		return nil, fmt.Errorf("snapshot holds %d bytes of memory, machine has %d", snap.Size(), want)
	}
	if s.lazy() {
		defer snap.Close()
		return s.restoreLazy(ctx, cfg, snap, state, dir)
	}
	if s.sharedMemory() {
		defer snap.Close()
		return s.restoreQEMU(ctx, cfg, snap, state)
	}
	return s.restoreFirecracker(ctx, cfg, snap, state, dir)
}

func (s *Snapshotter) restoreQEMU(ctx context.Context, cfg vmm.Config, snap *snapshot.Snapshot, state string) (vmm.Machine, error) {
	cfg, err := s.PrepareBoot(cfg)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	ms, err := Materialize(ctx, snap, cfg.MemoryFile)
	if err != nil {
		return nil, err
	}
	t1 := time.Now()
	m, err := s.o.Driver.Restore(ctx, cfg, vmm.RestoreSpec{StatePath: state, MemoryPath: cfg.MemoryFile})
	if err != nil {
		os.Remove(cfg.MemoryFile)
		if m == nil {
			return nil, err
		}
		return m, err
	}
	s.log.Info("restored", "sandbox", cfg.ID, "materialize_ms", t1.Sub(t0).Milliseconds(),
		"materialize_bytes", ms.Bytes, "materialize_mode", ms.Mode, "vmm_ms", time.Since(t1).Milliseconds())
	return m, nil
}

// servedMachine is a Firecracker machine whose memory a page server in this
// process serves; stopping it ends the server and releases the snapshot.
type servedMachine struct {
	vmm.Snapshotter
	cancel context.CancelFunc
	done   chan struct{}
	snap   *snapshot.Snapshot
}

func (m *servedMachine) Stop(ctx context.Context) error {
	err := m.Snapshotter.Stop(ctx)
	m.release(ctx)
	return err
}

func (m *servedMachine) release(ctx context.Context) {
	m.cancel()
	select {
	case <-m.done:
	case <-ctx.Done():
	}
}

func (s *Snapshotter) restoreFirecracker(ctx context.Context, cfg vmm.Config, snap *snapshot.Snapshot, state, dir string) (vmm.Machine, error) {
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		snap.Close()
		return nil, err
	}
	sock := filepath.Join(cfg.RunDir, uffdSockName)
	ln, err := pagesrv.Listen(sock)
	if err != nil {
		snap.Close()
		return nil, err
	}
	served := filepath.Join(cfg.RunDir, servedName)
	if err := os.WriteFile(served, nil, 0o600); err != nil {
		ln.Close()
		snap.Close()
		return nil, err
	}
	srvCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer snap.Close()
		defer os.Remove(sock)
		defer os.Remove(served)
		st, err := pagesrv.Serve(srvCtx, ln, pagesrv.Config{
			Snapshot:   snap,
			WorkingSet: filepath.Join(dir, workingSetName),
			Prefetch:   !s.o.NoPrefetch,
			Logger:     s.log,
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			s.log.Warn("page server", "sandbox", cfg.ID, "err", err)
		}
		s.log.Info("page server done", "sandbox", cfg.ID, "faults", st.Faults, "zero_faults", st.ZeroFaults,
			"prefetched_bytes", st.PrefetchedBytes, "working_set_pages", st.WorkingSetPages)
	}()
	m, err := s.o.Driver.Restore(ctx, cfg, vmm.RestoreSpec{StatePath: state, UffdSocket: sock, TrackDirtyPages: true})
	if err != nil {
		cancel()
		<-done
		if m == nil {
			return nil, err
		}
		return m, err
	}
	return &servedMachine{Snapshotter: m, cancel: cancel, done: done, snap: snap}, nil
}

// Remove deletes dir (snapshot files, page-server sockets, working set)
// and the RAM file of sandboxID. Idempotent.
func (s *Snapshotter) Remove(_ context.Context, sandboxID, dir string) error {
	var errs []error
	if sandboxID != "" {
		if err := os.Remove(s.MemoryFile(sandboxID)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	s.mu.Lock()
	delete(s.ramLocks, dir)
	s.mu.Unlock()
	return errors.Join(errs...)
}

// Close removes MemoryDir if it is empty (the agent is stopping; RAM files
// of VMs still running keep it).
func (s *Snapshotter) Close() error {
	if err := os.Remove(s.o.MemoryDir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		return err
	}
	return nil
}

// Export copies the committed snapshot of srcDir into dstDir (which must
// not exist) as one generation with its device state: a template's memory.
// It is written to a staging directory beside dstDir and renamed into
// place, so dstDir is complete or absent.
func (s *Snapshotter) Export(ctx context.Context, srcDir, dstDir string) (err error) {
	snap, state, err := openCommitted(srcDir)
	if err != nil {
		return err
	}
	defer snap.Close()
	tmp, err := stageDir(dstDir)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := s.fillTemplate(ctx, tmp, snap, snap.Size(), snap.BlockSize(), func(final string) error {
		return rootfs.CopyFile(state, final)
	}); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return publishDir(tmp, dstDir)
}

// CommittedSeq returns the sequence number of dir's committed snapshot (a
// memory header and its device state); ok is false when there is none.
func (s *Snapshotter) CommittedSeq(dir string) (seq uint64, ok bool) {
	if !Committed(dir) {
		return 0, false
	}
	in, err := Stat(dir)
	if err != nil {
		return 0, false
	}
	return in.Seq, true
}

// ReleaseMemory removes the RAM file of a stopped shared-memory machine of
// sandboxID (what Pause removes after a snapshot; a crash may have left
// it). Nothing to do where the VMM holds guest memory itself.
func (s *Snapshotter) ReleaseMemory(sandboxID string) {
	if !s.sharedMemory() {
		return
	}
	if err := os.Remove(s.MemoryFile(sandboxID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove RAM file", "sandbox", sandboxID, "err", err)
	}
}

// ServedByPageServer reports whether a machine started with cfg was
// restored lazily, its memory served by a page server of this package (of
// this process, or of a killed one: the marker outlives it).
func (s *Snapshotter) ServedByPageServer(cfg vmm.Config) bool {
	_, err := os.Stat(filepath.Join(cfg.RunDir, servedName))
	return err == nil
}
