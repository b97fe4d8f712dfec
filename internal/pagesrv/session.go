package pagesrv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/hearth-sandbox/hearth/internal/snapshot"
	"golang.org/x/sys/unix"
)

// unit is the granularity of the working set and of REMOVE tracking.
const unit = 4096

// Config configures a page-serving session.
type Config struct {
	// Snapshot is the memory to serve. It stays owned by the caller.
	Snapshot *snapshot.Snapshot
	// WorkingSet is where the pages this resume touches are recorded (and
	// read from, for Prefetch). Default: "workingset" in the snapshot dir.
	WorkingSet string
	// NoRecord disables writing the working set at the end of the session.
	NoRecord bool
	// Prefetch copies the recorded working set in while faults are served.
	Prefetch bool
	// PrefetchRun is the largest UFFDIO_COPY prefetch issues (default 2 MiB).
	PrefetchRun int
	// MaxWorkingSet caps the recorded working set in bytes (default 1 GiB).
	MaxWorkingSet int64
	// HandshakeTimeout bounds waiting for the VMM (default 10 s).
	HandshakeTimeout time.Duration
	Logger           *slog.Logger
}

func (c *Config) defaults() {
	if c.WorkingSet == "" && c.Snapshot != nil {
		c.WorkingSet = filepath.Join(c.Snapshot.Dir(), "workingset")
	}
	if c.PrefetchRun <= 0 {
		c.PrefetchRun = 2 << 20
	}
	c.PrefetchRun = max(c.PrefetchRun&^(unit-1), unit)
	if c.MaxWorkingSet <= 0 {
		c.MaxWorkingSet = 1 << 30
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Stats counts what a session did.
type Stats struct {
	Faults          uint64 // page faults served from snapshot data
	ZeroFaults      uint64 // faults on ZERO blocks (UFFDIO_ZEROPAGE)
	RemovedFaults   uint64 // faults on ranges the VMM removed (zero-filled)
	Exists          uint64 // EEXIST: page already present (prefetch won the race)
	Retries         uint64 // EAGAIN: mappings were changing; retried
	Removes         uint64 // UFFD_EVENT_REMOVE events
	Unmaps          uint64 // UFFD_EVENT_UNMAP events
	PrefetchedBytes uint64 // bytes mapped by prefetch
	WorkingSetPages int    // pages in the working set loaded for prefetch
	PrefetchDone    bool   // prefetch went through its whole list
}

type counters struct {
	faults, zeroFaults, removedFaults, exists, retries, removes, unmaps, prefetched atomic.Uint64
	prefetchDone                                                                    atomic.Bool
}

type region struct {
	base, size, offset, pageSize uint64
}

func (r *region) contains(addr uint64) bool { return addr >= r.base && addr-r.base < r.size }

// Session serves one VMM's page faults from a snapshot. It is usable for
// Firecracker (after ReadHandshake) and in-process (OpenUserfaultfd,
// EnableAPI, RegisterMissing, then NewSession).
type Session struct {
	cfg     Config
	log     *slog.Logger
	uffd    int
	peerPID int
	regions []region
	snap    *snapshot.Snapshot
	bs      uint64
	maps    map[*os.File][]byte
	zeroBuf []byte

	// mu orders event handling against prefetch: the event loop holds it
	// exclusively while it reads and handles a batch (so a REMOVE is marked
	// before any later copy can consult the mark); prefetch holds it shared
	// around each copy.
	mu      sync.RWMutex
	removed *snapshot.Bitmap // memory pages zeroed by REMOVE (serve zero)
	gone    *snapshot.Bitmap // memory pages unmapped by the VMM (never serve)
	goneN   int
	pages   int

	touched *snapshot.Bitmap // pages faulted in this session (event loop only)
	order   []uint32         // fault order
	wsPages []uint32         // working set loaded for prefetch

	c           counters
	prefetchEnd chan struct{} // closed when the prefetch goroutine ends (or never starts)
	closeMu     sync.Mutex
	closed      bool
}

// errPeerGone means the VMM's address space no longer exists.
var errPeerGone = errors.New("peer address space gone")

// errUnmapped means the destination range was unmapped by the VMM.
var errUnmapped = errors.New("destination unmapped")

// NewSession takes ownership of uffd (closed by Run, or by Close if Run is
// never called). peerPID, when known and not this process, is watched with a
// pidfd so that the session ends when the VMM dies.
func NewSession(uffd int, regions []Region, peerPID int, cfg Config) (*Session, error) {
	cfg.defaults()
	s := &Session{cfg: cfg, uffd: uffd, peerPID: peerPID, snap: cfg.Snapshot, maps: map[*os.File][]byte{}, prefetchEnd: make(chan struct{})}
	if s.snap == nil {
		unix.Close(uffd)
		return nil, errors.New("pagesrv: no snapshot to serve")
	}
	s.log = cfg.Logger.With("snapshot_dir", s.snap.Dir())
	if err := validateRegions(regions); err != nil {
		unix.Close(uffd)
		return nil, err
	}
	size := uint64(s.snap.Size())
	for i, r := range regions {
		if r.Offset+r.Size > size {
			unix.Close(uffd)
			return nil, fmt.Errorf("%w: region %d [%d, %d) is beyond the %d-byte snapshot", ErrHandshake, i, r.Offset, r.Offset+r.Size, size)
		}
		s.regions = append(s.regions, region{base: r.BaseHostVirtAddr, size: r.Size, offset: r.Offset, pageSize: r.pageBytes()})
		s.pages += int(r.Size / unit)
	}
	s.bs = uint64(s.snap.BlockSize())
	n := int(size / unit)
	s.removed, s.gone, s.touched = snapshot.NewBitmap(n), snapshot.NewBitmap(n), snapshot.NewBitmap(n)
	if cfg.Prefetch {
		ws, err := LoadWorkingSet(cfg.WorkingSet, n)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			s.log.Warn("ignoring unreadable working set", "err", err)
		default:
			s.wsPages = ws
		}
	}
	return s, nil
}

// Close releases the uffd if Run was never called. Safe to call twice.
func (s *Session) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, m := range s.maps {
		unix.Munmap(m)
	}
	s.maps = nil
	return unix.Close(s.uffd)
}

