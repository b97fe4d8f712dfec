package sandboxsnap

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hearth-sandbox/hearth/internal/pagesrv"
	"golang.org/x/sys/unix"
)

// Working set of lazily restored QEMU guests (the Firecracker page server
// keeps its own, in the same file format and place: pagesrv).
//
// Recording: WorkingSetWindow after a restore, the pages of the RAM file
// mapping that are present in QEMU's page table (/proc/PID/pagemap) are the
// pages the guest touched since the restore (read or written; the kernel's
// fault-around also maps up to 16 neighbours of a read fault that were
// cached). They are saved as the working set of the directory the guest
// was restored from: a template's for its children, a sandbox's own for
// its next resume.
//
// Prefetch: before the next restore from that directory, the runs of the
// working set are read ahead into the page cache (posix_fadvise WILLNEED,
// asynchronous), so the guest's first touches are minor faults instead of
// reads from disk. Pages already cached (a RAM file just written by a
// pause) cost nothing. The guest's page-table entries still fill on first
// touch: no interface populates another process's mappings.

// prefetchRAM reads dir's working set ahead in the RAM file at path and
// returns how many bytes it asked for.
func (s *Snapshotter) prefetchRAM(dir, path string, pages int) int64 {
	if s.o.NoPrefetch {
		return 0
	}
	ws, err := pagesrv.LoadWorkingSet(filepath.Join(dir, workingSetName), pages)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("working set", "dir", dir, "err", err)
		}
		return 0
	}
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	var total int64
	for _, r := range pageRuns(ws) {
		off, n := int64(r[0])*pageSize, int64(r[1]-r[0])*pageSize
		if err := unix.Fadvise(int(f.Fd()), off, n, unix.FADV_WILLNEED); err != nil {
			s.log.Warn("prefetch RAM file", "path", path, "err", err)
			return total
		}
		total += n
	}
	return total
}

// pageRuns sorts pages and returns them as [first, end) runs.
func pageRuns(pages []uint32) [][2]uint32 {
	p := slices.Clone(pages)
	slices.Sort(p)
	var runs [][2]uint32
	for _, x := range p {
		if n := len(runs); n > 0 && runs[n-1][1] >= x {
			runs[n-1][1] = max(runs[n-1][1], x+1)
			continue
		}
		runs = append(runs, [2]uint32{x, x + 1})
	}
	return runs
}

// recordWorkingSet waits WorkingSetWindow, then saves the pages of the RAM
// file ram that QEMU process pid has mapped as dir's working set. A
// machine gone by then records nothing.
func (s *Snapshotter) recordWorkingSet(pid int, ram, dir string, pages int) {
	var st syscall.Stat_t
	if err := syscall.Stat(ram, &st); err != nil {
		return
	}
	time.Sleep(s.o.WorkingSetWindow)
	touched, err := mappedPages(pid, uint64(st.Dev), st.Ino, pages)
	if err != nil {
		s.log.Debug("working set not recorded", "pid", pid, "err", err)
		return
	}
	if len(touched) == 0 {
		return
	}
	if err := pagesrv.SaveWorkingSet(filepath.Join(dir, workingSetName), touched); err != nil {
		s.log.Warn("save working set", "dir", dir, "err", err)
		return
	}
	s.log.Info("working set recorded", "dir", dir, "pages", len(touched))
}

// mappedPages returns the page indices (within the file) of the file
// (dev, ino) that process pid has present in its page tables, for the
// first `pages` pages of the file.
func mappedPages(pid int, dev, ino uint64, pages int) ([]uint32, error) {
	start, end, fileOff, err := findMapping(pid, dev, ino)
	if err != nil {
		return nil, err
	}
	pm, err := os.Open("/proc/" + strconv.Itoa(pid) + "/pagemap")
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	const chunk = 4096 // entries per read
	buf := make([]byte, 8*chunk)
	var out []uint32
	for va := start; va < end; {
		n := min(uint64(chunk), (end-va)/pageSize)
		b := buf[:8*n]
		if _, err := pm.ReadAt(b, int64(va/pageSize*8)); err != nil {
			return nil, fmt.Errorf("pagemap: %w", err)
		}
		for i := range n {
			e := binary.LittleEndian.Uint64(b[8*i:])
			if e&(1<<63) == 0 && e&(1<<62) == 0 { // neither present nor swapped
				continue
			}
			p := (va-start+fileOff)/pageSize + i
			if p < uint64(pages) {
				out = append(out, uint32(p))
			}
		}
		va += n * pageSize
	}
	return out, nil
}

// findMapping returns the address range and file offset of pid's mapping
// of the file (dev, ino), the largest if there are several.
func findMapping(pid int, dev, ino uint64) (start, end, off uint64, err error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset major:minor inode path
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 {
			continue
		}
		if i, err := strconv.ParseUint(fs[4], 10, 64); err != nil || i != ino {
			continue
		}
		maj, min, ok := strings.Cut(fs[3], ":")
		ma, err1 := strconv.ParseUint(maj, 16, 32)
		mi, err2 := strconv.ParseUint(min, 16, 32)
		if !ok || err1 != nil || err2 != nil || unix.Mkdev(uint32(ma), uint32(mi)) != dev {
			continue
		}
		a, b, _ := strings.Cut(fs[0], "-")
		s, err1 := strconv.ParseUint(a, 16, 64)
		e, err2 := strconv.ParseUint(b, 16, 64)
		o, err3 := strconv.ParseUint(fs[2], 16, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		if e-s > end-start {
			start, end, off = s, e, o
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, 0, err
	}
	if end == 0 {
		return 0, 0, 0, fmt.Errorf("process %d does not map the RAM file", pid)
	}
	return start, end, off, nil
}
