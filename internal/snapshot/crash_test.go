package snapshot

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"os"
	"slices"
	"strings"
	"testing"
)

// steps are the hook points of a write, in order.
var steps = []string{
	"stage", "create-gen", "write-blocks", "sync-gen", "write-header", "sync-header",
	"rename-gen", "rename-header", "sync-dir", "write-current", "sync-current",
	"rename-current", "sync-dir-after-swap",
}

var errInjected = errors.New("injected failure")

type crash struct{}

func readAll(t *testing.T, dir string) []byte {
	t.Helper()
	snap, err := Open(dir)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer snap.Close()
	b := make([]byte, snap.Size())
	if _, err := snap.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// setupChain commits a full snapshot and one diff and returns the memory
// they describe and a further-modified memory plus its dirty set.
func setupChain(t *testing.T, dir string) (before, after []byte, dirty *Bitmap) {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewSource(7))
	st, err := NewStore(dir, Options{MaxGenerations: 2})
	if err != nil {
		t.Fatal(err)
	}
	mem := make([]byte, 600*4096) // more than one read chunk, so write-blocks fires mid-file
	rng.Read(mem[:300*4096])
	if err := st.WriteFull(ctx, bytes.NewReader(mem), int64(len(mem))); err != nil {
		t.Fatal(err)
	}
	d := NewBitmap(600)
	rng.Read(mem[400*4096 : 401*4096])
	d.Set(400)
	if err := st.WriteDiff(ctx, bytes.NewReader(mem), d); err != nil {
		t.Fatal(err)
	}
	before = bytes.Clone(mem)
	dirty = NewBitmap(600)
	for i := 0; i < 600; i += 3 {
		if i%2 == 0 {
			clear(mem[i*4096 : (i+1)*4096])
		} else {
			rng.Read(mem[i*4096 : (i+1)*4096])
		}
		dirty.Set(i)
	}
	return before, mem, dirty
}

func TestCrashAtomicity(t *testing.T) {
	t.Parallel()
	for _, step := range steps {
		for _, mode := range []string{"error", "crash"} {
			for _, op := range []string{"diff", "merge", "full"} {
				t.Run(step+"/"+mode+"/"+op, func(t *testing.T) {
					t.Parallel()
					dir := t.TempDir()
					before, after, dirty := setupChain(t, dir)
					parentFiles := listDir(t, dir)
					st, err := NewStore(dir, Options{MaxGenerations: 2})
					if err != nil {
						t.Fatal(err)
					}
					hits := 0
					st.hook = func(s string) error {
						if s != step {
							return nil
						}
						hits++
						if step == "write-blocks" && hits < 2 {
							return nil // fail mid-file, after the first chunk
						}
						if mode == "crash" {
							panic(crash{})
						}
						return errInjected
					}
					run := func() (err error) {
						defer func() {
							if r := recover(); r != nil {
								if _, ok := r.(crash); !ok {
									panic(r)
								}
								err = errInjected
							}
						}()
						ctx := context.Background()
						switch op {
						case "diff":
							return st.WriteDiff(ctx, bytes.NewReader(after), dirty)
						case "merge":
							return st.Merge(ctx)
						default:
							return st.WriteFull(ctx, bytes.NewReader(after), int64(len(after)))
						}
					}
					err = run()
					if hits == 0 {
						// Some ops legitimately skip a step (e.g. nothing to rename).
						if err != nil {
							t.Fatalf("write failed without injection: %v", err)
						}
						return
					}
					if !errors.Is(err, errInjected) {
						t.Fatalf("write returned %v, want the injected failure", err)
					}
					// The previous snapshot is intact: same bytes, and none of its
					// files was removed. A crash after the CURRENT rename (the
					// commit point) but before the directory fsync may land on
					// either side: the caller never got an answer.
					got := readAll(t, dir)
					ambiguous := mode == "crash" && step == "sync-dir-after-swap"
					if !bytes.Equal(got, before) && !(ambiguous && bytes.Equal(got, after) || ambiguous && op == "merge") {
						t.Fatal("previous snapshot changed after a failed write")
					}
					now := listDir(t, dir)
					for _, f := range parentFiles {
						if !slices.Contains(now, f) {
							t.Fatalf("failed write removed %s (now %v)", f, now)
						}
					}
					if mode == "error" {
						for _, f := range now {
							if strings.HasPrefix(f, stagingPrefix) {
								t.Fatalf("staging dir %s left after a returned error", f)
							}
						}
					}
					// A "restarted" store completes the same write and cleans up.
					st2, err := NewStore(dir, Options{MaxGenerations: 2})
					if err != nil {
						t.Fatal(err)
					}
					if err := st2.WriteFull(context.Background(), bytes.NewReader(after), int64(len(after))); err != nil {
						t.Fatalf("write after failure: %v", err)
					}
					if !bytes.Equal(readAll(t, dir), after) {
						t.Fatal("snapshot after recovery has wrong bytes")
					}
					for _, f := range listDir(t, dir) {
						if strings.HasPrefix(f, stagingPrefix) || f == currentTmp {
							t.Fatalf("leftover %s after a successful write", f)
						}
					}
				})
			}
		}
	}
}

