package pagesrv

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestHandshakeErrors(t *testing.T) {
	snap, _ := makeSnapshot(t, 64*4096, 1)
	p := newPeer(t, 0, 64*4096)
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeR.Close()
	defer pipeW.Close()
	good := `[{"base_host_virt_addr":` + strconv.FormatUint(p.regions[0].BaseHostVirtAddr, 10) + `,"size":262144,"offset":0,"page_size":4096}]`
	cases := []struct {
		name    string
		payload string
		fds     []int
		close   bool // close right after sending
	}{
		{"malformed JSON", `[{"base_host_virt_addr":`, []int{p.uffd}, true},
		{"not an array", `{"size":1}`, []int{p.uffd}, true},
		{"missing fd", good, nil, true},
		{"two fds", good, []int{p.uffd, p.uffd}, true},
		{"fd is not a uffd", good, []int{int(pipeR.Fd())}, true},
		{"no regions", `[]`, []int{p.uffd}, true},
		{"unaligned region", `[{"base_host_virt_addr":4097,"size":4096,"offset":0,"page_size":4096}]`, []int{p.uffd}, true},
		{"region beyond snapshot", `[{"base_host_virt_addr":` + strconv.FormatUint(p.regions[0].BaseHostVirtAddr, 10) + `,"size":262144,"offset":4096,"page_size":4096}]`, []int{p.uffd}, true},
		{"peer sends nothing", ``, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := fdCount(t)
			sock := filepath.Join(t.TempDir(), "s")
			ln, err := Listen(sock)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := Serve(context.Background(), ln, Config{Snapshot: snap, HandshakeTimeout: 5 * time.Second, NoRecord: true})
				done <- err
			}()
			c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			var oob []byte
			if len(tc.fds) > 0 {
				oob = unix.UnixRights(tc.fds...)
			}
			if tc.payload != "" || oob != nil {
				if _, _, err := c.WriteMsgUnix([]byte(tc.payload), oob, nil); err != nil {
					t.Fatal(err)
				}
			}
			c.Close()
			err = <-done
			if !errors.Is(err, ErrHandshake) {
				t.Fatalf("Serve = %v, want ErrHandshake", err)
			}
			if after := fdCount(t); after != before {
				t.Fatalf("descriptors: %d before, %d after", before, after)
			}
		})
	}
}

func TestHandshakeTimeout(t *testing.T) {
	snap, _ := makeSnapshot(t, 16*4096, 1)
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Serve(context.Background(), ln, Config{Snapshot: snap, HandshakeTimeout: 50 * time.Millisecond})
		done <- err
	}()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // connected but silent, like a VMM that crashed before sending
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Serve = %v, want a deadline error", err)
	}
}

func TestServeRandomOrderFaults(t *testing.T) {
	const size = 512 * 4096
	snap, want := makeSnapshot(t, size, 2)
	p := newPeer(t, FeatureEventRemove, size/2, size/2) // two regions
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := startServer(t, ctx, Config{Snapshot: snap}, p)

	rng := rand.New(rand.NewSource(3))
	order := rng.Perm(size / 4096)
	var wg sync.WaitGroup
	const workers = 4
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; k < len(order); k += workers {
				pg := order[k]
				r := pg * 4096 / (size / 2)
				touch(p.mems[r], pg*4096%(size/2)) // fault it in
			}
		}()
	}
	wg.Wait()
	got := append(bytes.Clone(p.mems[0]), p.mems[1]...)
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("page %d differs from the snapshot", i)
	}
	st := srv.sess.Stats()
	if st.Faults == 0 || st.ZeroFaults == 0 {
		t.Fatalf("stats %+v: want both data and zero faults", st)
	}
	if st.Faults+st.ZeroFaults+st.Exists < size/4096 {
		t.Fatalf("stats %+v: fewer faults than pages", st)
	}
	cancel()
	if err := srv.wait(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

func firstDiff(a, b []byte) int {
	for i := 0; i*4096 < len(a); i++ {
		if !bytes.Equal(a[i*4096:(i+1)*4096], b[i*4096:(i+1)*4096]) {
			return i
		}
	}
	return -1
}

func TestConcurrentFaultsSamePage(t *testing.T) {
	const size = 64 * 4096
	snap, want := makeSnapshot(t, size, 4)
	p := newPeer(t, 0, size)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := startServer(t, ctx, Config{Snapshot: snap, NoRecord: true}, p)
	for pg := range size / 4096 {
		var wg sync.WaitGroup
		start := make(chan struct{})
		got := make([]byte, 8)
		for th := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread() // distinct threads fault on the same page
				defer runtime.UnlockOSThread()
				<-start
				got[th] = p.mems[0][pg*4096+th*512]
			}()
		}
		close(start)
		wg.Wait()
		for th := range 8 {
			if got[th] != want[pg*4096+th*512] {
				t.Fatalf("page %d thread %d read %#x, want %#x", pg, th, got[th], want[pg*4096+th*512])
			}
		}
	}
	if i := firstDiff(p.mems[0], want); i >= 0 {
		t.Fatalf("page %d differs", i)
	}
	t.Logf("stats: %+v", srv.sess.Stats())
	cancel()
	srv.wait(t)
}

