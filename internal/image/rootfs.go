package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BaseIncludes are the packages debootstrap adds to Debian minbase for the
// base image. sudo lets the unprivileged "user" (E2B's default user)
// install things, as in E2B templates.
var BaseIncludes = []string{"python3", "ca-certificates", "iproute2", "bash", "coreutils", "sudo"}

// TinySizeMB is the size of the tiny image's filesystem.
const TinySizeMB = 64

// Guest user, as in E2B templates.
const (
	guestUser = "user"
	guestUID  = 1000
)

// buildRootfs builds images/<name>/rootfs.ext4 unless its manifest says
// it is current.
func (b *builder) buildRootfs(ctx context.Context, name string, k kernelResult) error {
	var (
		hash     string
		packages map[string]string
		makeTree func(ctx context.Context) (tree string, cleanup func(), err error)
		sizeMB   func(tree string) (int64, error)
	)
	switch name {
	case Tiny:
		ver, err := b.apt.candidate(ctx, "busybox-static")
		if err != nil {
			return err
		}
		packages = map[string]string{"busybox-static": ver}
		hash = inputsHash(builderVersion, Tiny, ver, b.bins.initSum, b.bins.envdSum)
		makeTree = func(ctx context.Context) (string, func(), error) { return b.tinyTree(ctx, ver) }
		sizeMB = func(tree string) (int64, error) {
			used, err := treeSize(tree)
			if err != nil {
				return 0, err
			}
			if need := fitMB(used); need > TinySizeMB {
				return need, nil
			}
			return TinySizeMB, nil
		}
	case Base, CodeInterpreter:
		mirror, suite, err := b.mirror()
		if err != nil {
			return err
		}
		packages = map[string]string{"debootstrap": suite + " minbase +" + strings.Join(BaseIncludes, ",")}
		treeKey := inputsHash(builderVersion, "debootstrap", suite, mirror, strings.Join(BaseIncludes, ","))
		makeTree = func(ctx context.Context) (string, func(), error) {
			tree, err := b.debootstrapTree(ctx, treeKey, suite, mirror)
			return tree, func() {}, err
		}
		if name == CodeInterpreter {
			packages["apt-get install"] = strings.Join(codeInterpreterPackages(), ",")
			baseKey := treeKey
			treeKey = inputsHash(baseKey, "apt-get install", strings.Join(codeInterpreterPackages(), ","))
			makeTree = func(ctx context.Context) (string, func(), error) {
				base, err := b.debootstrapTree(ctx, baseKey, suite, mirror)
				if err != nil {
					return "", nil, err
				}
				tree, err := b.codeInterpreterTree(ctx, treeKey, base)
				return tree, func() {}, err
			}
		}
		hash = inputsHash(treeKey, b.bins.initSum, b.bins.envdSum)
		if name == CodeInterpreter {
			hash = inputsHash(hash, codeInterpreterSum())
		}
		sizeMB = func(tree string) (int64, error) {
			used, err := treeSize(tree)
			return fitMB(used), err
		}
	default:
		return fmt.Errorf("unknown image %q (known: %s)", name, strings.Join(Names, ", "))
	}

	out := RootfsPath(b.o.DataDir, name)
	if old, err := ReadManifest(b.o.DataDir, name); err == nil && !b.o.Force && old.InputsHash == hash && exists(out) {
		b.p.logf("up to date: %s (%d MB)", out, old.Files["rootfs.ext4"]>>20)
		return nil
	}
	t0 := time.Now()
	tree, cleanup, err := makeTree(ctx)
	if err != nil {
		return err
	}
	defer cleanup()
	if err := installGuest(tree, b.bins, name != Tiny); err != nil {
		return fmt.Errorf("install init/envd into %s: %w", name, err)
	}
	if name == CodeInterpreter {
		if err := installCodeInterpreter(tree); err != nil {
			return fmt.Errorf("install the code interpreter into %s: %w", name, err)
		}
	}
	size, err := sizeMB(tree)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	b.p.logf("mkfs.ext4 -d: %d MB", size)
	if err := mkfsFromDir(ctx, tree, out, size); err != nil {
		return err
	}
	m := Manifest{
		Name:          name,
		KernelVersion: k.release,
		Files:         fileSizes(filepath.Dir(out), "rootfs.ext4"),
		Packages:      packages,
		BuiltAt:       time.Now().UTC(),
		BuildSeconds:  time.Since(t0).Seconds(),
		InputsHash:    hash,
	}
	return writeManifest(b.o.DataDir, m)
}