// cancelReader cancels the write's context after a number of reads.
type cancelReader struct {
	r      io.ReaderAt
	after  int
	cancel context.CancelFunc
}

func (c *cancelReader) ReadAt(p []byte, off int64) (int, error) {
	if c.after--; c.after < 0 {
		c.cancel()
	}
	return c.r.ReadAt(p, off)
}

func TestCancelMidWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	before, after, dirty := setupChain(t, dir)
	st, err := NewStore(dir, Options{MaxGenerations: 8})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	all := NewBitmap(600)
	all.SetRange(0, 600)
	dirty.Or(all)
	err = st.WriteDiff(ctx, &cancelReader{r: bytes.NewReader(after), after: 1, cancel: cancel}, dirty)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteDiff = %v, want context.Canceled", err)
	}
	if !bytes.Equal(readAll(t, dir), before) {
		t.Fatal("cancelled write changed the snapshot")
	}
}

// A short read of guest memory fails the write instead of recording garbage.
func TestShortMemoryRead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := NewStore(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = st.WriteFull(context.Background(), bytes.NewReader(make([]byte, 4096)), 8192)
	if err == nil {
		t.Fatal("WriteFull with a short reader succeeded")
	}
	if _, err := Open(dir); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("Open after failed first write = %v, want ErrNoSnapshot", err)
	}
}

func TestMergeCollectsOldGenerations(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := NewStore(dir, Options{MaxGenerations: 3})
	if err != nil {
		t.Fatal(err)
	}
	mem := bytes.Repeat([]byte{1}, 8*4096)
	if err := st.WriteFull(ctx, bytes.NewReader(mem), int64(len(mem))); err != nil {
		t.Fatal(err)
	}
	for k := range 5 {
		mem[k*4096] = byte(10 + k)
		d := NewBitmap(8)
		d.Set(k)
		if err := st.WriteDiff(ctx, bytes.NewReader(mem), d); err != nil {
			t.Fatal(err)
		}
		h, err := st.Current()
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Gens) > 3 {
			t.Fatalf("after diff %d: %d generations, bound 3", k, len(h.Gens))
		}
	}
	if err := st.Merge(ctx); err != nil {
		t.Fatal(err)
	}
	var gens []string
	for _, f := range listDir(t, dir) {
		if strings.HasPrefix(f, genPrefix) {
			gens = append(gens, f)
		}
	}
	if len(gens) != 1 {
		t.Fatalf("after merge the directory holds generations %v, want exactly one", gens)
	}
	if !bytes.Equal(readAll(t, dir), mem) {
		t.Fatal("merged snapshot differs")
	}
}
