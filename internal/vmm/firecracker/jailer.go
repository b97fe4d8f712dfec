package firecracker

// Firecracker's jailer (docs/jailer.md in the Firecracker repository): the
// agent starts `jailer --id ID --exec-file FIRECRACKER --uid U --gid G
// --chroot-base-dir BASE --netns NS -- --api-sock /api.sock`. The jailer
// copies the firecracker binary into <BASE>/<exec file name>/<ID>/root (the
// chroot dir), joins the network namespace, pivots into the chroot in a
// new mount namespace, creates /dev/kvm and /dev/net/tun there owned by
// U:G, chowns the chroot dir to U:G, drops to U:G and execs firecracker
// (same pid: no --daemonize, no --new-pid-ns, so the agent's process
// handling and pid file stay as they are). The agent has put the process
// in the sandbox's cgroup by then (vmmproc), so no --cgroup is passed.
//
// Firecracker then sees only the chroot: everything the API names must be
// inside it before the call, as a hard link (or, for read-only inputs on
// another file system, a copy), and its paths in the API are paths inside
// the chroot. The root disk is at /rootfs in every jail, so snapshots
// record one path and each restore gets its own disk there.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hearth-sandbox/hearth/internal/rootfs"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// Paths inside a jail, as the jailed Firecracker sees them.
const (
	jailAPISock   = "/api.sock"
	jailKernel    = "/vmlinux"
	jailInitrd    = "/initrd"
	jailRootfs    = "/" + rootDiskName
	jailLog       = "/" + fcLogName
	jailSnapDir   = "/snapshot"
	jailSnapState = jailSnapDir + "/state"
	jailSnapMem   = jailSnapDir + "/memory"
	jailUffd      = "/uffd.sock"
	// DefaultChrootBase is the jailer's own default --chroot-base-dir,
	// used for machines whose root disk is a block device.
	DefaultChrootBase = "/srv/jailer"
	// JailDirName is the chroot base at the top of a root disk's file
	// system when Options.ChrootBase is empty.
	JailDirName = "hearth-jail"
	// sharedDirName, below a chroot base, holds one copy of each
	// read-only input from another file system (the kernel), hard-linked
	// into every jail from there.
	sharedDirName = ".shared"
)

// defaultChrootBase puts the jails at the top of the file system that
// holds disk (hard links cannot cross file systems): for the reflink
// backend the root-disk pool's mount, for file disks the data dir's file
// system.
func defaultChrootBase(disk string) (string, error) {
	if disk == "" {
		return DefaultChrootBase, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(disk, &st); err != nil {
		return "", fmt.Errorf("jailer: root disk: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		return DefaultChrootBase, nil
	}
	top, err := mountTop(filepath.Dir(disk), st.Dev)
	if err != nil {
		return "", err
	}
	return filepath.Join(top, JailDirName), nil
}

// mountTop walks up from dir (on device dev) to the highest directory
// still on dev: the file system's mount point.
func mountTop(dir string, dev uint64) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for dir != "/" {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Dir(dir), &st); err != nil {
			return "", fmt.Errorf("jailer: %w", err)
		}
		if st.Dev != dev {
			break
		}
		dir = filepath.Dir(dir)
	}
	return dir, nil
}

// jailIDRE is the jailer's rule for --id: alphanumerics and hyphens, at
// most 64 characters.
var jailIDRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// jail is one machine's chroot.
type jail struct {
	jailer   string // the jailer binary
	exec     string // absolute path of the firecracker binary
	base     string // --chroot-base-dir
	id       string
	uid, gid int
}

// ErrNoJailer is returned (wrapped in vmm.ErrUnsupported) when
// Firecracker would run as root because no jailer is configured or found.
var ErrNoJailer = errors.New("no Firecracker jailer: Firecracker would run as root, unconfined")

// newJail checks the jailer's documented constraints on its arguments.
func newJail(jailer, exec, base, id string, uid, gid int) (jail, error) {
	if !filepath.IsAbs(exec) {
		return jail{}, fmt.Errorf("jailer: --exec-file %q must be an absolute path", exec)
	}
	if !strings.Contains(filepath.Base(exec), "firecracker") {
		return jail{}, fmt.Errorf("jailer: --exec-file %q: the jailer only runs a binary whose name contains \"firecracker\"", exec)
	}
	if !jailIDRE.MatchString(id) {
		return jail{}, fmt.Errorf("jailer: --id %q: alphanumerics and hyphens, at most 64", id)
	}
	if uid <= 0 || gid <= 0 {
		return jail{}, fmt.Errorf("jailer: uid %d gid %d: the jailer is there to drop root, give it a non-root uid and gid", uid, gid)
	}
	if !filepath.IsAbs(base) {
		return jail{}, fmt.Errorf("jailer: --chroot-base-dir %q must be absolute", base)
	}
	j := jail{jailer: jailer, exec: exec, base: filepath.Clean(base), id: id, uid: uid, gid: gid}
	if p := j.hostPath(jailAPISock); len(p) > 107 {
		return jail{}, fmt.Errorf("jailer: API socket path %q longer than 107 bytes (use a shorter --firecracker-chroot-base)", p)
	}
	return j, nil
}

