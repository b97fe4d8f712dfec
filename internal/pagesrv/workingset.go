package pagesrv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// Working-set file format (little-endian), written next to the snapshot:
//
//	0   8  magic "HRTHWSET"
//	8   4  version = 1
//	12  4  unit = 4096 (bytes per page index)
//	16  8  count
//	24  4×count  page indices (guest memory offset / unit), first-touch order
//	...  4  crc32c of everything before it
//
// count is checked against the file size before anything is allocated.
var wsMagic = [8]byte{'H', 'R', 'T', 'H', 'W', 'S', 'E', 'T'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// LoadWorkingSet reads a working set, dropping pages at or beyond maxPages
// (the snapshot's page count).
func LoadWorkingSet(path string, maxPages int) ([]uint32, error) {
	data, err := readBounded(path, 64<<20)
	if err != nil {
		return nil, err
	}
	return parseWorkingSet(data, maxPages)
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open working set: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat working set: %w", err)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("working set %s is %d bytes (limit %d)", path, st.Size(), limit)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && int64(len(data)) != 0 {
		return nil, fmt.Errorf("read working set: %w", err)
	}
	return data, nil
}

func parseWorkingSet(data []byte, maxPages int) ([]uint32, error) {
	le := binary.LittleEndian
	if len(data) < 28 || [8]byte(data[:8]) != wsMagic {
		return nil, errors.New("working set: bad magic or too short")
	}
	if le.Uint32(data[8:]) != 1 || le.Uint32(data[12:]) != unit {
		return nil, errors.New("working set: unsupported version or unit")
	}
	count := le.Uint64(data[16:])
	if count > uint64(len(data)-28)/4 || 24+4*count+4 != uint64(len(data)) {
		return nil, fmt.Errorf("working set: count %d does not match %d bytes", count, len(data))
	}
	if crc32.Checksum(data[:len(data)-4], castagnoli) != le.Uint32(data[len(data)-4:]) {
		return nil, errors.New("working set: checksum mismatch")
	}
	pages := make([]uint32, 0, count)
	for i := range count {
		if p := le.Uint32(data[24+4*i:]); int(p) < maxPages {
			pages = append(pages, p)
		}
	}
	return pages, nil
}

// SaveWorkingSet writes pages atomically (temporary file, fsync, rename).
func SaveWorkingSet(path string, pages []uint32) error {
	le := binary.LittleEndian
	buf := make([]byte, 24+4*len(pages)+4)
	copy(buf, wsMagic[:])
	le.PutUint32(buf[8:], 1)
	le.PutUint32(buf[12:], unit)
	le.PutUint64(buf[16:], uint64(len(pages)))
	for i, p := range pages {
		le.PutUint32(buf[24+4*i:], p)
	}
	le.PutUint32(buf[len(buf)-4:], crc32.Checksum(buf[:len(buf)-4], castagnoli))
	tmp, err := os.CreateTemp(filepath.Dir(path), ".workingset-*")
	if err != nil {
		return fmt.Errorf("create working set: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := tmp.Write(buf); err != nil {
		return fmt.Errorf("write working set: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("fsync working set: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename working set: %w", err)
	}
	return nil
}

// saveWorkingSet records what the next resume should prefetch: the pages
// prefetched this time (minus ranges the VMM removed or unmapped; prefetched
// pages cause no faults, so faults alone would only record the misses)
// followed by the pages faulted in this time, capped at MaxWorkingSet.
func (s *Session) saveWorkingSet() error {
	limit := int(s.cfg.MaxWorkingSet / unit)
	seen := make(map[uint32]bool, len(s.wsPages)+len(s.order))
	out := make([]uint32, 0, min(limit, len(s.wsPages)+len(s.order)))
	add := func(p uint32) {
		if len(out) < limit && !seen[p] && !s.removed.Test(int(p)) && !s.gone.Test(int(p)) {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, p := range s.wsPages {
		add(p)
	}
	for _, p := range s.order {
		add(p)
	}
	if len(out) == 0 && len(s.wsPages) == 0 {
		return nil // nothing touched: keep whatever was recorded before
	}
	return SaveWorkingSet(s.cfg.WorkingSet, out)
}
