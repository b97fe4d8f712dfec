package snapshot

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"
)

// File names inside a store directory.
const (
	currentName   = "CURRENT"
	currentTmp    = "CURRENT.tmp"
	lockName      = "LOCK"
	headerPrefix  = "header-"
	genPrefix     = "gen-"
	genSuffix     = ".mem"
	stagingPrefix = "staging-"
	// readChunk is how much guest memory is read per ReadAt call.
	readChunk = 1 << 20
)

// ErrNoSnapshot is returned when a store has no committed snapshot yet.
var ErrNoSnapshot = errors.New("no snapshot in store")

// Options configure a Store.
type Options struct {
	// BlockSize is the tracking and storage unit for new full snapshots
	// (default 4096, a power of two in [4096, 16 MiB]). Diffs keep the parent's.
	BlockSize int
	// MaxGenerations bounds the chain: a diff that would leave more
	// generations referenced is written as one merged generation (default 8).
	MaxGenerations int
	// Logger receives garbage-collection problems, which never fail a write.
	Logger *slog.Logger
}

// Store writes snapshots into one directory. One Store (one process) may write
// a directory at a time: writes take an exclusive flock on dir/LOCK. Readers
// (Open) need no lock.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger
	mu   sync.Mutex
	// hook is called at each named step of a write (tests inject failures
	// and crashes through it). A non-nil error aborts the write at that step.
	hook func(step string) error
}

// NewStore creates dir if needed and returns a Store over it.
func NewStore(dir string, opts Options) (*Store, error) {
	if opts.BlockSize == 0 {
		opts.BlockSize = 4096
	}
	if opts.MaxGenerations == 0 {
		opts.MaxGenerations = 8
	}
	if opts.MaxGenerations < 1 {
		return nil, fmt.Errorf("max generations %d: must be >= 1", opts.MaxGenerations)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := checkGeometry(uint32(opts.BlockSize), uint64(opts.BlockSize)); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create snapshot dir: %w", err)
	}
	return &Store{dir: dir, opts: opts, log: opts.Logger.With("snapshot_dir", dir)}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) step(name string) error {
	if s.hook == nil {
		return nil
	}
	if err := s.hook(name); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Current returns the committed header, or ErrNoSnapshot.
func (s *Store) Current() (*Header, error) {
	name, err := readCurrent(s.dir)
	if err != nil {
		return nil, err
	}
	return ReadHeader(filepath.Join(s.dir, name))
}

// WriteFull records all of memory [0, size) as a new snapshot that does not
// depend on any earlier generation. Only non-zero blocks are stored.
func (s *Store) WriteFull(ctx context.Context, mem io.ReaderAt, size int64) error {
	bs := uint32(s.opts.BlockSize)
	if size < 0 {
		return fmt.Errorf("memory size %d", size)
	}
	if err := checkGeometry(bs, uint64(size)); err != nil {
		return err
	}
	return s.write(ctx, writePlan{blockSize: bs, memSize: uint64(size), mem: mem, fromMem: allBlocks{}})
}

// WriteDiff records the blocks set in dirty (those written since the last
// resume, as an index set over the snapshot's blocks) on top of the current
// snapshot. Each dirty block is read from mem: one whose bytes are all zero is
// recorded as ZERO. Blocks not in dirty keep their current contents.
//
// If WriteDiff fails, nothing records the dirty set it was given: the caller
// must pass those blocks again at the next WriteDiff (Or the bitmaps) or take
// a WriteFull instead.
func (s *Store) WriteDiff(ctx context.Context, mem io.ReaderAt, dirty *Bitmap) error {
	return s.write(ctx, writePlan{mem: mem, fromMem: dirty, diff: true})
}

// Merge rewrites the current chain into a single generation.
func (s *Store) Merge(ctx context.Context) error {
	return s.write(ctx, writePlan{diff: true, forceMerge: true, fromMem: NewBitmap(0)})
}

type blockSet interface{ Test(int) bool }

type allBlocks struct{}

func (allBlocks) Test(int) bool { return true }

type writePlan struct {
	blockSize  uint32
	memSize    uint64
	mem        io.ReaderAt
	fromMem    blockSet
	diff       bool // build on the current snapshot
	forceMerge bool
}

func (s *Store) write(ctx context.Context, p writePlan) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := lockDir(s.dir)
	if err != nil {
		return err
	}
	defer unlock()

	prevName, err := readCurrent(s.dir)
	if err != nil && !(errors.Is(err, ErrNoSnapshot) && !p.diff) {
		return err
	}
	var parent *Snapshot
	if p.diff {
		parent, err = Open(s.dir)
		if err != nil {
			return fmt.Errorf("open parent snapshot: %w", err)
		}
		defer parent.Close()
		p.blockSize, p.memSize = parent.hdr.BlockSize, parent.hdr.MemSize
		if d, ok := p.fromMem.(*Bitmap); ok && d.Len() != parent.NumBlocks() && !p.forceMerge {
			return fmt.Errorf("dirty bitmap covers %d blocks, snapshot has %d", d.Len(), parent.NumBlocks())
		}
	}
	seq, err := s.nextSeq()
	if err != nil {
		return err
	}
	merge := p.forceMerge || (parent != nil && len(parent.hdr.Gens)+1 > s.opts.MaxGenerations)

	if err := s.step("stage"); err != nil {
		return err
	}
	staging := filepath.Join(s.dir, fmt.Sprintf("%s%016x-%s", stagingPrefix, seq, randSuffix()))
	if err := os.Mkdir(staging, 0o750); err != nil {
		return fmt.Errorf("create staging dir: %w", err)
	}
	// On a returned error the staging dir goes. A panic (a simulated crash in
	// tests) skips this, like a real crash would; the next write collects it.
	defer func() {
		if err != nil {
			os.RemoveAll(staging)
		}
	}()

	genName := fmt.Sprintf("%s%016x%s", genPrefix, seq, genSuffix)
	hdr, enc, err := s.buildGeneration(ctx, p, parent, merge, seq, filepath.Join(staging, genName))
	if err != nil {
		return err
	}
	hdrName := fmt.Sprintf("%s%016x", headerPrefix, seq)
	if err := s.writeFileSynced(filepath.Join(staging, hdrName), enc, "header"); err != nil {
		return err
	}
	// Rename into the store dir: names are new (seq only grows), so nothing
	// the current snapshot uses is replaced.
	if len(hdr.Gens) > 0 && hdr.Gens[len(hdr.Gens)-1].ID == seq {
		if err := s.step("rename-gen"); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(staging, genName), filepath.Join(s.dir, genName)); err != nil {
			return fmt.Errorf("rename generation: %w", err)
		}
	}
	if err := s.step("rename-header"); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(staging, hdrName), filepath.Join(s.dir, hdrName)); err != nil {
		return fmt.Errorf("rename header: %w", err)
	}
	if err := s.syncDir("sync-dir"); err != nil {
		return err
	}
	if err := s.swapCurrent(hdrName); err != nil {
		return err
	}
	if err := s.syncDir("sync-dir-after-swap"); err != nil {
		// The swap may not survive a crash; put the previous pointer back so
		// that an error keeps meaning "the previous snapshot is current".
		if prevName != "" {
			if rerr := s.swapCurrentNoHook(prevName); rerr != nil {
				s.log.Error("rolling back CURRENT failed", "err", rerr)
			}
		} else {
			os.Remove(filepath.Join(s.dir, currentName))
		}
		return err
	}
	os.RemoveAll(staging)
	if err := s.step("gc"); err != nil {
		s.log.Warn("snapshot gc skipped", "err", err)
		return nil
	}
	s.gc(hdr)
	return nil
}

