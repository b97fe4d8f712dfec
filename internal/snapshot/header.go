package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/bits"
	"os"

	"github.com/cespare/xxhash/v2"
)

// Format constants; see the package documentation for the layout.
const (
	Version        = 1
	ZeroGen        = math.MaxUint32 // entry generation index meaning "all zero"
	MinBlockSize   = 4096
	MaxBlockSize   = 16 << 20
	preambleSize   = 64
	genEntrySize   = 16
	blockEntrySize = 8
	hashSize       = 8
	trailerSize    = 4
	// maxHeaderFile bounds what ReadHeader is willing to read (covers 4 TiB of
	// guest memory at 4 KiB blocks).
	maxHeaderFile = 16 << 30
)

var (
	magic      = [8]byte{'H', 'R', 'T', 'H', 'S', 'N', 'A', 'P'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// ErrCorrupt is wrapped by every header validation error.
var ErrCorrupt = errors.New("snapshot header corrupt")

// GenInfo is one row of the generation table.
type GenInfo struct {
	ID     uint64 // names gen-<ID>.mem
	Blocks uint64 // blocks stored in the file
}

// Entry locates one block of guest memory.
type Entry struct {
	Gen  uint32 // index into Header.Gens, or ZeroGen
	Slot uint32 // block index inside that generation's file
}

// Zero reports whether the block is all zero bytes.
func (e Entry) Zero() bool { return e.Gen == ZeroGen }

// Header maps every block of guest memory to the generation holding it.
type Header struct {
	BlockSize uint32
	MemSize   uint64
	Seq       uint64
	Gens      []GenInfo
	Entries   []Entry
	Hashes    []uint64
}

// NumBlocks is the number of blocks of guest memory.
func (h *Header) NumBlocks() int { return len(h.Entries) }

func checkGeometry(blockSize uint32, memSize uint64) error {
	if blockSize < MinBlockSize || blockSize > MaxBlockSize || bits.OnesCount32(blockSize) != 1 {
		return fmt.Errorf("block size %d: must be a power of two in [%d, %d]", blockSize, MinBlockSize, MaxBlockSize)
	}
	if memSize == 0 || memSize%uint64(blockSize) != 0 {
		return fmt.Errorf("memory size %d: must be a positive multiple of the block size %d", memSize, blockSize)
	}
	if memSize/uint64(blockSize) > math.MaxUint32 {
		return fmt.Errorf("memory size %d: more than 2^32 blocks", memSize)
	}
	return nil
}

// MarshalBinary encodes the header in the version-1 format.
func (h *Header) MarshalBinary() ([]byte, error) {
	if err := checkGeometry(h.BlockSize, h.MemSize); err != nil {
		return nil, err
	}
	n := h.MemSize / uint64(h.BlockSize)
	if uint64(len(h.Entries)) != n || uint64(len(h.Hashes)) != n {
		return nil, fmt.Errorf("header has %d entries and %d hashes for %d blocks", len(h.Entries), len(h.Hashes), n)
	}
	size := preambleSize + genEntrySize*len(h.Gens) + (blockEntrySize+hashSize)*len(h.Entries) + trailerSize
	buf := make([]byte, size)
	le := binary.LittleEndian
	copy(buf, magic[:])
	le.PutUint32(buf[8:], Version)
	le.PutUint32(buf[16:], h.BlockSize)
	le.PutUint32(buf[20:], uint32(len(h.Gens)))
	le.PutUint64(buf[24:], h.MemSize)
	le.PutUint64(buf[32:], h.Seq)
	le.PutUint64(buf[40:], n)
	le.PutUint32(buf[60:], crc32.Checksum(buf[:60], castagnoli))
	p := buf[preambleSize:]
	for _, g := range h.Gens {
		le.PutUint64(p, g.ID)
		le.PutUint64(p[8:], g.Blocks)
		p = p[genEntrySize:]
	}
	for _, e := range h.Entries {
		le.PutUint32(p, e.Gen)
		le.PutUint32(p[4:], e.Slot)
		p = p[blockEntrySize:]
	}
	for _, x := range h.Hashes {
		le.PutUint64(p, x)
		p = p[hashSize:]
	}
	body := buf[preambleSize : size-trailerSize]
	le.PutUint32(buf[size-trailerSize:], crc32.Checksum(body, castagnoli))
	// Validate what we are about to persist with the same code that reads it.
	if _, err := ParseHeader(buf); err != nil {
		return nil, fmt.Errorf("refusing to write an invalid header: %w", err)
	}
	return buf, nil
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// ParseHeader decodes and validates a version-1 header. Every count is
// checked against len(data) before allocating, so hostile input cannot cause
// an allocation larger than a small multiple of len(data).
func ParseHeader(data []byte) (*Header, error) {
	if len(data) < preambleSize+trailerSize {
		return nil, corrupt("%d bytes is shorter than the fixed part", len(data))
	}
	if !bytes.Equal(data[:8], magic[:]) {
		return nil, corrupt("bad magic %q", data[:8])
	}
	le := binary.LittleEndian
	if got := crc32.Checksum(data[:60], castagnoli); got != le.Uint32(data[60:]) {
		return nil, corrupt("preamble checksum mismatch")
	}
	if v := le.Uint32(data[8:]); v != Version {
		return nil, corrupt("unsupported version %d (this reader knows %d)", v, Version)
	}
	if f := le.Uint32(data[12:]); f != 0 {
		return nil, corrupt("unknown flags %#x", f)
	}
	for _, b := range data[48:60] {
		if b != 0 {
			return nil, corrupt("reserved bytes are not zero")
		}
	}
	h := &Header{
		BlockSize: le.Uint32(data[16:]),
		MemSize:   le.Uint64(data[24:]),
		Seq:       le.Uint64(data[32:]),
	}
	g := uint64(le.Uint32(data[20:]))
	n := le.Uint64(data[40:])
	if err := checkGeometry(h.BlockSize, h.MemSize); err != nil {
		return nil, corrupt("%v", err)
	}
	if n != h.MemSize/uint64(h.BlockSize) {
		return nil, corrupt("block count %d does not match memory size %d / block size %d", n, h.MemSize, h.BlockSize)
	}
	// Bound both counts by the bytes actually present before multiplying.
	avail := uint64(len(data) - preambleSize - trailerSize)
	if g > avail/genEntrySize || n > avail/(blockEntrySize+hashSize) ||
		g*genEntrySize+n*(blockEntrySize+hashSize) != avail {
		return nil, corrupt("size %d does not match %d generations and %d blocks", len(data), g, n)
	}
	body := data[preambleSize : len(data)-trailerSize]
	if got := crc32.Checksum(body, castagnoli); got != le.Uint32(data[len(data)-trailerSize:]) {
		return nil, corrupt("body checksum mismatch")
	}
	h.Gens = make([]GenInfo, g)
	p := body
	for i := range h.Gens {
		h.Gens[i] = GenInfo{ID: le.Uint64(p), Blocks: le.Uint64(p[8:])}
		p = p[genEntrySize:]
		if i > 0 && h.Gens[i].ID <= h.Gens[i-1].ID {
			return nil, corrupt("generation ids not strictly increasing")
		}
		if h.Gens[i].ID > h.Seq || h.Gens[i].ID == 0 {
			return nil, corrupt("generation id %d outside (0, seq %d]", h.Gens[i].ID, h.Seq)
		}
		if h.Gens[i].Blocks > n || h.Gens[i].Blocks == 0 {
			return nil, corrupt("generation %d holds %d blocks (memory has %d)", h.Gens[i].ID, h.Gens[i].Blocks, n)
		}
	}
	h.Entries = make([]Entry, n)
	for i := range h.Entries {
		e := Entry{Gen: le.Uint32(p), Slot: le.Uint32(p[4:])}
		p = p[blockEntrySize:]
		if !e.Zero() {
			if uint64(e.Gen) >= g {
				return nil, corrupt("block %d: generation index %d out of range", i, e.Gen)
			}
			if uint64(e.Slot) >= h.Gens[e.Gen].Blocks {
				return nil, corrupt("block %d: slot %d beyond generation size %d", i, e.Slot, h.Gens[e.Gen].Blocks)
			}
		} else if e.Slot != 0 {
			return nil, corrupt("block %d: zero entry with slot %d", i, e.Slot)
		}
		h.Entries[i] = e
	}
	h.Hashes = make([]uint64, n)
	for i := range h.Hashes {
		h.Hashes[i] = le.Uint64(p)
		p = p[hashSize:]
	}
	return h, nil
}

// ReadHeader reads and parses a header file; the read is bounded by the
// file's size.
func ReadHeader(path string) (*Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open header: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat header: %w", err)
	}
	if st.Size() > maxHeaderFile {
		return nil, corrupt("%s is %d bytes (limit %d)", path, st.Size(), maxHeaderFile)
	}
	data := make([]byte, st.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("read header %s: %w", path, err)
	}
	h, err := ParseHeader(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}

// zeroHash returns the xxhash64 of an all-zero block of the given size.
func zeroHash(blockSize int) uint64 {
	return xxhash.Sum64(make([]byte, blockSize))
}

func isZero(b []byte) bool {
	// The compiler turns this into word-sized compares; measured fast enough
	// that it never shows up next to the write itself.
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
