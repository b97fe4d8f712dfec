package sandboxsnap

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/snapshot"
	"golang.org/x/sys/unix"
)

func TestPageRuns(t *testing.T) {
	cases := []struct {
		in   []uint32
		want [][2]uint32
	}{
		{nil, nil},
		{[]uint32{5}, [][2]uint32{{5, 6}}},
		{[]uint32{7, 5, 6, 6, 9}, [][2]uint32{{5, 8}, {9, 10}}},
		{[]uint32{3, 1, 2, 0}, [][2]uint32{{0, 4}}},
	}
	for _, tc := range cases {
		if got := pageRuns(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("pageRuns(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestMappedPagesSeesTouchedPagesOfARealMapping maps a file copy-on-write
// in this process (as QEMU maps a RAM file), touches pages from several
// goroutines at once (reads and writes), and checks that the pagemap
// reading finds every touched page and not the untouched bulk of the file.
func TestMappedPagesSeesTouchedPagesOfARealMapping(t *testing.T) {
	const pages = 16384 // 64 MiB
	path := filepath.Join(t.TempDir(), "ram")
	data := make([]byte, pages*pageSize)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, pages*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	touched := []int{1, 700, 4097, 9000, 12001, 16383}
	var wg sync.WaitGroup
	sums := make([]byte, len(touched))
	for i, p := range touched {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				mem[p*pageSize+1] ^= 0xff // a write: copy-on-write
			} else {
				sums[i] = mem[p*pageSize+5] // a read: the page cache's page
			}
		}()
	}
	wg.Wait()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	got, err := mappedPages(os.Getpid(), uint64(st.Dev), st.Ino, pages)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range touched {
		if !slices.Contains(got, uint32(p)) {
			t.Errorf("touched page %d not found (%d pages found)", p, len(got))
		}
	}
	// Fault-around and large folios map neighbours too, but not the file.
	if len(got) > pages/4 {
		t.Errorf("%d of %d pages reported for %d touched", len(got), pages, len(touched))
	}
	t.Logf("%d touched pages, %d reported mapped", len(touched), len(got))
	// The file itself is unchanged by the writes through the private mapping.
	back, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, data) {
		t.Fatal("a write through the copy-on-write mapping reached the file")
	}
}

// parentSnapshot writes mem as a snapshot store in dir and opens it (closed
// when the test ends).
func parentSnapshot(t *testing.T, dir string, mem []byte) *snapshot.Snapshot {
	t.Helper()
	st, err := snapshot.NewStore(dir, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.WriteFull(context.Background(), bytes.NewReader(mem), int64(len(mem))); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { snap.Close() })
	return snap
}

// TestRAMWriterPatchesDiffAndRollsBack: patch mode writes only the pages
// whose hash differs from the parent snapshot (a zeroed page included, and
// punched out), marks exactly those dirty, and rollbackRAM restores the
// parent's content under the original name.
func TestRAMWriterPatchesDiffAndRollsBack(t *testing.T) {
	const pages = 64
	dir := t.TempDir()
	parentMem := make([]byte, pages*pageSize)
	if _, err := rand.Read(parentMem[:40*pageSize]); err != nil { // pages 40.. stay zero
		t.Fatal(err)
	}
	snap := parentSnapshot(t, filepath.Join(dir, "mem"), parentMem)
	origin := filepath.Join(dir, "ram-origin")
	staged := filepath.Join(dir, ".staging-ram")
	if err := os.WriteFile(staged, parentMem, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(staged, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	now := slices.Clone(parentMem)
	copy(now[3*pageSize:], bytes.Repeat([]byte{7}, pageSize))  // changed
	clear(now[10*pageSize : 11*pageSize])                      // zeroed
	copy(now[50*pageSize:], bytes.Repeat([]byte{9}, pageSize)) // was zero
	w := newRAMWriter(f, snap.Header(), 0)
	for p := range pages { // every page, as QEMU hands them out
		page := now[p*pageSize : (p+1)*pageSize]
		if bytes.Equal(page, make([]byte, pageSize)) {
			page = nil
		}
		if err := w.page(int64(p)*pageSize, page); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	var dirty []int
	for i := w.dirty.NextSet(0); i >= 0; i = w.dirty.NextSet(i + 1) {
		dirty = append(dirty, i)
	}
	if !slices.Equal(dirty, []int{3, 10, 50}) {
		t.Fatalf("dirty pages %v, want [3 10 50]", dirty)
	}
	if got, _ := os.ReadFile(staged); !bytes.Equal(got, now) {
		t.Fatal("patched file does not hold the new memory")
	}
	s := &Snapshotter{log: slog.Default()}
	s.rollbackRAM(f, w, snap, staged, origin)
	got, err := os.ReadFile(origin)
	if err != nil {
		t.Fatalf("rolled-back file not renamed back: %v", err)
	}
	if !bytes.Equal(got, parentMem) {
		t.Fatal("rolled-back file does not hold the parent snapshot")
	}
}

// TestRAMFileConcurrentRestores: restores from one directory at once (the
// children of a template spawned together) get one RAM file, built once,
// holding the snapshot's memory.
func TestRAMFileConcurrentRestores(t *testing.T) {
	dir := t.TempDir()
	mem := make([]byte, 256*pageSize)
	if _, err := rand.Read(mem[:100*pageSize]); err != nil {
		t.Fatal(err)
	}
	st, err := snapshot.NewStore(filepath.Join(dir, memDirName), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.WriteFull(context.Background(), bytes.NewReader(mem), int64(len(mem))); err != nil {
		t.Fatal(err)
	}
	s := &Snapshotter{log: slog.Default(), boot: "boot-1", ramLocks: map[string]chan struct{}{}}
	// A file of an earlier boot is retired by the first build.
	stale := filepath.Join(dir, ramName(1, "boot-0"))
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 8
	paths := make([]string, n)
	built := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			snap, err := snapshot.Open(filepath.Join(dir, memDirName))
			if err != nil {
				errs[i] = err
				return
			}
			defer snap.Close()
			paths[i], built[i], errs[i] = s.ramFile(context.Background(), dir, snap)
		}()
	}
	wg.Wait()
	builds := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("restore %d: %v", i, errs[i])
		}
		if paths[i] != paths[0] {
			t.Fatalf("restores got %s and %s", paths[0], paths[i])
		}
		if built[i] {
			builds++
		}
	}
	if builds != 1 {
		t.Errorf("RAM file built %d times, want once", builds)
	}
	got, err := os.ReadFile(paths[0])
	if err != nil || !bytes.Equal(got, mem) {
		t.Fatalf("RAM file does not hold the snapshot (%v)", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if n := e.Name(); n != memDirName && n != filepath.Base(paths[0]) {
			t.Errorf("left in the directory: %s", n)
		}
	}
}

// TestRAMWriterLastPassWins: a live snapshot hands a page out again when
// the guest wrote it after its first pass; the file must end up with the
// last copy even when that equals the parent's page or zero (which a
// writer that only compares against the parent would skip).
func TestRAMWriterLastPassWins(t *testing.T) {
	const pages = 16
	fill := func(b byte) []byte { return bytes.Repeat([]byte{b}, pageSize) }
	for _, patch := range []bool{true, false} {
		t.Run(map[bool]string{true: "patch", false: "sparse"}[patch], func(t *testing.T) {
			dir := t.TempDir()
			parentMem := make([]byte, pages*pageSize)
			for p := range 8 { // pages 8.. are zero
				copy(parentMem[p*pageSize:], fill(byte(p+1)))
			}
			f, err := os.OpenFile(filepath.Join(dir, "ram"), os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var w *ramWriter
			if patch {
				snap := parentSnapshot(t, filepath.Join(dir, "mem"), parentMem)
				if _, err := f.Write(parentMem); err != nil {
					t.Fatal(err)
				}
				w = newRAMWriter(f, snap.Header(), 0)
			} else {
				if err := f.Truncate(pages * pageSize); err != nil {
					t.Fatal(err)
				}
				w = newRAMWriter(f, nil, pages)
			}
			want := slices.Clone(parentMem)
			hand := func(p int, data []byte) {
				t.Helper()
				if data == nil {
					clear(want[p*pageSize : (p+1)*pageSize])
				} else {
					copy(want[p*pageSize:], data)
				}
				if err := w.page(int64(p)*pageSize, data); err != nil {
					t.Fatal(err)
				}
			}
			// First pass: every page, some changed since the parent.
			for p := range pages {
				switch p {
				case 1, 2, 3:
					hand(p, fill(0xaa))
				case 9, 10:
					hand(p, fill(0xbb))
				default:
					if p < 8 {
						hand(p, parentMem[p*pageSize:(p+1)*pageSize])
					} else {
						hand(p, nil)
					}
				}
			}
			// Second pass: the guest wrote them again.
			hand(1, parentMem[pageSize:2*pageSize]) // back to the parent's page
			hand(2, nil)                            // zeroed
			hand(3, fill(0xcc))                     // changed again
			hand(9, nil)                            // back to zero
			hand(10, fill(0xdd))
			if err := w.flush(); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(want))
			if _, err := f.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			for p := range pages {
				if !bytes.Equal(got[p*pageSize:(p+1)*pageSize], want[p*pageSize:(p+1)*pageSize]) {
					t.Errorf("page %d: got %#x…, want %#x…", p, got[p*pageSize], want[p*pageSize])
				}
			}
		})
	}
}