// Stats returns the counters so far; safe while Run is running.
func (s *Session) Stats() Stats {
	return Stats{
		Faults: s.c.faults.Load(), ZeroFaults: s.c.zeroFaults.Load(), RemovedFaults: s.c.removedFaults.Load(),
		Exists: s.c.exists.Load(), Retries: s.c.retries.Load(), Removes: s.c.removes.Load(), Unmaps: s.c.unmaps.Load(),
		PrefetchedBytes: s.c.prefetched.Load(), WorkingSetPages: len(s.wsPages), PrefetchDone: s.c.prefetchDone.Load(),
	}
}

// Run serves faults until the peer is gone (returns nil: its process exited,
// its address space vanished, or it unmapped every region) or ctx is done
// (returns ctx.Err()). It records the working set, releases the uffd and
// waits for its prefetch goroutine before returning.
func (s *Session) Run(ctx context.Context) (Stats, error) {
	defer s.Close()
	if err := s.mapSnapshot(); err != nil {
		return s.Stats(), err
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return s.Stats(), fmt.Errorf("eventfd: %w", err)
	}
	defer unix.Close(wake)
	stopWake := context.AfterFunc(ctx, func() {
		var one [8]byte
		binary.LittleEndian.PutUint64(one[:], 1)
		unix.Write(wake, one[:])
	})
	defer stopWake()
	pidfd := -1
	if s.peerPID > 0 && s.peerPID != os.Getpid() {
		if fd, err := unix.PidfdOpen(s.peerPID, 0); err == nil {
			pidfd = fd
			defer unix.Close(pidfd)
		} else {
			s.log.Warn("cannot watch peer process; relying on uffd errors", "pid", s.peerPID, "err", err)
		}
	}

	stopPrefetch := make(chan struct{})
	var wg sync.WaitGroup
	if len(s.wsPages) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(s.prefetchEnd)
			s.prefetch(stopPrefetch)
		}()
	} else {
		close(s.prefetchEnd)
	}
	err = s.loop(wake, pidfd)
	close(stopPrefetch)
	wg.Wait()
	if !s.cfg.NoRecord {
		if werr := s.saveWorkingSet(); werr != nil {
			s.log.Warn("working set not recorded", "err", werr)
		}
	}
	if errors.Is(err, errPeerGone) {
		return s.Stats(), nil
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return s.Stats(), err
}