// Firecracker's balloon semantics: after UFFD_EVENT_REMOVE a range reads as
// zero on the next touch, never as the snapshot's data.
func TestRemoveEventZeroFills(t *testing.T) {
	const size = 32 * 4096
	snap, want := makeSnapshot(t, size, 5)
	p := newPeer(t, FeatureEventRemove, size)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := startServer(t, ctx, Config{Snapshot: snap}, p)
	m := p.mems[0]
	for i := 0; i < size; i += 4096 {
		touch(m, i)
	}
	if !bytes.Equal(m, want) {
		t.Fatal("initial contents differ")
	}
	// Page 1 holds data (i%5==3 pages are zero in the snapshot).
	if bytes.Equal(want[4096:8192], make([]byte, 4096)) {
		t.Fatal("test setup: page 1 should hold data")
	}
	m[4096+10] = 0xEE // the guest wrote it, then the balloon takes pages 1-2
	if err := unix.Madvise(m[4096:3*4096], unix.MADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 4096)
	for pg := 1; pg <= 2; pg++ {
		if !bytes.Equal(m[pg*4096:(pg+1)*4096], zero) {
			t.Fatalf("page %d after REMOVE is not zero", pg)
		}
	}
	if !bytes.Equal(m[3*4096:], want[3*4096:]) || !bytes.Equal(m[:4096], want[:4096]) {
		t.Fatal("pages outside the removed range changed")
	}
	st := srv.sess.Stats()
	if st.Removes == 0 || st.RemovedFaults < 2 {
		t.Fatalf("stats %+v: want a REMOVE event and zero-filled faults", st)
	}
	cancel()
	srv.wait(t)
	// The removed pages are not in the recorded working set.
	ws, err := LoadWorkingSet(filepath.Join(snap.Dir(), "workingset"), size/4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, pg := range ws {
		if pg == 1 || pg == 2 {
			t.Fatalf("removed page %d recorded in the working set", pg)
		}
	}
}

// The working set of one resume is prefetched by the next: after prefetch
// completes, touching the same pages causes no data faults.
func TestWorkingSetPrefetch(t *testing.T) {
	const size = 1024 * 4096
	snap, want := makeSnapshot(t, size, 6)
	rng := rand.New(rand.NewSource(7))
	var touched []int
	for pg := 0; pg < size/4096; pg++ {
		if pg%3 == 0 || (pg > 500 && pg < 700) {
			touched = append(touched, pg)
		}
	}
	rng.Shuffle(len(touched), func(i, j int) { touched[i], touched[j] = touched[j], touched[i] })

	// Resume 1: faults only; records the working set.
	p1 := newPeer(t, 0, size)
	ctx1, cancel1 := context.WithCancel(context.Background())
	srv1 := startServer(t, ctx1, Config{Snapshot: snap, Prefetch: true}, p1)
	for _, pg := range touched {
		touch(p1.mems[0], pg*4096)
	}
	cancel1()
	srv1.wait(t)
	ws, err := LoadWorkingSet(filepath.Join(snap.Dir(), "workingset"), size/4096)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != len(touched) {
		t.Fatalf("working set has %d pages, resume touched %d", len(ws), len(touched))
	}
	for i := range ws {
		if int(ws[i]) != touched[i] {
			t.Fatalf("working set[%d] = %d, want %d (first-touch order)", i, ws[i], touched[i])
		}
	}

	// Resume 2: prefetch runs; wait for it, then touch the same pages.
	p2 := newPeer(t, 0, size)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	srv2 := startServer(t, ctx2, Config{Snapshot: snap, Prefetch: true, PrefetchRun: 64 << 10}, p2)
	waitFor(t, "prefetch", func() bool { return srv2.sess.Stats().PrefetchDone })
	before := srv2.sess.Stats()
	for _, pg := range touched {
		if !bytes.Equal(p2.mems[0][pg*4096:(pg+1)*4096], want[pg*4096:(pg+1)*4096]) {
			t.Fatalf("prefetched page %d differs", pg)
		}
	}
	after := srv2.sess.Stats()
	if after.Faults+after.ZeroFaults != before.Faults+before.ZeroFaults {
		t.Fatalf("touching prefetched pages faulted: before %+v after %+v", before, after)
	}
	if after.PrefetchedBytes != uint64(len(touched))*4096 {
		t.Fatalf("prefetched %d bytes, want %d", after.PrefetchedBytes, len(touched)*4096)
	}
	// Pages outside the working set are still served on demand.
	touch(p2.mems[0], 4096)
	if !bytes.Equal(p2.mems[0][4096:8192], want[4096:8192]) {
		t.Fatal("on-demand page after prefetch differs")
	}
	cancel2()
	srv2.wait(t)
}

// A peer in another process is killed mid-restore: the session ends with
// nil, and no goroutine or descriptor is left behind.
func TestPeerProcessDies(t *testing.T) {
	const size = 16384 * 4096
	snap, _ := makeSnapshot(t, size, 8)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenUserfaultfd(); err != nil {
		t.Skipf("userfaultfd unavailable: %v", err)
	}
	baseG, baseFD := runtime.NumGoroutine(), fdCount(t)
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "PAGESRV_TEST_PEER="+sock, "PAGESRV_TEST_SIZE="+strconv.Itoa(size))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err := ln.AcceptUnix()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	hs, err := ReadHandshake(context.Background(), conn, 5*time.Second)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	if hs.PeerPID != cmd.Process.Pid {
		t.Fatalf("SO_PEERCRED pid %d, child is %d", hs.PeerPID, cmd.Process.Pid)
	}
	s, err := NewSession(hs.Uffd, hs.Regions, hs.PeerPID, Config{Snapshot: snap})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Run(context.Background())
		done <- err
	}()
	waitFor(t, "some faults", func() bool { return s.Stats().Faults > 10 })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after peer death = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("session did not notice the peer's death")
	}
	t.Logf("served %d faults before the peer died", s.Stats().Faults)
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= baseG })
	if fd := fdCount(t); fd != baseFD {
		t.Fatalf("descriptors: %d before, %d after", baseFD, fd)
	}
}

