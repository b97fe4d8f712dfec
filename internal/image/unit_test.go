package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLZ4LegacyMatchesTool checks the Go LZ4 legacy decoder against the
// reference lz4 tool on data with long matches, overlaps and literals.
func TestLZ4LegacyMatchesTool(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("lz4"); err != nil {
		t.Skip("lz4 tool not found: install lz4 (scripts/deps.sh)")
	}
	var in bytes.Buffer
	for i := 0; i < 200000; i++ {
		switch {
		case i%7 == 0:
			in.WriteString("hearth microvm ")
		case i%13 == 0:
			in.Write(bytes.Repeat([]byte{byte(i)}, i%300))
		default:
			in.WriteByte(byte(i * 2654435761 >> 24))
		}
	}
	cmd := exec.Command("lz4", "-l", "-9", "-c")
	cmd.Stdin = bytes.NewReader(in.Bytes())
	comp, err := cmd.Output()
	if err != nil {
		t.Fatalf("lz4 -l: %v", err)
	}
	out, err := unlz4Legacy(comp, in.Len())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, in.Bytes()) {
		t.Fatalf("decoded %d bytes differ from the %d-byte input", len(out), in.Len())
	}
}

func TestLZ4RejectsCorrupt(t *testing.T) {
	t.Parallel()
	for name, block := range map[string][]byte{
		"offset beyond output": {0x10, 'a', 0x10, 0x00},
		"zero offset":          {0x10, 'a', 0x00, 0x00},
		"literals past end":    {0x50, 'a'},
	} {
		if _, err := lz4Block(nil, block); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestExtractVmlinuxSynthetic wraps a gzip payload in a minimal bzImage
// header and checks the header parsing, size check and PVH check.
func TestExtractVmlinuxSynthetic(t *testing.T) {
	t.Parallel()
	elfData, err := os.ReadFile("/proc/self/exe") // an ELF without a PVH note
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	cmd := exec.Command("gzip", "-c", "-1")
	cmd.Stdin = bytes.NewReader(elfData)
	cmd.Stdout = &gz
	if err := cmd.Run(); err != nil {
		t.Skipf("gzip: %v", err)
	}
	payload := append(gz.Bytes(), binary.LittleEndian.AppendUint32(nil, uint32(len(elfData)))...)
	const setupSects = 3
	bz := make([]byte, (setupSects+1)*512+64)
	bz[0x1f1] = setupSects
	copy(bz[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(bz[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(bz[0x248:], 64)
	binary.LittleEndian.PutUint32(bz[0x24c:], uint32(len(payload)))
	bz = append(bz, payload...)
	_, err = ExtractVmlinux(context.Background(), bz)
	if err == nil || !strings.Contains(err.Error(), "PVH") {
		t.Fatalf("err = %v, want the missing-PVH-note error (decompression itself must succeed)", err)
	}
	bad := bytes.Clone(bz)
	binary.LittleEndian.PutUint32(bad[len(bad)-4:], uint32(len(elfData)+1))
	if _, err := ExtractVmlinux(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "header says") {
		t.Fatalf("size mismatch not detected: %v", err)
	}
	if _, err := ExtractVmlinux(context.Background(), elfData); err == nil {
		t.Fatal("a non-bzImage was accepted")
	}
}

// TestInitramfsCpio checks the newc archive with the system cpio.
func TestInitramfsCpio(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not found: install cpio (scripts/deps.sh)")
	}
	dir := t.TempDir()
	arch := filepath.Join(dir, "initramfs.cpio")
	mods := []namedBlob{{"virtio.ko", []byte("mod-a")}, {"virtio_blk.ko", []byte("module-b!")}}
	if err := writeInitramfs(arch, []byte("#!init"), mods); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "x")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(arch)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("cpio", "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir = out
	cmd.Stdin = f
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v: %s", err, b)
	}
	for path, want := range map[string]string{
		"init":                             "#!init",
		"lib/modules/hearth/virtio_blk.ko": "module-b!",
		"lib/modules/hearth/modules.order": "virtio.ko\nvirtio_blk.ko\n",
		".hearth-initramfs":                "",
	} {
		got, err := os.ReadFile(filepath.Join(out, path))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", path, got, err, want)
		}
	}
	fi, err := os.Stat(filepath.Join(out, "init"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("init mode = %v, %v", fi, err)
	}
	if fi, err := os.Lstat(filepath.Join(out, "newroot")); err != nil || !fi.IsDir() {
		t.Errorf("newroot: %v %v", fi, err)
	}
}

func TestAptMirror(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file, content, uri, suite string
	}{
		{
			name: "deb822",
			file: "etc/apt/sources.list.d/debian.sources",
			content: "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n" +
				"Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n",
			uri: "http://mirror.example/debian", suite: "bookworm",
		},
		{
			name: "deb822 security first",
			file: "etc/apt/sources.list.d/debian.sources",
			content: "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n" +
				"Types: deb deb-src\nURIs: http://mirror.example/debian\nSuites: trixie\nComponents: main contrib\n",
			uri: "http://mirror.example/debian", suite: "trixie",
		},
		{
			name:    "one-line with options",
			file:    "etc/apt/sources.list",
			content: "# deb http://old/ bookworm main\ndeb-src http://src/ bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n",
			uri:     "http://mirror.example/debian", suite: "bookworm",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			p := filepath.Join(root, tt.file)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			uri, suite, err := aptMirror(root)
			if err != nil || uri != tt.uri || suite != tt.suite {
				t.Fatalf("aptMirror = %q %q %v; want %q %q", uri, suite, err, tt.uri, tt.suite)
			}
		})
	}
	if _, _, err := aptMirror(t.TempDir()); err == nil {
		t.Fatal("no sources: want an error")
	}
}

// TestInstallGuest installs into a fake merged-/usr tree and checks the
// files, the user, idempotency, and that an absolute symlink in the tree
// cannot redirect a write to the host.
func TestInstallGuest(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown to uid 1000)")
	}
	t.Parallel()
	tree := t.TempDir()
	outside := t.TempDir()
	for _, d := range []string{"usr/sbin", "usr/bin", "etc/skel"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.Symlink("usr/sbin", filepath.Join(tree, "sbin")))
	must(t, os.WriteFile(filepath.Join(tree, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/bash\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(tree, "etc/group"), []byte("root:x:0:\nsudo:x:27:\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(tree, "etc/skel/.bashrc"), []byte("# rc\n"), 0o644))
	// A hostile absolute link: must not be followed out of the tree.
	must(t, os.Symlink(outside, filepath.Join(tree, "usr/bin/envd")))
	bins := guestBinaries{init: []byte("INIT"), envd: []byte("ENVD")}
	for i := 0; i < 2; i++ {
		err := installGuest(tree, bins, true)
		if i == 0 && err == nil {
			t.Fatal("write through an escaping symlink succeeded")
		}
		must(t, os.Remove(filepath.Join(tree, "usr/bin/envd")))
		must(t, installGuest(tree, bins, true))
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("wrote outside the tree: %v", entries)
	}
	check := func(path, want string) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(tree, path))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", path, got, err, want)
		}
	}
	check("usr/sbin/init", "INIT")
	check("usr/bin/envd", "ENVD")
	check("etc/passwd", "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n")
	check("etc/group", "root:x:0:\nsudo:x:27:user\nuser:x:1000:\n")
	check("etc/sudoers.d/user", "user ALL=(ALL:ALL) NOPASSWD: ALL\n")
	check("home/user/.bashrc", "# rc\n")
	if uid := statUID(t, filepath.Join(tree, "home/user/.bashrc")); uid != guestUID {
		t.Errorf(".bashrc owner uid %d, want %d", uid, guestUID)
	}
	if uid := statUID(t, filepath.Join(tree, "home/user")); uid != guestUID {
		t.Errorf("home owner uid %d, want %d", uid, guestUID)
	}
}

func TestFitMB(t *testing.T) {
	t.Parallel()
	if got := fitMB(200 << 20); got != 250+32 {
		t.Fatalf("fitMB(200 MB) = %d", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
