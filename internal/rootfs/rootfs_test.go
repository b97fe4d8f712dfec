package rootfs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

const mb = int64(1) << 20

func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("rootfs: needs %s: install e2fsprogs, xfsprogs and qemu-utils", tool)
		}
	}
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("rootfs: needs root for loop devices and mounts; run as root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("rootfs: needs /dev/loop-control: %v; modprobe loop", err)
	}
}

// makeBase builds a 64 MB ext4 image (4 KiB blocks) holding hello.txt and
// a 1 MiB file, the way the image builder does (mkfs.ext4 -d).
func makeBase(t testing.TB, dir string) string {
	t.Helper()
	needTools(t, "mkfs.ext4", "e2fsck", "resize2fs", "dumpe2fs", "debugfs")
	content := filepath.Join(dir, "content")
	if err := os.MkdirAll(filepath.Join(content, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(content, "hello.txt"), []byte("hello from base\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, mb)
	for i := range big {
		big[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(content, "etc", "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "base.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", content, img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

// dumpe2fsSize is the filesystem size as dumpe2fs -h reports it.
func dumpe2fsSize(t testing.TB, img string) int64 {
	t.Helper()
	out, err := exec.Command("dumpe2fs", "-h", img).Output()
	if err != nil {
		t.Fatalf("dumpe2fs %s: %v", img, err)
	}
	field := func(name string) int64 {
		m := regexp.MustCompile(`(?m)^` + name + `:\s+(\d+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("dumpe2fs %s: no %s", img, name)
		}
		v, _ := strconv.ParseInt(string(m[1]), 10, 64)
		return v
	}
	return field("Block count") * field("Block size")
}

func catFile(t testing.TB, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s in %s: %v", path, img, err)
	}
	return string(out)
}

func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// rawImage returns an ext4 image of disk that dumpe2fs/debugfs can read:
// the disk itself, or for qcow2 its backing variant after checking the
// overlay's virtual size.
func rawImage(t testing.TB, disk Disk, size int64) string {
	t.Helper()
	if disk.Format != "qcow2" {
		return disk.Path
	}
	out, err := exec.Command("qemu-img", "info", "--output=json", "-U", disk.Path).Output()
	if err != nil {
		t.Fatalf("qemu-img info: %v", err)
	}
	var info struct {
		VirtualSize     int64  `json:"virtual-size"`
		BackingFilename string `json:"backing-filename"`
		BackingFormat   string `json:"backing-filename-format"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	if info.VirtualSize != size || info.BackingFormat != "raw" {
		t.Fatalf("qcow2 %s: virtual size %d (want %d), backing format %q", disk.Path, info.VirtualSize, size, info.BackingFormat)
	}
	return info.BackingFilename
}

type backendCase struct {
	name string
	make func(t testing.TB, dir string) Backend
}

func backendCases() []backendCase {
	return []backendCase{
		{"copy", func(t testing.TB, dir string) Backend { return NewCopy(filepath.Join(dir, "rootfs"), nil) }},
		{"reflink-pool", func(t testing.TB, dir string) Backend {
			needRoot(t)
			needTools(t, "mkfs.xfs")
			pool, err := OpenPool(context.Background(), dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := pool.Close(); err != nil {
					t.Error(err)
				}
			})
			b, err := NewReflink(pool.Mount, nil)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"qcow2", func(t testing.TB, dir string) Backend {
			needTools(t, "qemu-img")
			return NewQcow2(filepath.Join(dir, "rootfs"), nil)
		}},
		{"devicemapper", func(t testing.TB, dir string) Backend {
			needRoot(t)
			if err := DMUsable(context.Background()); err != nil {
				t.Skipf("rootfs: %v", err)
			}
			b, err := NewDeviceMapper(context.Background(), filepath.Join(dir, "rootfs"), nil)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
	}
}

func TestBackends(t *testing.T) {
	for _, bc := range backendCases() {
		t.Run(bc.name, func(t *testing.T) {
			dir := t.TempDir()
			base := makeBase(t, dir)
			b := bc.make(t, dir)
			ctx := t.Context()
			for _, sizeMB := range []int64{20480, 10240} {
				id := fmt.Sprintf("sb%d", sizeMB)
				size := sizeMB * mb
				disk, err := b.Create(ctx, id, base, size)
				if err != nil {
					t.Fatal(err)
				}
				img := rawImage(t, disk, size)
				if got := dumpe2fsSize(t, img); got != size {
					t.Fatalf("%s: filesystem is %d bytes, want %d", id, got, size)
				}
				if disk.Format == "raw" {
					if a := allocated(t, disk.Path); a > 128*mb && !strings.HasPrefix(disk.Path, "/dev/") {
						t.Fatalf("%s: %d bytes allocated for a %d MB disk; want a sparse file", id, a, sizeMB)
					}
				}
				if got := catFile(t, img, "/hello.txt"); got != "hello from base\n" {
					t.Fatalf("%s: /hello.txt = %q", id, got)
				}
				if got, err := b.Lookup(ctx, id); err != nil || got != disk {
					t.Fatalf("Lookup = %+v, %v; want %+v", got, err, disk)
				}
				if _, err := b.Create(ctx, id, base, size); err == nil {
					t.Fatalf("second Create of %s succeeded", id)
				}
			}
			if got := catFile(t, base, "/hello.txt"); got != "hello from base\n" {
				t.Fatalf("base changed: %q", got)
			}
			if got := dumpe2fsSize(t, base); got != 64*mb {
				t.Fatalf("base resized to %d", got)
			}
			for _, id := range []string{"sb20480", "sb10240"} {
				disk, _ := b.Lookup(ctx, id)
				if err := b.Remove(ctx, id); err != nil {
					t.Fatal(err)
				}
				if err := b.Remove(ctx, id); err != nil {
					t.Fatalf("second Remove: %v", err)
				}
				if _, err := os.Stat(disk.Path); !os.IsNotExist(err) {
					t.Fatalf("Remove left %s: %v", disk.Path, err)
				}
				if _, err := b.Lookup(ctx, id); err == nil {
					t.Fatalf("Lookup after Remove succeeded")
				}
			}
		})
	}
}

func TestCreateRejects(t *testing.T) {
	t.Parallel()
	b := NewCopy(t.TempDir(), nil)
	for _, c := range []struct {
		id   string
		size int64
	}{{"../x", 4096}, {"Upper", 4096}, {"ok", 0}, {"ok", 4097}} {
		if _, err := b.Create(t.Context(), c.id, "/nonexistent", c.size); err == nil {
			t.Errorf("Create(%q, %d) succeeded", c.id, c.size)
		}
	}
}

// writeFile puts content at path inside an unmounted raw ext4 image.
func writeFile(t testing.TB, img, path, content string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("debugfs", "-w", "-R", "write "+src+" "+path, img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs write: %v: %s", err, out)
	}
}

func TestFlattenRootfs(t *testing.T) {
	for _, bc := range backendCases()[:3] {
		t.Run(bc.name, func(t *testing.T) {
			dir := t.TempDir()
			base := makeBase(t, dir)
			b := bc.make(t, dir)
			ctx := t.Context()
			disk, err := b.Create(ctx, "flat", base, 20480*mb)
			if err != nil {
				t.Fatal(err)
			}
			if disk.Format == "qcow2" {
				// The sandbox writes through QEMU; here: write into a raw
				// copy and make that the qcow2's data.
				raw := filepath.Join(dir, "changed.raw")
				if _, err := run(ctx, "qemu-img", "convert", "-O", "raw", disk.Path, raw); err != nil {
					t.Fatal(err)
				}
				writeFile(t, raw, "/sandbox.txt", "written in the sandbox\n")
				os.Remove(disk.Path)
				if _, err := run(ctx, "qemu-img", "convert", "-O", "qcow2", raw, disk.Path); err != nil {
					t.Fatal(err)
				}
			} else {
				writeFile(t, disk.Path, "/sandbox.txt", "written in the sandbox\n")
			}
			dst := filepath.Join(dir, "templates", "t1", "rootfs.ext4")
			if err := FlattenRootfs(ctx, disk, dst); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(dst)
			if err != nil {
				t.Fatal(err)
			}
			if fs := dumpe2fsSize(t, dst); fs != st.Size() || fs >= 128*mb {
				// resize2fs -M keeps some per-group overhead of the 20 GB
				// filesystem: ~70 MB here, from a 64 MB base.
				t.Fatalf("flattened: filesystem %d bytes, file %d; want equal and under 128 MB", fs, st.Size())
			}
			if got := catFile(t, dst, "/sandbox.txt"); got != "written in the sandbox\n" {
				t.Fatalf("flattened /sandbox.txt = %q", got)
			}
			if got := catFile(t, dst, "/hello.txt"); got != "hello from base\n" {
				t.Fatalf("flattened /hello.txt = %q", got)
			}
			leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".*"))
			if len(leftovers) != 0 {
				t.Fatalf("staging files left: %v", leftovers)
			}
			if err := b.Remove(ctx, "flat"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestEnsureImageSizes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := makeBase(t, dir)
	images := filepath.Join(dir, "images")
	small := filepath.Join(images, "tiny", "rootfs.ext4")
	large := filepath.Join(images, "huge", "rootfs.ext4")
	for _, p := range []string{small, large} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := sparseCopy(base, p); err != nil {
			t.Fatal(err)
		}
	}
	// "huge" is already above the default and must not shrink.
	if err := resizeImage(t.Context(), large, 30*1024*mb); err != nil {
		t.Fatal(err)
	}
	const def = 20480 * mb
	if err := EnsureImageSizes(t.Context(), images, def); err != nil {
		t.Fatal(err)
	}
	if got := dumpe2fsSize(t, small); got != def {
		t.Fatalf("tiny: %d bytes, want %d", got, def)
	}
	if got := dumpe2fsSize(t, large); got != 30*1024*mb {
		t.Fatalf("huge changed to %d", got)
	}
	if a := allocated(t, small); a > 128*mb {
		t.Fatalf("grown image allocates %d bytes; want sparse", a)
	}
	if got := catFile(t, small, "/hello.txt"); got != "hello from base\n" {
		t.Fatalf("content after grow: %q", got)
	}
	before, _ := os.Stat(small)
	if err := EnsureImageSizes(t.Context(), images, def); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(small)
	if !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Fatal("second EnsureImageSizes rewrote an image of the right size")
	}
}

func TestResizeShrinkAndGrow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := makeBase(t, dir)
	for _, size := range []int64{1024 * mb, 48 * mb, 96 * mb} {
		if err := resizeImage(t.Context(), img, size); err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(img)
		if got := dumpe2fsSize(t, img); got != size || st.Size() != size {
			t.Fatalf("resize to %d: filesystem %d, file %d", size, got, st.Size())
		}
	}
	if err := resizeImage(t.Context(), img, 96*mb+1024); err == nil {
		t.Fatal("resize to a size that is not a block multiple succeeded")
	}
	// A tail too small for a block group's metadata is left out of the
	// filesystem; the file still has the requested size.
	if err := resizeImage(t.Context(), img, 10241*mb); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(img)
	if got := dumpe2fsSize(t, img); st.Size() != 10241*mb || got > 10241*mb || got < 10241*mb-128*mb {
		t.Fatalf("resize to 10241 MB: filesystem %d, file %d", got, st.Size())
	}
}

// CopyFile (reflink where possible, else sparseCopy) keeps bytes and holes.
func TestCopyFileKeepsHoles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 * mb)
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("tail"), 64*mb-4)
	f.WriteAt([]byte("middle"), 32*mb)
	f.Close()
	dst := filepath.Join(dir, "dst")
	if err := CopyFile(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !slices.Equal(a, b) {
		t.Fatal("copy differs")
	}
	if got := allocated(t, dst); got > 1*mb {
		t.Fatalf("copy allocates %d bytes; want holes kept", got)
	}
}

func TestLoopAttachDetachAndCleanup(t *testing.T) {
	needRoot(t)
	dataDir := t.TempDir()
	ctx := t.Context()
	files := map[string]string{}
	for _, name := range []string{"stale.img", "live1.cow", "dead.cow"} {
		p := filepath.Join(dataDir, "rootfs", "cow", name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Truncate(p, 16*mb)
		dev, f, err := attachLoop(p, name == "stale.img", false)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		files[p] = dev
		t.Cleanup(func() { detachLoop(dev) })
	}
	attached := func() map[string]bool {
		loops, err := listLoops()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, l := range loops {
			if files[l.Backing] == l.Dev {
				m[filepath.Base(l.Backing)] = true
			}
		}
		return m
	}
	if got := attached(); len(got) != 3 {
		t.Fatalf("attached = %v", got)
	}
	if err := CleanupStale(ctx, dataDir, map[string]bool{"live1": true}); err != nil {
		t.Fatal(err)
	}
	if got := attached(); len(got) != 1 || !got["live1.cow"] {
		t.Fatalf("after CleanupStale attached = %v, want only live1.cow", got)
	}
	// Loop devices of other directories are never touched.
	if err := CleanupStale(ctx, t.TempDir(), nil); err != nil {
		t.Fatal(err)
	}
	if got := attached(); !got["live1.cow"] {
		t.Fatal("CleanupStale of another dir detached live1.cow")
	}
}

func TestPoolReopen(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.xfs")
	dir := t.TempDir()
	ctx := t.Context()
	p, err := OpenPool(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.Mount, "marker"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Reopen while mounted (agent restart): same mount.
	if _, err := OpenPool(ctx, dir, nil); err != nil {
		t.Fatal(err)
	}
	if err := canReflink(p.Mount); err != nil {
		t.Fatalf("pool cannot reflink: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopen after unmount (host reboot): the data is still there.
	p, err = OpenPool(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if b, err := os.ReadFile(filepath.Join(p.Mount, "marker")); err != nil || string(b) != "x" {
		t.Fatalf("marker after remount: %q, %v", b, err)
	}
	loops, _ := listLoops()
	n := 0
	for _, l := range loops {
		if l.Backing == p.Image {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d loop devices for the pool, want 1", n)
	}
}

func TestDMCommands(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		got  []string
		want []string
	}{
		{"create", dmCreateArgs("hth-sb1", snapshotTable(41943040, "/dev/loop3", "/dev/loop4")),
			[]string{"create", "hth-sb1", "--table", "0 41943040 snapshot /dev/loop3 /dev/loop4 P 8"}},
		{"remove", dmRemoveArgs("hth-sb1"), []string{"remove", "--retry", "hth-sb1"}},
		{"qcow2", qcow2CreateArgs("/d/bases/v.ext4", "/d/disks/x.qcow2", 20480*mb),
			[]string{"create", "-q", "-f", "qcow2", "-b", "/d/bases/v.ext4", "-F", "raw", "/d/disks/x.qcow2", "21474836480"}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestSelect(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.xfs")
	dir := t.TempDir()
	b, err := Select(t.Context(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := mountSource(filepath.Join(dir, poolMountName)); err == nil && p != "" {
		t.Cleanup(func() { (&Pool{Mount: filepath.Join(dir, poolMountName)}).Close() })
	}
	want := "reflink"
	if DMUsable(t.Context()) == nil {
		want = "devicemapper"
	}
	if b.Name() != want {
		t.Fatalf("Select = %s, want %s", b.Name(), want)
	}
}

func benchCreate(b *testing.B, bc backendCase) {
	dir := b.TempDir()
	base := makeBase(b, dir)
	be := bc.make(b, dir)
	ctx := b.Context()
	if _, err := be.Create(ctx, "warm", base, 20480*mb); err != nil { // builds the variant
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("b%d", i)
		i++
		if _, err := be.Create(ctx, id, base, 20480*mb); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		be.Remove(ctx, id)
		b.StartTimer()
	}
}

func BenchmarkCreate(b *testing.B) {
	for _, bc := range backendCases() {
		b.Run(bc.name, func(b *testing.B) { benchCreate(b, bc) })
	}
}

// BenchmarkVariantBuild measures the first Create of a (base, size): the
// clone plus e2fsck and resize2fs that later Creates of that size skip.
func BenchmarkVariantBuild(b *testing.B) {
	for _, bc := range backendCases()[:2] {
		b.Run(bc.name, func(b *testing.B) {
			dir := b.TempDir()
			base := makeBase(b, dir)
			be := bc.make(b, dir)
			i := 0
			for b.Loop() {
				i++
				id := fmt.Sprintf("v%d", i)
				if _, err := be.Create(b.Context(), id, base, (10240+int64(i))*mb); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				be.Remove(b.Context(), id)
				b.StartTimer()
			}
		})
	}
}
