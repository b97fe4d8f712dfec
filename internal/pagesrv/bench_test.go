package pagesrv

import (
	"bytes"
	"context"
	"math/rand"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/snapshot"
	"golang.org/x/sys/unix"
)

// Run the comparisons in one invocation (the machine is noisy; compare the
// ratios, not absolute figures):
//
//	go test -run '^$' -bench . -count 3 ./internal/pagesrv/
const benchSize = 64 << 20

func denseSnapshot(b *testing.B) (*snapshot.Snapshot, []byte) {
	b.Helper()
	mem := make([]byte, benchSize)
	rand.New(rand.NewSource(1)).Read(mem)
	dir := b.TempDir()
	st, err := snapshot.NewStore(dir, snapshot.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := st.WriteFull(context.Background(), bytes.NewReader(mem), benchSize); err != nil {
		b.Fatal(err)
	}
	snap, err := snapshot.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { snap.Close() })
	return snap, mem
}

// BenchmarkMemcpyBaseline copies 4 KiB pages of snapshot bytes into memory
// that is already mapped: the floor for serving one page.
func BenchmarkMemcpyBaseline(b *testing.B) {
	_, mem := denseSnapshot(b)
	dst := make([]byte, benchSize)
	b.SetBytes(4096)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := (i * 4096) % benchSize
		copy(dst[off:off+4096], mem[off:off+4096])
	}
}

// BenchmarkMemcpyFreshPages copies the same bytes into freshly mapped
// anonymous memory, so the kernel allocates a page per 4 KiB as UFFDIO_COPY
// does.
func BenchmarkMemcpyFreshPages(b *testing.B) {
	_, mem := denseSnapshot(b)
	b.SetBytes(4096)
	b.ResetTimer()
	for i := 0; i < b.N; {
		b.StopTimer()
		dst, err := unix.Mmap(-1, 0, benchSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for off := 0; off < benchSize && i < b.N; off, i = off+4096, i+1 {
			copy(dst[off:off+4096], mem[off:off+4096])
		}
		b.StopTimer()
		unix.Munmap(dst)
		b.StartTimer()
	}
}

// BenchmarkFault4K: one guest-side touch of a missing page, served by the
// page server with a 4 KiB UFFDIO_COPY (handshake excluded).
func BenchmarkFault4K(b *testing.B) {
	snap, _ := denseSnapshot(b)
	b.SetBytes(4096)
	b.ResetTimer()
	for i := 0; i < b.N; {
		b.StopTimer()
		p, err := makePeer(0, benchSize)
		if err != nil {
			b.Skipf("userfaultfd unavailable: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		srv := startServer(b, ctx, Config{Snapshot: snap, NoRecord: true}, p)
		b.StartTimer()
		m := p.mems[0]
		for off := 0; off < benchSize && i < b.N; off, i = off+4096, i+1 {
			touch(m, off)
		}
		b.StopTimer()
		cancel()
		srv.wait(b)
		p.close()
		b.StartTimer()
	}
}

// BenchmarkPrefetch: time for prefetch to map a 64 MiB working set
// (handshake excluded), at several run sizes.
func BenchmarkPrefetch(b *testing.B) {
	snap, want := denseSnapshot(b)
	all := make([]uint32, benchSize/4096)
	for i := range all {
		all[i] = uint32(i)
	}
	for _, run := range []struct {
		name string
		size int
	}{{"4KiB", 4 << 10}, {"64KiB", 64 << 10}, {"2MiB", 2 << 20}} {
		b.Run(run.name, func(b *testing.B) {
			ws := b.TempDir() + "/ws"
			if err := SaveWorkingSet(ws, all); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(benchSize)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				p, err := makePeer(0, benchSize)
				if err != nil {
					b.Skipf("userfaultfd unavailable: %v", err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				cfg := Config{Snapshot: snap, WorkingSet: ws, NoRecord: true, Prefetch: true, PrefetchRun: run.size}
				b.StartTimer()
				srv := startServer(b, ctx, cfg, p)
				<-srv.sess.prefetchEnd
				b.StopTimer()
				if !srv.sess.Stats().PrefetchDone || !bytes.Equal(p.mems[0][:1<<20], want[:1<<20]) {
					b.Fatal("prefetch incomplete or wrong")
				}
				cancel()
				srv.wait(b)
				p.close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkMemcpyLarge copies the 64 MiB from the mapped generation file
// (prefetch's source) into fresh anonymous memory: prefetch's baseline.
func BenchmarkMemcpyLarge(b *testing.B) {
	snap, _ := denseSnapshot(b)
	f, _, _ := snap.Source(0)
	src, err := unix.Mmap(int(f.Fd()), 0, benchSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(src)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dst, err := unix.Mmap(-1, 0, benchSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		copy(dst, src)
		b.StopTimer()
		unix.Munmap(dst)
		b.StartTimer()
	}
}