// buildGeneration streams the new generation file and returns the encoded
// header.
func (s *Store) buildGeneration(ctx context.Context, p writePlan, parent *Snapshot, merge bool, seq uint64, genPath string) (*Header, []byte, error) {
	bs := int(p.blockSize)
	n := int(p.memSize / uint64(bs))
	zh := zeroHash(bs)
	genIDs := make([]uint64, n) // 0 = zero block
	slots := make([]uint32, n)
	hashes := make([]uint64, n)

	if err := s.step("create-gen"); err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(genPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("create generation file: %w", err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, readChunk)
	var written uint32

	buf := make([]byte, readChunk)
	put := func(i int, b []byte) error {
		if isZero(b) {
			genIDs[i], slots[i], hashes[i] = 0, 0, zh
			return nil
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("write generation file: %w", err)
		}
		genIDs[i], slots[i], hashes[i] = seq, written, xxhash.Sum64(b)
		written++
		return nil
	}
	for i := 0; i < n; {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, nil, fmt.Errorf("snapshot write cancelled: %w", err)
			}
			if err := s.step("write-blocks"); err != nil {
				return nil, nil, err
			}
		}
		if p.fromMem.Test(i) {
			// Read the run of consecutive blocks that come from memory at once.
			j := i + 1
			for j < n && (j-i)*bs < readChunk && p.fromMem.Test(j) {
				j++
			}
			chunk := buf[:(j-i)*bs]
			// io.ReaderAt may return io.EOF with a full read at the end.
			if n, err := p.mem.ReadAt(chunk, int64(i)*int64(bs)); n < len(chunk) {
				return nil, nil, fmt.Errorf("read guest memory at block %d: %w", i, err)
			}
			for k := i; k < j; k++ {
				if err := put(k, chunk[(k-i)*bs:(k-i+1)*bs]); err != nil {
					return nil, nil, err
				}
			}
			i = j
			continue
		}
		e := parent.hdr.Entries[i]
		switch {
		case e.Zero():
			genIDs[i], hashes[i] = 0, zh
		case merge:
			b := buf[:bs]
			if err := parent.ReadBlock(i, b); err != nil {
				return nil, nil, err
			}
			if err := put(i, b); err != nil {
				return nil, nil, err
			}
		default:
			genIDs[i], slots[i], hashes[i] = parent.hdr.Gens[e.Gen].ID, e.Slot, parent.hdr.Hashes[i]
		}
		i++
	}
	if err := w.Flush(); err != nil {
		return nil, nil, fmt.Errorf("write generation file: %w", err)
	}
	if err := s.step("sync-gen"); err != nil {
		return nil, nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, nil, fmt.Errorf("fsync generation file: %w", err)
	}

	// Generation table: only generations still referenced, in id order.
	blocks := map[uint64]uint64{}
	if parent != nil {
		for _, g := range parent.hdr.Gens {
			blocks[g.ID] = g.Blocks
		}
	}
	blocks[seq] = uint64(written)
	var ids []uint64
	seen := map[uint64]bool{}
	for _, id := range genIDs {
		if id != 0 && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	index := make(map[uint64]uint32, len(ids))
	hdr := &Header{BlockSize: p.blockSize, MemSize: p.memSize, Seq: seq, Entries: make([]Entry, n), Hashes: hashes}
	for k, id := range ids {
		index[id] = uint32(k)
		hdr.Gens = append(hdr.Gens, GenInfo{ID: id, Blocks: blocks[id]})
	}
	for i, id := range genIDs {
		if id == 0 {
			hdr.Entries[i] = Entry{Gen: ZeroGen}
		} else {
			hdr.Entries[i] = Entry{Gen: index[id], Slot: slots[i]}
		}
	}
	if written == 0 {
		f.Close()
		os.Remove(genPath) // an empty generation is not referenced
	}
	enc, err := hdr.MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	return hdr, enc, nil
}

