package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"
)

// Snapshot is an open, immutable view of one committed header and the
// generation files it references. Its files stay readable even if a later
// write garbage-collects them (they are held open), so a page server can keep
// serving while the sandbox pauses again.
type Snapshot struct {
	dir   string
	hdr   *Header
	files []*os.File // per generation index
	zh    uint64
}

var _ io.ReaderAt = (*Snapshot)(nil)

// Open opens the current snapshot of a store directory.
func Open(dir string) (*Snapshot, error) {
	// A concurrent writer may garbage-collect the files of the header we just
	// read; CURRENT then names a newer one, so try again.
	var lastErr error
	for range 5 {
		name, err := readCurrent(dir)
		if err != nil {
			return nil, err
		}
		s, err := openHeader(dir, name)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if again, _ := readCurrent(dir); again == name {
			return nil, err
		}
	}
	return nil, lastErr
}

func openHeader(dir, name string) (*Snapshot, error) {
	hdr, err := ReadHeader(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	s := &Snapshot{dir: dir, hdr: hdr, zh: zeroHash(int(hdr.BlockSize))}
	for _, g := range hdr.Gens {
		f, err := os.Open(filepath.Join(dir, fmt.Sprintf("%s%016x%s", genPrefix, g.ID, genSuffix)))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open generation %d: %w", g.ID, err)
		}
		s.files = append(s.files, f)
		st, err := f.Stat()
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("stat generation %d: %w", g.ID, err)
		}
		if uint64(st.Size()) < g.Blocks*uint64(hdr.BlockSize) {
			s.Close()
			return nil, corrupt("generation %d is %d bytes, header needs %d", g.ID, st.Size(), g.Blocks*uint64(hdr.BlockSize))
		}
	}
	return s, nil
}

// Close closes the generation files.
func (s *Snapshot) Close() error {
	var errs []error
	for _, f := range s.files {
		errs = append(errs, f.Close())
	}
	s.files = nil
	return errors.Join(errs...)
}

// Header returns the parsed header; callers must not modify it.
func (s *Snapshot) Header() *Header { return s.hdr }

// Dir is the store directory the snapshot was opened from.
func (s *Snapshot) Dir() string { return s.dir }

// BlockSize is the snapshot's block size in bytes.
func (s *Snapshot) BlockSize() int { return int(s.hdr.BlockSize) }

// Size is the guest memory size in bytes.
func (s *Snapshot) Size() int64 { return int64(s.hdr.MemSize) }

// NumBlocks is the number of blocks of guest memory.
func (s *Snapshot) NumBlocks() int { return len(s.hdr.Entries) }

// Seq is the commit sequence number of the header.
func (s *Snapshot) Seq() uint64 { return s.hdr.Seq }

// Source says where block i lives: a generation file and byte offset, or
// zero=true for an all-zero block. The file belongs to the Snapshot.
func (s *Snapshot) Source(i int) (f *os.File, off int64, zero bool) {
	e := s.hdr.Entries[i]
	if e.Zero() {
		return nil, 0, true
	}
	return s.files[e.Gen], int64(e.Slot) * int64(s.hdr.BlockSize), false
}

// ReadBlock reads block i into dst (len(dst) must be the block size).
func (s *Snapshot) ReadBlock(i int, dst []byte) error {
	if i < 0 || i >= len(s.hdr.Entries) || len(dst) != int(s.hdr.BlockSize) {
		return fmt.Errorf("read block %d into %d bytes: out of range", i, len(dst))
	}
	f, off, zero := s.Source(i)
	if zero {
		clear(dst)
		return nil
	}
	if _, err := f.ReadAt(dst, off); err != nil {
		return fmt.Errorf("read block %d: %w", i, err)
	}
	return nil
}

// ReadAt reads guest memory bytes [off, off+len(p)).
func (s *Snapshot) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	bs := int64(s.hdr.BlockSize)
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= int64(s.hdr.MemSize) {
			return n, io.EOF
		}
		i := int(pos / bs)
		within := pos % bs
		m := min(int64(len(p)-n), bs-within)
		dst := p[n : n+int(m)]
		f, foff, zero := s.Source(i)
		if zero {
			clear(dst)
		} else if _, err := f.ReadAt(dst, foff+within); err != nil {
			return n, fmt.Errorf("read block %d: %w", i, err)
		}
		n += int(m)
	}
	return n, nil
}

