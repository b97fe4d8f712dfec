// Package guestinit is the microVM's PID 1 (cmd/hearth-init).
//
// Boot design. The Debian cloud kernel builds virtio_mmio, virtio_blk and
// virtio_net as modules, so the kernel cannot mount a virtio root disk by
// itself. The same static binary therefore runs in two stages:
//
//   - stage 1, /init of a small uncompressed initramfs (newc cpio built by
//     internal/image): mount /dev, /proc, /sys; load the modules listed in
//     /lib/modules/hearth/modules.order with finit_module; wait for the
//     root disk (hearth.root, default /dev/vda); mount it; move the pseudo
//     filesystems into it; delete the initramfs contents; switch_root and
//     exec /sbin/init of the root filesystem.
//   - stage 2, /sbin/init of the root filesystem: finish the mounts,
//     configure lo and eth0 from the kernel command line, set the hostname
//     and resolv.conf, then supervise /usr/bin/envd and the image's
//     services in /etc/hearth/services (restart with backoff), reap
//     orphans, and power off on SIGTERM/SIGUSR2/SIGPWR/SIGINT.
//
// Stage 2 makes no assumption about stage 1 (it re-checks every mount), so
// a root filesystem also boots without the initramfs on a kernel with
// virtio built in (e.g. Firecracker's guest kernels, root=/dev/vda), and a
// template disk carrying an older init still boots with a newer initramfs.
//
// The initramfs is uncompressed on purpose: under TCG the guest CPU is
// ~10x slower than native, and unpacking a few MB of plain cpio is a
// memcpy while decompressing it is not.
package guestinit

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// EnvdStartedMarker is printed on the console each time envd is started.
// Drivers and tests watch the serial log for it.
const EnvdStartedMarker = "hearth-init: envd started"

// Main is the entry point of cmd/hearth-init. It never returns when it
// runs as PID 1.
func Main() {
	l := &logger{}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "hearth-init: must run as PID 1 (the microVM's init)")
		os.Exit(2)
	}
	var err error
	if _, statErr := os.Stat(InitramfsMarker); statErr == nil {
		err = stage1(l)
	} else {
		err = stage2(l)
	}
	// PID 1 must not exit (the kernel would panic and, with panic=-1,
	// reboot in a loop): report and power off instead.
	l.printf("fatal: %v", err)
	powerOff(l)
}

type logger struct{ debug bool }

func (*logger) printf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "hearth-init: "+format+"\n", args...)
}

// stepf prints a boot step with the uptime when hearth.debug is set (the
// serial console is slow under TCG: normal boots print two lines).
func (l *logger) stepf(format string, args ...any) {
	if l.debug {
		l.printf("[%.3fs] "+format, append([]any{uptime().Seconds()}, args...)...)
	}
}

// ensureConsole opens /dev/console as stdin/stdout/stderr when the kernel
// could not (no /dev/console in the root it started init in).
func (*logger) ensureConsole() {
	var st unix.Stat_t
	if unix.Fstat(2, &st) == nil {
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for i := 0; i < 3; i++ {
		_ = unix.Dup2(fd, i)
	}
	if fd > 2 {
		_ = unix.Close(fd)
	}
}

// uptime reads the kernel's uptime for the boot log.
func uptime() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// powerOff stops everything and turns the VM off. It does not return.
func powerOff(l *logger) {
	l.printf("powering off")
	_ = unix.Kill(-1, unix.SIGTERM)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.ECHILD {
			break
		}
		if pid <= 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
	// Read-only remount flushes the journal so the disk is clean for
	// snapshots and templates; EBUSY is possible and harmless after sync.
	_ = unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Without a power-off method (no ACPI) fall back to a reboot, which
	// QEMU -no-reboot and Firecracker (reboot=k) turn into VMM exit.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	for {
		time.Sleep(time.Hour)
	}
}
