package guestinit

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	mode                   os.FileMode
}

// earlyMounts are the pseudo filesystems every stage needs.
var earlyMounts = []mountSpec{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755},
}

// systemMounts complete the userland view in the real root.
var systemMounts = []mountSpec{
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666", 0o755},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", 0o755},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
}

// mountedPoints returns the mount points in /proc/self/mountinfo (empty
// when /proc is not mounted yet).
func mountedPoints() map[string]bool {
	out := map[string]bool{}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			out[fields[4]] = true
		}
	}
	return out
}

// mountAll mounts each spec that is not mounted yet. Already-mounted
// targets are fine: stage 1 hands /dev, /proc and /sys over to stage 2, and
// a kernel without an initramfs may have mounted devtmpfs itself.
func mountAll(specs []mountSpec) error {
	var errs []error
	for _, m := range specs {
		if mountedPoints()[m.target] {
			continue
		}
		if err := os.MkdirAll(m.target, m.mode); err != nil {
			errs = append(errs, err)
			continue
		}
		err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		if errors.Is(err, unix.EBUSY) {
			continue // devtmpfs auto-mounted by the kernel
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
		}
	}
	return errors.Join(errs...)
}

// devLinks are the conventional /dev symlinks devtmpfs does not create.
var devLinks = [][2]string{
	{"/proc/self/fd", "/dev/fd"},
	{"/proc/self/fd/0", "/dev/stdin"},
	{"/proc/self/fd/1", "/dev/stdout"},
	{"/proc/self/fd/2", "/dev/stderr"},
	{"/proc/kcore", "/dev/core"},
}

func makeDevLinks() {
	for _, l := range devLinks {
		if _, err := os.Lstat(l[1]); err == nil {
			continue
		}
		_ = os.Symlink(l[0], l[1]) // best effort: a missing convenience link is not fatal
	}
}

// mountVolumes mounts each NFS export of server at its path, creating
// the path. The kernel's own NFS client does the MOUNT call (no
// mount.nfs in the image). "hard": while the sandbox is paused the server
// is down, and after a resume the client reconnects and retries; a
// guest never sees an error for it. "nolock": the server has no lock
// manager (locks stay local to the guest); "noacl": nor an ACL service.
func mountVolumes(server netip.AddrPort, vols []VolumeMount) error {
	ip, port := server.Addr().String(), strconv.Itoa(int(server.Port()))
	opts := "vers=3,proto=tcp,port=" + port + ",mountport=" + port + ",mountproto=tcp,nolock,noacl,hard,addr=" + ip + ",mountaddr=" + ip
	for _, v := range vols {
		if err := os.MkdirAll(v.Path, 0o755); err != nil {
			return fmt.Errorf("volume %s: %w", v.Tag, err)
		}
		if err := unix.Mount(ip+":/"+v.Tag, v.Path, "nfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return fmt.Errorf("mount volume %s at %s: %w", v.Tag, v.Path, err)
		}
	}
	return nil
}