func (s *Store) writeFileSynced(path string, data []byte, what string) error {
	if err := s.step("write-" + what); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", what, err)
	}
	if err := s.step("sync-" + what); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", what, err)
	}
	return f.Close()
}

func (s *Store) syncDir(step string) error {
	if err := s.step(step); err != nil {
		return err
	}
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir: %w", err)
	}
	return nil
}

func (s *Store) swapCurrent(hdrName string) error {
	tmp := filepath.Join(s.dir, currentTmp)
	os.Remove(tmp)
	if err := s.writeFileSynced(tmp, []byte(hdrName+"\n"), "current"); err != nil {
		return err
	}
	if err := s.step("rename-current"); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, currentName)); err != nil {
		return fmt.Errorf("swap CURRENT: %w", err)
	}
	return nil
}

func (s *Store) swapCurrentNoHook(hdrName string) error {
	hook := s.hook
	s.hook = nil
	defer func() { s.hook = hook }()
	if err := s.swapCurrent(hdrName); err != nil {
		return err
	}
	return syncDir(s.dir)
}

// nextSeq is one more than any sequence number used in the directory,
// including orphans left by failed writes, so new names never collide.
func (s *Store) nextSeq() (uint64, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, fmt.Errorf("list snapshot dir: %w", err)
	}
	var top uint64
	for _, e := range ents {
		name := e.Name()
		var hexPart string
		switch {
		case strings.HasPrefix(name, headerPrefix):
			hexPart = strings.TrimPrefix(name, headerPrefix)
		case strings.HasPrefix(name, genPrefix) && strings.HasSuffix(name, genSuffix):
			hexPart = strings.TrimSuffix(strings.TrimPrefix(name, genPrefix), genSuffix)
		case strings.HasPrefix(name, stagingPrefix):
			hexPart, _, _ = strings.Cut(strings.TrimPrefix(name, stagingPrefix), "-")
		default:
			continue
		}
		if v, err := strconv.ParseUint(hexPart, 16, 64); err == nil && v > top {
			top = v
		}
	}
	return top + 1, nil
}

// gc removes everything the committed header does not reference. Failures are
// logged: the commit already succeeded.
func (s *Store) gc(h *Header) {
	keep := map[string]bool{fmt.Sprintf("%s%016x", headerPrefix, h.Seq): true}
	for _, g := range h.Gens {
		keep[fmt.Sprintf("%s%016x%s", genPrefix, g.ID, genSuffix)] = true
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		s.log.Warn("gc: list dir", "err", err)
		return
	}
	for _, e := range ents {
		name := e.Name()
		ours := strings.HasPrefix(name, headerPrefix) || strings.HasPrefix(name, stagingPrefix) ||
			(strings.HasPrefix(name, genPrefix) && strings.HasSuffix(name, genSuffix)) || name == currentTmp
		if !ours || keep[name] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, name)); err != nil {
			s.log.Warn("gc: remove", "file", name, "err", err)
		}
	}
}

func readCurrent(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, currentName))
	if errors.Is(err, os.ErrNotExist) {
		return "", ErrNoSnapshot
	}
	if err != nil {
		return "", fmt.Errorf("read CURRENT: %w", err)
	}
	name := strings.TrimSpace(string(b))
	if !strings.HasPrefix(name, headerPrefix) || strings.ContainsAny(name, "/\\") || len(name) > 64 {
		return "", corrupt("CURRENT names %q", name)
	}
	return name, nil
}

func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock snapshot dir: %w", err)
	}
	return func() { f.Close() }, nil
}

func randSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
