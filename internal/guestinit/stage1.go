package guestinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// InitramfsMarker exists only in the initramfs; its presence tells the
// binary it is running as stage 1.
const InitramfsMarker = "/.hearth-initramfs"

const newRoot = "/newroot"

// rootWait bounds how long stage 1 waits for the root block device to
// appear after virtio_blk is loaded (probing is normally synchronous; the
// wait covers asynchronous probing on slower hosts).
const rootWait = 30 * time.Second

// stage1 runs as /init of the initramfs: load the virtio modules (the
// Debian cloud kernel has virtio_blk as a module, so the kernel itself
// cannot mount the root disk), mount the root disk, switch_root into it and
// exec its /sbin/init (stage 2). It never returns on success.
func stage1(l *logger) error {
	if err := mountAll(earlyMounts); err != nil {
		return err
	}
	l.ensureConsole()
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read cmdline: %w", err)
	}
	cl, err := ParseCmdline(string(raw))
	if err != nil {
		return err
	}
	l.debug = cl.Debug
	l.stepf("stage 1: loading modules")
	if err := LoadModules(ModulesDir, cl, l.printf); err != nil {
		l.printf("some modules failed to load: %v", err)
	}
	l.stepf("stage 1: waiting for %s", cl.Root)
	if err := waitForDevice(cl.Root, rootWait); err != nil {
		return err
	}
	l.stepf("stage 1: mounting %s", cl.Root)
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(cl.Root, newRoot, cl.RootFSType, unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mount root %s (%s): %w", cl.Root, cl.RootFSType, err)
	}
	l.stepf("stage 1: switch_root")
	return switchRoot(newRoot, "/sbin/init")
}

func waitForDevice(path string, max time.Duration) error {
	deadline := time.Now().Add(max)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("root device %s did not appear within %s", path, max)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// switchRoot does what busybox switch_root does: move the pseudo
// filesystems into the new root, free the initramfs (it is RAM), make the
// new root "/" and exec its init.
func switchRoot(root, init string) error {
	for _, m := range []string{"/dev", "/proc", "/sys"} {
		target := filepath.Join(root, m)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m, target, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s: %w", m, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat("/", &st); err != nil {
		return err
	}
	removeTree("/", st.Dev)
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if _, err := os.Stat(init); err != nil {
		return fmt.Errorf("no init in root filesystem: %w", err)
	}
	return unix.Exec(init, []string{init}, os.Environ())
}

// removeTree deletes the initramfs contents below dir without crossing
// into other filesystems (the new root is mounted below "/").
func removeTree(dir string, dev uint64) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil || st.Dev != dev {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			removeTree(p, dev)
			if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.EBUSY) {
				continue
			}
			continue
		}
		_ = unix.Unlink(p)
	}
}