func (b *builder) mirror() (string, string, error) {
	if b.o.Mirror != "" {
		return b.o.Mirror, b.o.Suite, nil
	}
	uri, suite, err := aptMirror("/")
	if err != nil {
		return "", "", err
	}
	if b.o.Suite != "" {
		suite = b.o.Suite
	}
	return uri, suite, nil
}

// debootstrapTree returns cache/debootstrap-<key>, creating it with
// debootstrap if missing. The tree is kept between builds: installing a
// new envd then takes seconds instead of a fresh ~40 s debootstrap.
func (b *builder) debootstrapTree(ctx context.Context, key, suite, mirror string) (string, error) {
	return b.cachedTree("debootstrap-", key, "debootstrap tree", func(partial string) error {
		b.p.logf("debootstrap --variant=minbase %s (%s)", suite, strings.Join(BaseIncludes, ","))
		cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase",
			"--include="+strings.Join(BaseIncludes, ","), suite, partial, mirror)
		w := &debootstrapWatcher{p: b.p}
		var tail bytes.Buffer
		cmd.Stdout = w
		cmd.Stderr = &tail
		if err := cmd.Run(); err != nil {
			log, _ := os.ReadFile(filepath.Join(partial, "debootstrap", "debootstrap.log"))
			return fmt.Errorf("debootstrap: %w: %s %s", err, lastLines(tail.String(), 5), lastLines(string(log), 10))
		}
		// Host-specific files debootstrap copies in; the guest init writes
		// its own at boot.
		for _, f := range []string{"etc/hostname", "etc/resolv.conf"} {
			_ = os.Remove(filepath.Join(partial, f))
		}
		for _, d := range []string{"var/cache/apt/archives", "var/lib/apt/lists"} {
			cleanDir(filepath.Join(partial, d), ".deb", "_Packages", "_InRelease", "_Release")
		}
		return nil
	})
}

// cachedTree returns cache/<prefix><key>, a root tree kept between builds.
// When it is missing (or Force is set) fill builds it into a partial
// directory, which is marked complete and renamed into place, so a tree
// exists completely or not at all; other keys' trees of this prefix go.
func (b *builder) cachedTree(prefix, key, what string, fill func(partial string) error) (string, error) {
	tree := filepath.Join(b.cacheDir(), prefix+key)
	if !b.o.Force && exists(filepath.Join(tree, ".hearth-complete")) {
		b.p.logf("reusing %s %s", what, filepath.Base(tree))
		return tree, nil
	}
	removeOldTrees(b.cacheDir(), prefix, len(key))
	partial := tree + ".partial"
	if err := fill(partial); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(partial, ".hearth-complete"), nil, 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(partial, tree); err != nil {
		return "", err
	}
	return tree, nil
}

// removeOldTrees drops the cached trees prefix+<key> (and their partial
// builds) of other inputs: hundreds of MB each. The pattern is exact
// (prefix + keyLen characters) so one image's trees never match another's
// prefix ("debootstrap-" vs "debootstrap-ci-").
func removeOldTrees(cacheDir, prefix string, keyLen int) {
	pattern := filepath.Join(cacheDir, prefix+strings.Repeat("?", keyLen))
	old, _ := filepath.Glob(pattern)
	partial, _ := filepath.Glob(pattern + ".partial")
	for _, o := range append(old, partial...) {
		_ = os.RemoveAll(o)
	}
}

