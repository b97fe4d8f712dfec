package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// cacheDir is where a backend keeps its variants.
func cacheDir(t testing.TB, b Backend) string {
	t.Helper()
	switch b := b.(type) {
	case *FileBackend:
		return b.cache.dir
	case *Qcow2Backend:
		return b.cache.dir
	case *DeviceMapper:
		return b.cache.dir
	}
	t.Fatalf("no cache in %T", b)
	return ""
}

// cached lists the files in a backend's cache dir.
func cached(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(dir, e.Name()))
	}
	slices.Sort(out)
	return out
}

// ofBase filters files to the variants of base's path (any version),
// computing the path key independently of the cache code.
func ofBase(files []string, base string) []string {
	abs, _ := filepath.Abs(base)
	sum := sha256.Sum256([]byte(abs))
	prefix := hex.EncodeToString(sum[:6]) + "-"
	var out []string
	for _, f := range files {
		if len(filepath.Base(f)) > len(prefix) && filepath.Base(f)[:len(prefix)] == prefix {
			out = append(out, f)
		}
	}
	return out
}

// backing is the variant a disk depends on ("" for standalone clones).
func backing(t testing.TB, disk Disk, size int64) string {
	t.Helper()
	switch {
	case disk.Format == "qcow2":
		return rawImage(t, disk, size) // from qemu-img info
	case filepath.Dir(disk.Path) == "/dev/mapper":
		t.Fatal("devicemapper: origin lookup not implemented in this test")
	}
	return ""
}

// TestPruneVariants builds variants of three bases, lets disks reference
// some, deletes one base (a template), replaces another (a new image
// version), prunes, and checks that exactly the unreferenced variants
// are gone and the referencing disks still read.
func TestPruneVariants(t *testing.T) {
	for _, bc := range backendCases()[:3] {
		t.Run(bc.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx := context.Background()
			mk := func(name string) string {
				d := filepath.Join(dir, name)
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
				return makeBase(t, d)
			}
			imgA, tplB, imgC := mk("a"), mk("b"), mk("c")
			b := bc.make(t, dir)
			cdir := cacheDir(t, b)
			p := b.(VariantPruner)
			create := func(id, base string, size int64) Disk {
				t.Helper()
				d, err := b.Create(ctx, id, base, size)
				if err != nil {
					t.Fatal(err)
				}
				return d
			}
			// a1 and b1 stay; a2, b2 and c1 are removed again.
			a1 := create("a1", imgA, 128*mb)
			create("a2", imgA, 256*mb)
			b1 := create("b1", tplB, 128*mb)
			create("b2", tplB, 256*mb)
			create("c1", imgC, 128*mb)
			for _, id := range []string{"a2", "b2", "c1"} {
				if err := b.Remove(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			refA, refB := backing(t, a1, 128*mb), backing(t, b1, 128*mb)
			all := cached(t, cdir)
			if len(ofBase(all, imgA)) == 0 || len(ofBase(all, tplB)) == 0 || len(ofBase(all, imgC)) == 0 {
				t.Fatalf("variants not built: %v", all)
			}
			want := func(files []string, keep ...string) []string {
				var out []string
				for _, f := range files {
					if slices.Contains(keep, f) {
						out = append(out, f)
					}
				}
				return out
			}
			without := func(files, drop []string) []string {
				var out []string
				for _, f := range files {
					if !slices.Contains(drop, f) {
						out = append(out, f)
					}
				}
				return out
			}

			// The template is deleted: its variants go, except one a disk
			// depends on (qcow2: b1's backing file).
			if err := os.Remove(tplB); err != nil {
				t.Fatal(err)
			}
			removed, err := p.DropVariants(ctx, tplB)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(removed)
			if w := without(ofBase(all, tplB), []string{refB}); !slices.Equal(removed, w) {
				t.Fatalf("DropVariants removed %v, want %v", removed, w)
			}
			if got, w := cached(t, cdir), without(all, removed); !slices.Equal(got, w) {
				t.Fatalf("after DropVariants: %v, want %v", got, w)
			}

			// Image A gets a new version (rebuild or EnsureImageSizes:
			// staged copy renamed over it); a leftover staging file and a
			// file the cache does not know are there too.
			next := imgA + ".next"
			if err := sparseCopy(imgA, next); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(next, imgA); err != nil {
				t.Fatal(err)
			}
			staging := filepath.Join(cdir, ".x.ext4.tmp-1")
			foreign := filepath.Join(cdir, "README")
			for _, f := range []string{staging, foreign} {
				if err := os.WriteFile(f, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			before := cached(t, cdir)
			removed, err = p.PruneVariants(ctx, []string{imgA, imgC})
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(removed)
			// Gone: old A's variants and B's, unless a disk depends on
			// them, and the staging leftover. Kept: C (current version
			// of a kept base), the referenced ones, the foreign file.
			wantRemoved := append(without(append(ofBase(before, imgA), ofBase(before, tplB)...), []string{refA, refB}), staging)
			slices.Sort(wantRemoved)
			if !slices.Equal(removed, wantRemoved) {
				t.Fatalf("PruneVariants removed %v, want %v", removed, wantRemoved)
			}
			if got, w := cached(t, cdir), without(before, wantRemoved); !slices.Equal(got, w) {
				t.Fatalf("after PruneVariants: %v, want %v", got, w)
			}
			if len(want(cached(t, cdir), ofBase(before, imgC)...)) != len(ofBase(before, imgC)) {
				t.Fatal("variants of a kept base were removed")
			}
			for id, d := range map[string]Disk{"a1": a1, "b1": b1} {
				if got := catFile(t, rawImage(t, d, 128*mb), "/hello.txt"); got != "hello from base\n" {
					t.Fatalf("%s after prune: /hello.txt = %q", id, got)
				}
			}

			// Once the disks are gone, so are their variants.
			for _, id := range []string{"a1", "b1"} {
				if err := b.Remove(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := p.PruneVariants(ctx, []string{imgA, imgC}); err != nil {
				t.Fatal(err)
			}
			if got, w := cached(t, cdir), append(ofBase(before, imgC), foreign); !slices.Equal(got, sorted(w)) {
				t.Fatalf("after the last prune: %v, want %v", got, w)
			}
		})
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
