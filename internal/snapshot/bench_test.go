package snapshot

import (
	"bytes"
	"context"
	"math/rand"
	"testing"
)

const benchMem = 64 << 20

func benchMemory() []byte {
	mem := make([]byte, benchMem)
	rand.New(rand.NewSource(1)).Read(mem)
	// A quarter of guest memory untouched (zero), as in a fresh guest.
	for i := 0; i < benchMem/4096; i += 4 {
		clear(mem[i*4096 : (i+1)*4096])
	}
	return mem
}

// BenchmarkWriteFull: MB/s of guest memory snapshotted (fsyncs included).
func BenchmarkWriteFull(b *testing.B) {
	mem := benchMemory()
	b.SetBytes(benchMem)
	for range b.N {
		st, err := NewStore(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := st.WriteFull(context.Background(), bytes.NewReader(mem), benchMem); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteDiff: a pause with 10% of blocks dirty; MB/s of guest
// memory covered.
func BenchmarkWriteDiff(b *testing.B) {
	mem := benchMemory()
	st, err := NewStore(b.TempDir(), Options{MaxGenerations: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := st.WriteFull(ctx, bytes.NewReader(mem), benchMem); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewSource(2))
	b.SetBytes(benchMem)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		d := NewBitmap(benchMem / 4096)
		for range benchMem / 4096 / 10 {
			i := rng.Intn(benchMem / 4096)
			mem[i*4096] ^= 0xFF
			d.Set(i)
		}
		b.StartTimer()
		if err := st.WriteDiff(ctx, bytes.NewReader(mem), d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDiffAgainst: hashing all of guest memory to find the dirty set.
func BenchmarkDiffAgainst(b *testing.B) {
	mem := benchMemory()
	dir := b.TempDir()
	st, err := NewStore(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := st.WriteFull(context.Background(), bytes.NewReader(mem), benchMem); err != nil {
		b.Fatal(err)
	}
	snap, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer snap.Close()
	b.SetBytes(benchMem)
	b.ResetTimer()
	for range b.N {
		if _, err := snap.DiffAgainst(context.Background(), bytes.NewReader(mem)); err != nil {
			b.Fatal(err)
		}
	}
}