// dir is <base>/<exec file name>/<id>, removed as a whole at the end.
func (j jail) dir() string { return filepath.Join(j.base, filepath.Base(j.exec), j.id) }

// root is the chroot dir, <dir>/root.
func (j jail) root() string { return filepath.Join(j.dir(), "root") }

// hostPath maps a path inside the jail to the host.
func (j jail) hostPath(p string) string { return filepath.Join(j.root(), p) }

// args is the jailer's argv after the binary name; fcArgs go to
// firecracker after "--" (the jailer passes --id itself).
func (j jail) args(netnsPath string, fcArgs ...string) []string {
	a := []string{
		"--id", j.id,
		"--exec-file", j.exec,
		"--uid", strconv.Itoa(j.uid),
		"--gid", strconv.Itoa(j.gid),
		"--chroot-base-dir", j.base,
	}
	if netnsPath != "" {
		a = append(a, "--netns", netnsPath)
	}
	return append(append(a, "--"), fcArgs...)
}

// prepare builds the chroot for a boot (kernel, initrd, root disk) or a
// restore (root disk, snapshot state, memory file or page server socket)
// before the jailer runs; a previous jail of the same id is removed first.
// It returns the API paths to use instead of cfg's and restore's.
func (j jail) prepare(cfg vmm.Config, restore *vmm.RestoreSpec) (kernel, initrd string, r *vmm.RestoreSpec, err error) {
	if err := os.RemoveAll(j.dir()); err != nil {
		return "", "", nil, fmt.Errorf("jailer: remove old jail: %w", err)
	}
	if err := os.MkdirAll(j.hostPath(jailSnapDir), 0o700); err != nil {
		return "", "", nil, fmt.Errorf("jailer: %w", err)
	}
	if err := os.Chown(j.hostPath(jailSnapDir), j.uid, j.gid); err != nil {
		return "", "", nil, fmt.Errorf("jailer: %w", err)
	}
	if cfg.KernelPath != "" {
		if err := j.linkReadable(cfg.KernelPath, jailKernel, true); err != nil {
			return "", "", nil, err
		}
		kernel = jailKernel
	}
	if cfg.InitrdPath != "" {
		if err := j.linkReadable(cfg.InitrdPath, jailInitrd, true); err != nil {
			return "", "", nil, err
		}
		initrd = jailInitrd
	}
	if cfg.RootDisk != "" {
		if err := j.linkOwned(cfg.RootDisk, jailRootfs); err != nil {
			return "", "", nil, err
		}
	}
	// Firecracker opens its log; it does not create it.
	if err := j.create(jailLog); err != nil {
		return "", "", nil, err
	}
	if restore != nil {
		rr := *restore
		if err := j.linkReadable(restore.StatePath, jailSnapState, false); err != nil {
			return "", "", nil, err
		}
		rr.StatePath = jailSnapState
		if restore.UffdSocket != "" {
			// The page server's socket, this restore's alone: connecting
			// needs write permission on it.
			if err := j.linkOwned(restore.UffdSocket, jailUffd); err != nil {
				return "", "", nil, err
			}
			rr.UffdSocket = jailUffd
		} else {
			if err := j.linkReadable(restore.MemoryPath, jailSnapMem, false); err != nil {
				return "", "", nil, err
			}
			rr.MemoryPath = jailSnapMem
		}
		r = &rr
	}
	return kernel, initrd, r, nil
}

// create makes an empty file in the jail owned by the jailed user.
func (j jail) create(p string) error {
	f, err := os.OpenFile(j.hostPath(p), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("jailer: %w", err)
	}
	f.Close()
	return os.Chown(j.hostPath(p), j.uid, j.gid)
}