// cleanDir removes files in dir whose names end with one of suffixes.
func cleanDir(dir string, suffixes ...string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		for _, s := range suffixes {
			if !e.IsDir() && strings.HasSuffix(e.Name(), s) {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
}

// tinyTree assembles busybox-static + a minimal /etc in a temporary dir.
func (b *builder) tinyTree(ctx context.Context, ver string) (string, func(), error) {
	deb, err := b.apt.download(ctx, b.cacheDir(), "busybox-static", ver)
	if err != nil {
		return "", nil, err
	}
	tmp, err := os.MkdirTemp(b.cacheDir(), "tiny-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { _ = os.RemoveAll(tmp) }
	fail := func(err error) (string, func(), error) { cleanup(); return "", nil, err }
	unpack := filepath.Join(tmp, "deb")
	if _, err := run(ctx, "", "dpkg-deb", "-x", deb, unpack); err != nil {
		return fail(err)
	}
	tree := filepath.Join(tmp, "root")
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "tmp", "var/tmp", "root", "home", "lib", "mnt"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return fail(err)
		}
	}
	_ = os.Chmod(filepath.Join(tree, "tmp"), 0o1777)
	_ = os.Chmod(filepath.Join(tree, "var/tmp"), 0o1777)
	_ = os.Chmod(filepath.Join(tree, "root"), 0o700)
	bb, err := os.ReadFile(filepath.Join(unpack, "bin", "busybox"))
	if err != nil {
		return fail(fmt.Errorf("busybox-static: %w", err))
	}
	if err := os.WriteFile(filepath.Join(tree, "bin", "busybox"), bb, 0o755); err != nil {
		return fail(err)
	}
	// The static busybox runs on the build host too: ask it for its
	// applets and their canonical paths.
	list, err := run(ctx, "", filepath.Join(tree, "bin", "busybox"), "--list-full")
	if err != nil {
		return fail(err)
	}
	applets := strings.Fields(string(list))
	n := 0
	for _, a := range applets {
		if a == "sbin/init" || a == "linuxrc" || a == "bin/busybox" {
			continue // /sbin/init is hearth-init
		}
		link := filepath.Join(tree, a)
		if exists(link) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return fail(err)
		}
		if err := os.Symlink("/bin/busybox", link); err != nil {
			return fail(err)
		}
		n++
	}
	b.p.logf("busybox %s: %d applets", ver, n)
	files := map[string]string{
		"etc/passwd":  "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":   "root:x:0:\ntty:x:5:\nsudo:x:27:\nnogroup:x:65534:\n",
		"etc/shadow":  "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
		"etc/profile": "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
		"etc/shells":  "/bin/sh\n/bin/ash\n/bin/bash\n",
		"etc/hosts":   "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		// envd runs commands as /bin/bash -l -c ...; busybox has no bash
		// applet, but its ash understands ordinary command lines.
		"bin/bash":       "#!/bin/sh\nexec /bin/sh \"$@\"\n",
		"etc/os-release": "NAME=\"hearth tiny\"\nID=hearth-tiny\nPRETTY_NAME=\"hearth tiny (busybox " + ver + ")\"\n",
	}
	for name, content := range files {
		mode := os.FileMode(0o644)
		switch name {
		case "etc/shadow":
			mode = 0o640
		case "bin/bash":
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(tree, name), []byte(content), mode); err != nil {
			return fail(err)
		}
	}
	return tree, cleanup, nil
}