// An in-process peer unmaps its memory and closes the socket and uffd: with
// UNMAP events the session sees all memory gone and ends cleanly.
func TestPeerUnmapsAndCloses(t *testing.T) {
	const size = 64 * 4096
	snap, want := makeSnapshot(t, size, 9)
	baseG, baseFD := runtime.NumGoroutine(), fdCount(t)
	p, err := makePeer(FeatureEventRemove|FeatureEventUnmap, size/2, size/2)
	if err != nil {
		t.Skipf("userfaultfd unavailable: %v", err)
	}
	ctx := context.Background()
	srv := startServer(t, ctx, Config{Snapshot: snap}, p)
	for i := 0; i < size/2; i += 3 * 4096 {
		if p.mems[0][i] != want[i] {
			t.Fatalf("byte %d differs", i)
		}
	}
	p.close() // munmap both regions (UNMAP events), close the uffd
	if err := srv.wait(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if st := srv.st; st.Unmaps < 2 {
		t.Fatalf("stats %+v: want 2 UNMAP events", st)
	}
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= baseG })
	if fd := fdCount(t); fd != baseFD {
		t.Fatalf("descriptors: %d before, %d after", baseFD, fd)
	}
}

func TestPlanPrefetch(t *testing.T) {
	t.Parallel()
	got := planPrefetch([]uint32{40, 3, 4, 5, 41, 9, 1000, 2, 42}, 16)
	want := [][2]uint32{{40, 43}, {2, 6}, {9, 10}, {1000, 1001}}
	if len(got) != len(want) {
		t.Fatalf("plan %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("plan %v, want %v", got, want)
		}
	}
}

func TestWorkingSetFileRejectsCorruption(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ws")
	if err := SaveWorkingSet(path, []uint32{1, 2, 3, 99}); err != nil {
		t.Fatal(err)
	}
	got, err := LoadWorkingSet(path, 50)
	if err != nil || len(got) != 3 {
		t.Fatalf("LoadWorkingSet = %v, %v; want 3 pages (99 is beyond the snapshot)", got, err)
	}
	data, _ := os.ReadFile(path)
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x40
		if _, err := parseWorkingSet(bad, 50); err == nil {
			t.Fatalf("flipping byte %d was not detected", i)
		}
	}
	if _, err := parseWorkingSet(data[:len(data)-5], 50); err == nil {
		t.Fatal("truncated file accepted")
	}
}