// mapSnapshot maps every generation file read-only so that UFFDIO_COPY can
// copy straight from the page cache.
func (s *Session) mapSnapshot() error {
	for i := range s.snap.NumBlocks() {
		f, _, zero := s.snap.Source(i)
		if zero || s.maps[f] != nil {
			continue
		}
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("stat generation: %w", err)
		}
		if st.Size() == 0 {
			continue
		}
		m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("mmap generation %s: %w", f.Name(), err)
		}
		s.maps[f] = m
	}
	return nil
}

type fault struct{ addr uint64 }

func (s *Session) loop(wake, pidfd int) error {
	fds := []unix.PollFd{{Fd: int32(s.uffd), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
	if pidfd >= 0 {
		fds = append(fds, unix.PollFd{Fd: int32(pidfd), Events: unix.POLLIN})
	}
	buf := make([]byte, uffdMsgSize*64)
	var pending []fault
	for {
		timeout := -1
		if len(pending) > 0 {
			timeout = 1 // EAGAIN faults: retry soon even without new events
		}
		for i := range fds {
			fds[i].Revents = 0
		}
		if _, err := unix.Poll(fds, timeout); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll: %w", err)
		}
		if fds[1].Revents != 0 {
			return nil // context done
		}
		if pidfd >= 0 && fds[2].Revents != 0 {
			s.log.Info("peer process exited", "pid", s.peerPID)
			return errPeerGone
		}
		if fds[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
			// Not initialised with UFFDIO_API, or not a working uffd.
			return fmt.Errorf("userfaultfd poll: revents %#x", fds[0].Revents)
		}
		var err error
		pending, err = s.handleBatch(buf, pending)
		if err != nil {
			return err
		}
		if s.goneN >= s.pages {
			s.log.Info("peer unmapped all guest memory")
			return errPeerGone
		}
	}
}

// handleBatch reads available events and handles them in order, then retries
// faults that hit EAGAIN earlier.
func (s *Session) handleBatch(buf []byte, pending []fault) ([]fault, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := unix.Read(s.uffd, buf)
	if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
		return nil, fmt.Errorf("read userfaultfd: %w", err)
	}
	retry := pending
	pending = nil
	for off := 0; off+uffdMsgSize <= n; off += uffdMsgSize {
		msg := buf[off : off+uffdMsgSize]
		le := binary.LittleEndian
		switch msg[0] {
		case eventPagefault:
			addr := le.Uint64(msg[16:])
			if err := s.serveFault(addr); errors.Is(err, unix.EAGAIN) {
				pending = append(pending, fault{addr})
			} else if err != nil {
				return nil, err
			}
		case eventRemove:
			s.c.removes.Add(1)
			s.markRange(le.Uint64(msg[8:]), le.Uint64(msg[16:]), s.removed, false)
		case eventUnmap:
			s.c.unmaps.Add(1)
			s.markRange(le.Uint64(msg[8:]), le.Uint64(msg[16:]), s.gone, true)
		case eventRemap:
			from, to, length := le.Uint64(msg[8:]), le.Uint64(msg[16:]), le.Uint64(msg[24:])
			s.remap(from, to, length)
		case eventFork:
			// A child inherited the registration; we do not serve it.
			unix.Close(int(le.Uint32(msg[8:])))
		default:
			s.log.Warn("unknown userfaultfd event", "event", msg[0])
		}
	}
	for _, f := range retry {
		if err := s.serveFault(f.addr); errors.Is(err, unix.EAGAIN) {
			pending = append(pending, f)
		} else if err != nil {
			return nil, err
		}
	}
	return pending, nil
}

// markRange marks the memory pages behind host range [start, end).
func (s *Session) markRange(start, end uint64, bm *snapshot.Bitmap, count bool) {
	for i := range s.regions {
		r := &s.regions[i]
		lo, hi := max(start, r.base), min(end, r.base+r.size)
		for a := lo &^ (unit - 1); a < hi; a += unit {
			p := int((r.offset + a - r.base) / unit)
			if count && !bm.Test(p) {
				s.goneN++
			}
			bm.Set(p)
		}
	}
}

// remap follows an mremap of a whole region; anything else is treated as an
// unmap of the old range (Firecracker never remaps guest memory).
func (s *Session) remap(from, to, length uint64) {
	for i := range s.regions {
		r := &s.regions[i]
		if r.base == from && r.size == length {
			r.base = to
			return
		}
	}
	s.log.Warn("partial remap of guest memory; the moved range will not be served", "from", from, "len", length)
	s.markRange(from, from+length, s.gone, true)
}

func (s *Session) regionFor(addr uint64) *region {
	for i := range s.regions {
		if s.regions[i].contains(addr) {
			return &s.regions[i]
		}
	}
	return nil
}

