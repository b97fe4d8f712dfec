package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// attachLoop binds file to a free loop device with ioctls (LOOP_CTL_GET_FREE
// then LOOP_CONFIGURE, falling back to LOOP_SET_FD + LOOP_SET_STATUS64 on
// kernels before 5.8) and returns the device path and an open handle to it.
//
// With autoclear the kernel detaches the device when its last opener
// closes it: callers close the handle once a mount or a device-mapper table
// holds the device, and it goes away with them.
func attachLoop(file string, readOnly, autoclear bool) (string, *os.File, error) {
	mode := os.O_RDWR
	var flags uint32
	if readOnly {
		mode = os.O_RDONLY
		flags |= unix.LO_FLAGS_READ_ONLY
	}
	if autoclear {
		flags |= unix.LO_FLAGS_AUTOCLEAR
	}
	backing, err := os.OpenFile(file, mode, 0)
	if err != nil {
		return "", nil, err
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("loop: %w", err)
	}
	defer ctl.Close()

	// Another process may take the free device between GET_FREE and
	// CONFIGURE (EBUSY): ask again.
	for attempt := 0; attempt < 20; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := openLoopDev(dev, mode)
		if err != nil {
			return "", nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = flags
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], file)
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			err = legacyConfigure(lf, backing, &cfg.Info)
		}
		if errors.Is(err, unix.EBUSY) {
			lf.Close()
			continue
		}
		if err != nil {
			lf.Close()
			return "", nil, fmt.Errorf("configure %s for %s: %w", dev, file, err)
		}
		return dev, lf, nil
	}
	return "", nil, fmt.Errorf("loop: no free device for %s after 20 attempts", file)
}

// openLoopDev opens a loop node, waiting briefly for devtmpfs to create a
// node LOOP_CTL_GET_FREE has just added.
func openLoopDev(dev string, mode int) (*os.File, error) {
	for i := 0; ; i++ {
		f, err := os.OpenFile(dev, mode, 0)
		if err == nil || !errors.Is(err, os.ErrNotExist) || i == 50 {
			return f, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func legacyConfigure(lf, backing *os.File, info *unix.LoopInfo64) error {
	if err := unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(int(lf.Fd()), info); err != nil {
		unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

// detachLoop clears a loop device (LOOP_CLR_FD). If the device is still
// open elsewhere the kernel defers the detach to the last close.
func detachLoop(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("LOOP_CLR_FD %s: %w", dev, err)
	}
	return nil
}

// loopDev is an attached loop device as sysfs shows it.
type loopDev struct {
	Dev     string // /dev/loopN
	Backing string // backing file path (" (deleted)" stripped)
	Deleted bool
	Holders int // device-mapper tables etc. stacked on it
}

// listLoops returns every attached loop device.
func listLoops() ([]loopDev, error) {
	paths, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	var out []loopDev
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // detached meanwhile
		}
		name := filepath.Base(filepath.Dir(filepath.Dir(p)))
		backing := strings.TrimSpace(string(b))
		d := loopDev{Dev: "/dev/" + name}
		d.Backing, d.Deleted = strings.CutSuffix(backing, " (deleted)")
		h, _ := os.ReadDir(filepath.Join("/sys/block", name, "holders"))
		d.Holders = len(h)
		out = append(out, d)
	}
	return out, nil
}

// mountedDevices returns the sources of every mount visible to this process.
func mountedDevices() (map[string]bool, error) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			m[f[0]] = true
		}
	}
	return m, nil
}

// mountSource returns the device mounted at dir, or "" if dir is not a
// mount point.
func mountSource(dir string) (string, error) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == dir {
			return f[0], nil
		}
	}
	return "", nil
}