// linkOwned puts a file that belongs to this machine alone (its root disk,
// its page server's socket) into the jail: a hard link (a block device:
// a node with the same device number), owned by the jailed user. A root
// disk on another file system than the jail cannot be linked, nor copied.
func (j jail) linkOwned(src, p string) error {
	dst := j.hostPath(p)
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return fmt.Errorf("jailer: %s: %w", src, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if err := unix.Mknod(dst, unix.S_IFBLK|0o600, int(st.Rdev)); err != nil {
			return fmt.Errorf("jailer: device node for %s: %w", src, err)
		}
	} else if err := os.Link(src, dst); err != nil {
		if errors.Is(err, unix.EXDEV) {
			return fmt.Errorf("jailer: %s is on another file system than the jail %s: root disks and page server sockets must be on the chroot base's file system (set --firecracker-chroot-base to a directory on it, or leave it empty to use the root disks' file system)", src, j.base)
		}
		return fmt.Errorf("jailer: %w", err)
	}
	return os.Chown(dst, j.uid, j.gid)
}

// linkReadable puts a read-only input (kernel, initrd, snapshot files,
// possibly shared with other machines) into the jail: a hard link when
// the jailed user can read the file as it is, else a private copy it owns
// (rootfs.CopyFile: a reflink where the file system can, holes kept),
// removed with the jail. share: a file from another file system that
// rarely changes (the kernel) is copied once per base and linked from
// there instead.
func (j jail) linkReadable(src, p string, share bool) error {
	dst := j.hostPath(p)
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return fmt.Errorf("jailer: %s: %w", src, err)
	}
	if readableBy(st, j.uid, j.gid) {
		err := os.Link(src, dst)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EXDEV) {
			return fmt.Errorf("jailer: %w", err)
		}
	}
	if share && readableBy(st, j.uid, j.gid) {
		// Another file system (the kernel in the data dir, jails next to
		// the root disks): one shared copy per base, linked from there.
		shared, err := j.sharedCopy(src, st)
		if err != nil {
			return err
		}
		if err := os.Link(shared, dst); err != nil {
			return fmt.Errorf("jailer: %w", err)
		}
		return nil
	}
	if err := rootfs.CopyFile(src, dst); err != nil {
		return fmt.Errorf("jailer: copy %s into the jail: %w", src, err)
	}
	return os.Chown(dst, j.uid, j.gid)
}

// sharedCopy returns a copy of src (readable by everyone, as src is)
// below the base, made once and named after src's identity, so a new
// kernel gets a new copy and a running jail keeps its link to the old.
func (j jail) sharedCopy(src string, st unix.Stat_t) (string, error) {
	dir := filepath.Join(j.base, sharedDirName)
	p := filepath.Join(dir, fmt.Sprintf("%x-%x-%x-%d.%d-%s", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, filepath.Base(src)))
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("jailer: %w", err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", p, os.Getpid())
	_ = os.Remove(tmp)
	if err := rootfs.CopyFile(src, tmp); err != nil {
		return "", fmt.Errorf("jailer: copy %s: %w", src, err)
	}
	if err := os.Chmod(tmp, 0o444); err != nil {
		return "", fmt.Errorf("jailer: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("jailer: %w", err)
	}
	return p, nil
}

// readableBy applies the permission bits (no ACLs: the agent sets none).
func readableBy(st unix.Stat_t, uid, gid int) bool {
	switch {
	case int(st.Uid) == uid:
		return st.Mode&0o400 != 0
	case int(st.Gid) == gid:
		return st.Mode&0o040 != 0
	}
	return st.Mode&0o004 != 0
}

// collect moves a file Firecracker wrote in the jail (a snapshot) to where
// the caller asked for it: a rename, or a copy across file systems.
func (j jail) collect(p, dst string) error {
	src := j.hostPath(p)
	if err := os.Rename(src, dst); err == nil {
		return nil
	} else if !errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("jailer: collect %s: %w", p, err)
	}
	if err := rootfs.CopyFile(src, dst); err != nil {
		return fmt.Errorf("jailer: collect %s: %w", p, err)
	}
	return os.Remove(src)
}

// setTapOwner makes the jailed user the owner of the persistent tap the
// agent created (as root) in the sandbox's namespace: an unprivileged
// Firecracker may attach to a tap only if it owns it.
func setTapOwner(nsPath, tap string, uid, gid int) error {
	// A thread of its own: it is left locked (and so destroyed by the
	// runtime) if it cannot switch back to the agent's namespace.
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		if nsPath != "" {
			ns, err := netns.GetFromPath(nsPath)
			if err != nil {
				done <- err
				return
			}
			err = netns.Set(ns)
			ns.Close()
			if err != nil {
				done <- err
				return
			}
		}
		err = tapOwner(tap, uid, gid)
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

func tapOwner(tap string, uid, gid int) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(tap)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("attach to tap %s: %w", tap, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, uid); err != nil {
		return fmt.Errorf("tap %s owner: %w", tap, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, gid); err != nil {
		return fmt.Errorf("tap %s group: %w", tap, err)
	}
	return nil
}