// serveFault resolves one page fault.
func (s *Session) serveFault(addr uint64) error {
	r := s.regionFor(addr)
	if r == nil {
		s.log.Error("fault outside every registered region", "addr", fmt.Sprintf("%#x", addr))
		return nil
	}
	page := addr &^ (r.pageSize - 1)
	memOff := r.offset + (page - r.base)
	for p := memOff / unit; p < (memOff+r.pageSize)/unit; p++ {
		if !s.touched.Test(int(p)) {
			s.touched.Set(int(p))
			s.order = append(s.order, uint32(p))
		}
	}
	existsBefore := s.c.exists.Load()
	var err error
	switch {
	case s.removed.Test(int(memOff / unit)):
		s.c.removedFaults.Add(1)
		err = s.zero(r, page, r.pageSize)
	case r.pageSize == unit:
		m, off, zero := s.locate(memOff)
		if zero {
			s.c.zeroFaults.Add(1)
			err = s.zero(r, page, unit)
		} else {
			s.c.faults.Add(1)
			err = s.copy(r, page, m[off:off+unit])
		}
	default:
		s.c.faults.Add(1)
		err = s.copyGathered(r, page, memOff, r.pageSize)
	}
	if errors.Is(err, errUnmapped) {
		return nil // the range vanished under us; nobody waits on it
	}
	if err == nil && s.c.exists.Load() != existsBefore {
		// The page was already present (prefetch won the race) so no copy
		// woke the faulting thread: wake it explicitly.
		if werr := uffdWake(s.uffd, page, r.pageSize); werr != nil && errors.Is(werr, unix.ESRCH) {
			return errPeerGone
		}
	}
	return err
}

// locate returns the mapped generation file and offset holding the 4 KiB
// unit at memOff, or zero.
func (s *Session) locate(memOff uint64) (m []byte, off uint64, zero bool) {
	f, foff, zero := s.snap.Source(int(memOff / s.bs))
	if zero {
		return nil, 0, true
	}
	return s.maps[f], uint64(foff) + memOff%s.bs, false
}

// copy maps data at dst, skipping pages that already exist.
func (s *Session) copy(r *region, dst uint64, data []byte) error {
	for len(data) > 0 {
		done, err := uffdCopy(s.uffd, dst, data)
		dst, data = dst+done, data[done:]
		if err == nil {
			return nil
		}
		if err = s.classify(err); err != nil {
			return err
		}
		// EEXIST: the page at dst is present; skip it.
		s.c.exists.Add(1)
		dst, data = dst+r.pageSize, data[min(r.pageSize, uint64(len(data))):]
	}
	return nil
}

func (s *Session) zero(r *region, dst, length uint64) error {
	if r.pageSize != unit {
		// UFFDIO_ZEROPAGE does not support hugetlbfs: copy zeros.
		if uint64(len(s.zeroBuf)) < r.pageSize {
			s.zeroBuf = make([]byte, r.pageSize)
		}
		for off := uint64(0); off < length; off += r.pageSize {
			if err := s.copy(r, dst+off, s.zeroBuf[:r.pageSize]); err != nil {
				return err
			}
		}
		return nil
	}
	for length > 0 {
		done, err := uffdZeropage(s.uffd, dst, length)
		dst, length = dst+done, length-done
		if err == nil {
			return nil
		}
		if err = s.classify(err); err != nil {
			return err
		}
		s.c.exists.Add(1)
		dst, length = dst+unit, length-min(unit, length)
	}
	return nil
}

// copyGathered assembles one huge page from the snapshot and copies it.
func (s *Session) copyGathered(r *region, dst, memOff, length uint64) error {
	buf := make([]byte, length)
	if _, err := s.snap.ReadAt(buf, int64(memOff)); err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	return s.copy(r, dst, buf)
}

// classify maps a uffd ioctl error: nil for EEXIST (caller skips the page),
// EAGAIN as is (retry later), errPeerGone, errUnmapped, or a real error.
func (s *Session) classify(err error) error {
	switch {
	case errors.Is(err, unix.EEXIST):
		return nil
	case errors.Is(err, unix.EAGAIN):
		s.c.retries.Add(1)
		return unix.EAGAIN
	case errors.Is(err, unix.ESRCH):
		return errPeerGone
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EFAULT):
		return errUnmapped
	default:
		return fmt.Errorf("userfaultfd ioctl: %w", err)
	}
}

