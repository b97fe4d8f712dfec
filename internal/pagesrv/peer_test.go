package pagesrv

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/hearth-sandbox/hearth/internal/snapshot"
	"golang.org/x/sys/unix"
)

// A goroutine that touches a missing page blocks in the kernel while holding
// a Go P; with few Ps the server goroutine could be starved. Tests and
// benchmarks fault from several goroutines at once, so give them room.
func TestMain(m *testing.M) {
	if os.Getenv("PAGESRV_TEST_PEER") != "" {
		childPeer()
		return
	}
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), 16))
	os.Exit(m.Run())
}

// peer does Firecracker's side: anonymous guest memory registered with a
// non-blocking uffd, sent over the socket with the region list.
type peer struct {
	uffd    int
	mems    [][]byte
	regions []Region
}

func newPeer(tb testing.TB, features uint64, sizes ...int) *peer {
	tb.Helper()
	p, err := makePeer(features, sizes...)
	if err != nil {
		tb.Skipf("userfaultfd unavailable: %v (needs the userfaultfd syscall or rw access to /dev/userfaultfd)", err)
	}
	tb.Cleanup(p.close)
	return p
}

func makePeer(features uint64, sizes ...int) (*peer, error) {
	fd, err := OpenUserfaultfd()
	if err != nil {
		return nil, err
	}
	p := &peer{uffd: fd}
	if _, err := EnableAPI(fd, features); err != nil {
		p.close()
		return nil, err
	}
	var off uint64
	for _, sz := range sizes {
		m, err := unix.Mmap(-1, 0, sz, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			p.close()
			return nil, err
		}
		p.mems = append(p.mems, m)
		base := uintptr(unsafe.Pointer(&m[0]))
		if err := RegisterMissing(fd, base, uintptr(sz)); err != nil {
			p.close()
			return nil, err
		}
		p.regions = append(p.regions, Region{BaseHostVirtAddr: uint64(base), Size: uint64(sz), Offset: off, PageSize: 4096, PageSizeKiB: 4096})
		off += uint64(sz)
	}
	return p, nil
}

func (p *peer) close() {
	for _, m := range p.mems {
		unix.Munmap(m)
	}
	p.mems = nil
	if p.uffd >= 0 {
		unix.Close(p.uffd)
		p.uffd = -1
	}
}

// connect sends the handshake and closes the socket, as Firecracker does.
func (p *peer) connect(tb testing.TB, sock string) {
	tb.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	if err := SendHandshake(c, p.regions, p.uffd); err != nil {
		tb.Fatal(err)
	}
}

// makeSnapshot stores random memory with some zero blocks and returns it.
func makeSnapshot(tb testing.TB, size int, seed int64) (*snapshot.Snapshot, []byte) {
	tb.Helper()
	rng := rand.New(rand.NewSource(seed))
	mem := make([]byte, size)
	rng.Read(mem)
	for i := 0; i < size/4096; i++ {
		if i%5 == 3 {
			clear(mem[i*4096 : (i+1)*4096])
		}
	}
	dir := tb.TempDir()
	st, err := snapshot.NewStore(dir, snapshot.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	if err := st.WriteFull(context.Background(), bytes.NewReader(mem), int64(size)); err != nil {
		tb.Fatal(err)
	}
	// A diff on top, so serving crosses generations.
	d := snapshot.NewBitmap(size / 4096)
	for i := 0; i < size/4096; i += 7 {
		rng.Read(mem[i*4096 : (i+1)*4096])
		d.Set(i)
	}
	if err := st.WriteDiff(context.Background(), bytes.NewReader(mem), d); err != nil {
		tb.Fatal(err)
	}
	snap, err := snapshot.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { snap.Close() })
	return snap, mem
}

// server runs one handshake + session and exposes the session.
type server struct {
	sess *Session
	done chan error
	st   Stats
}

func startServer(tb testing.TB, ctx context.Context, cfg Config, p *peer) *server {
	tb.Helper()
	sock := filepath.Join(tb.TempDir(), "uffd.sock")
	ln, err := Listen(sock)
	if err != nil {
		tb.Fatal(err)
	}
	type res struct {
		s   *Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		defer ln.Close()
		conn, err := ln.AcceptUnix()
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer conn.Close()
		hs, err := ReadHandshake(ctx, conn, 5*time.Second)
		if err != nil {
			ch <- res{err: err}
			return
		}
		s, err := NewSession(hs.Uffd, hs.Regions, hs.PeerPID, cfg)
		ch <- res{s, err}
	}()
	p.connect(tb, sock)
	r := <-ch
	if r.err != nil {
		tb.Fatal(r.err)
	}
	srv := &server{sess: r.s, done: make(chan error, 1)}
	go func() {
		st, err := r.s.Run(ctx)
		srv.st = st
		srv.done <- err
	}()
	return srv
}

func (s *server) wait(tb testing.TB) error {
	tb.Helper()
	select {
	case err := <-s.done:
		return err
	case <-time.After(30 * time.Second):
		tb.Fatal("session did not end")
		return nil
	}
}

func fdCount(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}

// waitFor polls cond (progress, not timing, is asserted).
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// childPeer is the peer in a separate process (for the peer-death test):
// it registers memory, sends the handshake, touches every page and then
// waits to be killed.
func childPeer() {
	size, _ := strconv.Atoi(os.Getenv("PAGESRV_TEST_SIZE"))
	p, err := makePeer(FeatureEventRemove, size)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: os.Getenv("PAGESRV_TEST_PEER"), Net: "unix"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := SendHandshake(c, p.regions, p.uffd); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	c.Close()
	var sum byte
	for i := 0; i < size; i += 4096 {
		sum += p.mems[0][i]
	}
	fmt.Println(sum)
	select {}
}

// touch reads one byte; not inlined, so the load (and the fault) happens.
//
//go:noinline
func touch(b []byte, i int) byte { return b[i] }
