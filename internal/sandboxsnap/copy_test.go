package sandboxsnap

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/snapshot"
)

// Materialize rebuilds memory byte for byte from a chain with zero blocks
// (holes in the RAM file) and blocks zeroed after the first generation.
func TestMaterializeChain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const bs, n = 4096, 512
	rng := rand.New(rand.NewSource(1))
	mem := make([]byte, bs*n)
	for i := 0; i < n; i++ {
		if i%3 != 0 {
			rng.Read(mem[i*bs : (i+1)*bs])
		}
	}
	dir := t.TempDir()
	st, err := snapshot.NewStore(filepath.Join(dir, "mem"), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.WriteFull(ctx, bytes.NewReader(mem), int64(len(mem))); err != nil {
		t.Fatal(err)
	}
	dirty := snapshot.NewBitmap(n)
	for i := 1; i < n; i += 7 {
		dirty.Set(i)
		if i%2 == 0 {
			clear(mem[i*bs : (i+1)*bs]) // zeroed after the snapshot
		} else {
			rng.Read(mem[i*bs : (i+1)*bs])
		}
	}
	if err := st.WriteDiff(ctx, bytes.NewReader(mem), dirty); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Open(st.Dir())
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	for _, target := range []string{t.TempDir(), "/dev/shm"} {
		ram := filepath.Join(target, "sandboxsnap-test-"+filepath.Base(dir)+".ram")
		ms, err := Materialize(ctx, snap, ram)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(ram)
		os.Remove(ram)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, mem) {
			t.Fatalf("materialized memory in %s (mode %s) differs", target, ms.Mode)
		}
		t.Logf("%s: %d bytes placed with %s", target, ms.Bytes, ms.Mode)
	}
}