// installGuest writes the init and envd into a root tree and creates the
// guest user. All writes go through os.Root so a symlink in the tree
// (merged /usr: /sbin -> usr/sbin) can never redirect a write to the
// build host.
func installGuest(tree string, bins guestBinaries, debian bool) error {
	r, err := os.OpenRoot(tree)
	if err != nil {
		return err
	}
	defer r.Close()
	for _, d := range []string{"usr/bin", "usr/sbin", "sbin", "home", "etc"} {
		if err := r.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	_ = r.Remove("sbin/init") // may be a symlink to systemd or busybox
	if err := r.WriteFile("sbin/init", bins.init, 0o755); err != nil {
		return err
	}
	if err := r.WriteFile("usr/bin/envd", bins.envd, 0o755); err != nil {
		return err
	}
	shell := "/bin/sh"
	if debian {
		shell = "/bin/bash"
	}
	if err := ensureLine(r, "etc/passwd", guestUser+":", fmt.Sprintf("%s:x:%d:%d::/home/%s:%s", guestUser, guestUID, guestUID, guestUser, shell), 0o644); err != nil {
		return err
	}
	if err := ensureLine(r, "etc/group", guestUser+":", fmt.Sprintf("%s:x:%d:", guestUser, guestUID), 0o644); err != nil {
		return err
	}
	if err := ensureLine(r, "etc/shadow", guestUser+":", guestUser+":*:19000:0:99999:7:::", 0o640); err != nil {
		return err
	}
	if err := addToGroup(r, "sudo", guestUser); err != nil {
		return err
	}
	home := "home/" + guestUser
	if err := r.MkdirAll(home, 0o750); err != nil {
		return err
	}
	if debian {
		if err := copySkel(r, "etc/skel", home); err != nil {
			return err
		}
		if err := r.MkdirAll("etc/sudoers.d", 0o755); err != nil {
			return err
		}
		if err := r.WriteFile("etc/sudoers.d/"+guestUser, []byte(guestUser+" ALL=(ALL:ALL) NOPASSWD: ALL\n"), 0o440); err != nil {
			return err
		}
	}
	return chownTree(r, home, guestUID, guestUID)
}

// ensureLine appends line to file unless a line starting with prefix exists.
func ensureLine(r *os.Root, file, prefix, line string, perm os.FileMode) error {
	data, err := r.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			return nil
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		data = append(data, '\n')
	}
	data = append(data, line+"\n"...)
	return r.WriteFile(file, data, perm)
}

// addToGroup adds user to an existing group in etc/group.
func addToGroup(r *os.Root, group, user string) error {
	data, err := r.ReadFile("etc/group")
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	for i, l := range lines {
		f := strings.Split(l, ":")
		if len(f) != 4 || f[0] != group {
			continue
		}
		members := strings.FieldsFunc(f[3], func(r rune) bool { return r == ',' })
		if contains(members, user) {
			return nil
		}
		f[3] = strings.Join(append(members, user), ",")
		lines[i] = strings.Join(f, ":")
		return r.WriteFile("etc/group", []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	}
	return nil // no such group (fine for tiny without sudo)
}

func copySkel(r *os.Root, skel, home string) error {
	entries, err := fs.ReadDir(r.FS(), skel)
	if err != nil {
		return nil // no skeleton
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := r.ReadFile(skel + "/" + e.Name())
		if err != nil {
			return err
		}
		if err := r.WriteFile(home+"/"+e.Name(), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func chownTree(r *os.Root, dir string, uid, gid int) error {
	return fs.WalkDir(r.FS(), dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return r.Lchown(p, uid, gid)
	})
}

// treeSize sums the allocation of a tree in 4 KiB blocks (what ext4 will
// need for data) plus one block per inode for directories and metadata.
func treeSize(tree string) (int64, error) {
	var total int64
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		total += 4096 // inode/dirent overhead, generous
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += (fi.Size() + 4095) &^ 4095
		}
		return nil
	})
	return total, err
}

// fitMB sizes a filesystem for used bytes: +25% headroom plus a fixed
// 32 MB for the journal and metadata. The image is grown to the sandbox
// disk size later (rootfs.EnsureImageSizes), so it only has to fit.
func fitMB(used int64) int64 {
	return (used+used/4)>>20 + 32
}

// mkfsFromDir creates an ext4 filesystem of sizeMB populated from tree
// (mkfs.ext4 -d: no loop mount, no privileges beyond reading the tree).
// 4 KiB blocks are forced: for small sizes mke2fs would pick 1 KiB,
// which would stay when the image is grown to 20 GB.
func mkfsFromDir(ctx context.Context, tree, out string, sizeMB int64) error {
	tmp := out + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := f.Truncate(sizeMB << 20); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if _, err := run(ctx, "", "mkfs.ext4", "-F", "-q", "-b", "4096", "-m", "0", "-L", "rootfs",
		"-d", tree, tmp); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}