// Materialize writes the full guest memory to path as a sparse file (zero
// blocks are holes), atomically: a temporary file in the same directory is
// fsynced and renamed over path. QEMU restores load RAM from such a file.
func (s *Snapshot) Materialize(ctx context.Context, path string) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create materialize file: %w", err)
	}
	defer func() {
		tmp.Close()
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Truncate(int64(s.hdr.MemSize)); err != nil {
		return fmt.Errorf("size materialize file: %w", err)
	}
	bs := int(s.hdr.BlockSize)
	buf := make([]byte, readChunk)
	n := len(s.hdr.Entries)
	for i := 0; i < n; {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("materialize cancelled: %w", err)
			}
		}
		e := s.hdr.Entries[i]
		if e.Zero() {
			i++
			continue
		}
		// Coalesce blocks stored back to back in the same generation file.
		j := i + 1
		for j < n && (j-i+1)*bs <= readChunk && s.hdr.Entries[j].Gen == e.Gen && s.hdr.Entries[j].Slot == e.Slot+uint32(j-i) {
			j++
		}
		chunk := buf[:(j-i)*bs]
		if _, err := s.files[e.Gen].ReadAt(chunk, int64(e.Slot)*int64(bs)); err != nil {
			return fmt.Errorf("read block %d: %w", i, err)
		}
		if _, err := tmp.WriteAt(chunk, int64(i)*int64(bs)); err != nil {
			return fmt.Errorf("write materialize file: %w", err)
		}
		i = j
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("fsync materialize file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename materialize file: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// DiffAgainst returns the blocks of mem (guest memory laid out like the
// snapshot, e.g. QEMU's file-backed RAM) whose xxhash64 differs from the hash
// recorded in the header: the dirty set for WriteDiff, found without a kernel
// dirty log. If mem is an *os.File, holes (SEEK_HOLE) are known to be zero and
// are not read. See the package documentation for the trade-off.
func (s *Snapshot) DiffAgainst(ctx context.Context, mem io.ReaderAt) (*Bitmap, error) {
	bs := int64(s.hdr.BlockSize)
	n := len(s.hdr.Entries)
	dirty := NewBitmap(n)
	dataEnd := int64(-1) // blocks before dataEnd are known to hold data (or unknown)
	f, _ := mem.(*os.File)
	buf := make([]byte, readChunk)
	for i := 0; i < n; {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("diff cancelled: %w", err)
			}
		}
		pos := int64(i) * bs
		if f != nil && pos >= dataEnd {
			data, err := unix.Seek(int(f.Fd()), pos, unix.SEEK_DATA)
			if err != nil {
				data = int64(s.hdr.MemSize) // ENXIO: only a hole remains
			}
			// Whole blocks inside [pos, data) are holes: zero content.
			for ; int64(i+1)*bs <= data && i < n; i++ {
				if s.hdr.Hashes[i] != s.zh {
					dirty.Set(i)
				}
			}
			if i >= n {
				break
			}
			hole, err := unix.Seek(int(f.Fd()), int64(i)*bs, unix.SEEK_HOLE)
			if err != nil {
				hole = int64(s.hdr.MemSize)
			}
			dataEnd = max(hole, int64(i+1)*bs)
			continue
		}
		j := i + 1
		for j < n && int64(j-i+1)*bs <= readChunk && (f == nil || int64(j)*bs < dataEnd) {
			j++
		}
		chunk := buf[:int64(j-i)*bs]
		if m, err := mem.ReadAt(chunk, int64(i)*bs); m < len(chunk) {
			return nil, fmt.Errorf("read guest memory at block %d: %w", i, err)
		}
		for k := i; k < j; k++ {
			if xxhash.Sum64(chunk[int64(k-i)*bs:int64(k-i+1)*bs]) != s.hdr.Hashes[k] {
				dirty.Set(k)
			}
		}
		i = j
	}
	return dirty, nil
}

// DirtyFromSparse returns the blocks of a sparse diff file that hold data
// (SEEK_DATA/SEEK_HOLE), e.g. a Firecracker "Diff" memory file, which contains
// exactly the dirtied pages at their guest offsets. A dirtied page that is now
// zero is still allocated in that file, so it is reported and then recorded
// as ZERO by WriteDiff.
func DirtyFromSparse(f *os.File, blockSize int, numBlocks int) (*Bitmap, error) {
	dirty := NewBitmap(numBlocks)
	end := int64(numBlocks) * int64(blockSize)
	fd := int(f.Fd())
	for pos := int64(0); pos < end; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("seek hole: %w", err)
		}
		dirty.SetRange(int(data/int64(blockSize)), int((hole+int64(blockSize)-1)/int64(blockSize)))
		pos = hole
	}
	return dirty, nil
}