// prefetch maps the loaded working set in runs of up to PrefetchRun bytes,
// in the order the previous resume first touched each run's window.
func (s *Session) prefetch(stop <-chan struct{}) {
	for _, rng := range planPrefetch(s.wsPages, s.cfg.PrefetchRun/unit) {
		for {
			select {
			case <-stop:
				return
			default:
			}
			err := s.prefetchRange(rng[0], rng[1])
			if errors.Is(err, unix.EAGAIN) {
				time.Sleep(time.Millisecond) // the event loop is draining a REMOVE/UNMAP
				continue
			}
			if errors.Is(err, errPeerGone) {
				return
			}
			if err != nil {
				s.log.Warn("prefetch stopped", "err", err)
				return
			}
			break
		}
	}
	s.c.prefetchDone.Store(true)
}

// planPrefetch turns a page list into [first, end) page ranges: pages are
// grouped by window of `run` pages in order of first appearance, and
// contiguous pages inside a window become one range.
func planPrefetch(pages []uint32, run int) [][2]uint32 {
	var windows []uint32
	byWin := map[uint32][]uint32{}
	for _, p := range pages {
		w := p / uint32(run)
		if _, ok := byWin[w]; !ok {
			windows = append(windows, w)
		}
		byWin[w] = append(byWin[w], p)
	}
	var out [][2]uint32
	for _, w := range windows {
		ps := byWin[w]
		slices.Sort(ps)
		ps = slices.Compact(ps)
		start := ps[0]
		for i := 1; i <= len(ps); i++ {
			if i == len(ps) || ps[i] != ps[i-1]+1 {
				out = append(out, [2]uint32{start, ps[i-1] + 1})
				if i < len(ps) {
					start = ps[i]
				}
			}
		}
	}
	return out
}

// prefetchRange maps memory pages [first, end) wherever a region holds them.
func (s *Session) prefetchRange(first, end uint32) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	lo, hi := uint64(first)*unit, uint64(end)*unit
	for i := range s.regions {
		r := &s.regions[i]
		a, b := max(lo, r.offset), min(hi, r.offset+r.size)
		if a >= b {
			continue
		}
		if r.pageSize != unit {
			a, b = a&^(r.pageSize-1), (b+r.pageSize-1)&^(r.pageSize-1)
			for off := a; off < b; off += r.pageSize {
				if s.removed.Test(int(off/unit)) || s.gone.Test(int(off/unit)) {
					continue
				}
				if err := s.copyGathered(r, r.base+off-r.offset, off, r.pageSize); err != nil && !errors.Is(err, errUnmapped) {
					return err
				}
				s.c.prefetched.Add(r.pageSize)
			}
			continue
		}
		if err := s.prefetchUnits(r, a, b); err != nil {
			return err
		}
	}
	return nil
}

// prefetchUnits copies 4 KiB units [a, b) (memory offsets) of region r,
// issuing one ioctl per run that is contiguous in a generation file (or zero),
// and skipping removed or unmapped pages.
func (s *Session) prefetchUnits(r *region, a, b uint64) error {
	type run struct {
		start, n uint64
		zero     bool
		m        []byte
		moff     uint64
	}
	flush := func(cur run) error {
		if cur.n == 0 {
			return nil
		}
		dst := r.base + cur.start - r.offset
		var err error
		if cur.zero {
			err = s.zero(r, dst, cur.n)
		} else {
			err = s.copy(r, dst, cur.m[cur.moff:cur.moff+cur.n])
		}
		if errors.Is(err, errUnmapped) {
			return nil
		}
		if err == nil {
			s.c.prefetched.Add(cur.n)
		}
		return err
	}
	var cur run
	for off := a; off < b; off += unit {
		p := int(off / unit)
		if s.removed.Test(p) || s.gone.Test(p) {
			if err := flush(cur); err != nil {
				return err
			}
			cur.n = 0
			continue
		}
		m, moff, zero := s.locate(off)
		if cur.n > 0 && zero == cur.zero && cur.n < uint64(s.cfg.PrefetchRun) &&
			(zero || (unsafe.SliceData(m) == unsafe.SliceData(cur.m) && moff == cur.moff+cur.n)) {
			cur.n += unit
			continue
		}
		if err := flush(cur); err != nil {
			return err
		}
		cur = run{start: off, n: unit, zero: zero, m: m, moff: moff}
	}
	return flush(cur)
}
