package pagesrv

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// userfaultfd ABI that golang.org/x/sys/unix does not define (it has only
// SYS_USERFAULTFD). Written from include/uapi/linux/userfaultfd.h (Linux
// 6.x); the ioctl numbers are _IOWR/_IOR(0xAA, nr, struct) computed for the
// struct sizes below, which are the same on every 64-bit architecture.
const (
	uffdAPIVersion = 0xAA

	ioctlUffdAPI      = 0xC018AA3F // _IOWR(0xAA, 0x3F, struct uffdio_api)      24 bytes
	ioctlUffdRegister = 0xC020AA00 // _IOWR(0xAA, 0x00, struct uffdio_register) 32 bytes
	ioctlUffdWake     = 0x8010AA02 // _IOR(0xAA, 0x02, struct uffdio_range)      16 bytes
	ioctlUffdCopy     = 0xC028AA03 // _IOWR(0xAA, 0x03, struct uffdio_copy)     40 bytes
	ioctlUffdZeropage = 0xC020AA04 // _IOWR(0xAA, 0x04, struct uffdio_zeropage) 32 bytes
	// USERFAULTFD_IOC_NEW on /dev/userfaultfd: _IO(0xAA, 0x00).
	ioctlDevUffdNew = 0xAA00

	// UFFD_USER_MODE_ONLY flag for userfaultfd(2).
	uffdUserModeOnly = 1

	// RegisterModeMissing is UFFDIO_REGISTER_MODE_MISSING.
	RegisterModeMissing = 1

	// Features for EnableAPI (UFFD_FEATURE_*).
	FeatureEventFork   = 1 << 1
	FeatureEventRemap  = 1 << 2
	FeatureEventRemove = 1 << 3
	FeatureEventUnmap  = 1 << 6

	// Event types (UFFD_EVENT_*) in struct uffd_msg.
	eventPagefault = 0x12
	eventFork      = 0x13
	eventRemap     = 0x14
	eventRemove    = 0x15
	eventUnmap     = 0x16

	// sizeof(struct uffd_msg).
	uffdMsgSize = 32
)

type uffdioAPI struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

type uffdioRange struct {
	Start uint64
	Len   uint64
}

type uffdioRegister struct {
	Range  uffdioRange
	Mode   uint64
	Ioctls uint64
}

type uffdioCopy struct {
	Dst  uint64
	Src  uint64
	Len  uint64
	Mode uint64
	Copy int64 // bytes copied, or -errno
}

type uffdioZeropage struct {
	Range    uffdioRange
	Mode     uint64
	Zeropage int64 // bytes zero-mapped, or -errno
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// OpenUserfaultfd creates a non-blocking, close-on-exec userfaultfd, as
// Firecracker does: the userfaultfd(2) syscall first (handles faults from
// kernel mode too, needed for KVM guests), then /dev/userfaultfd (kernel ≥
// 6.1, permission by file mode), and finally UFFD_USER_MODE_ONLY, which
// unprivileged processes may use when vm.unprivileged_userfaultfd=0 but which
// cannot serve faults raised inside the kernel (KVM, read(2) into the range).
func OpenUserfaultfd() (int, error) {
	flags := uintptr(unix.O_NONBLOCK | unix.O_CLOEXEC)
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, flags, 0, 0)
	if e == 0 {
		return int(fd), nil
	}
	errs := []error{fmt.Errorf("userfaultfd(2): %w", e)}
	if dev, err := unix.Open("/dev/userfaultfd", unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
		fd, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(dev), ioctlDevUffdNew, flags)
		unix.Close(dev)
		if e == 0 {
			return int(fd), nil
		}
		errs = append(errs, fmt.Errorf("/dev/userfaultfd: %w", e))
	} else {
		errs = append(errs, fmt.Errorf("/dev/userfaultfd: %w", err))
	}
	fd, _, e = unix.Syscall(unix.SYS_USERFAULTFD, flags|uffdUserModeOnly, 0, 0)
	if e == 0 {
		return int(fd), nil
	}
	errs = append(errs, fmt.Errorf("userfaultfd(2) user-mode-only: %w", e))
	return -1, errors.Join(errs...)
}

// EnableAPI performs the UFFDIO_API handshake requesting features and returns
// the features the kernel granted. It must precede any other uffd ioctl.
func EnableAPI(fd int, features uint64) (uint64, error) {
	a := uffdioAPI{API: uffdAPIVersion, Features: features}
	if err := ioctl(fd, ioctlUffdAPI, unsafe.Pointer(&a)); err != nil {
		return 0, fmt.Errorf("UFFDIO_API(features %#x): %w", features, err)
	}
	return a.Features, nil
}

// RegisterMissing registers [addr, addr+length) for missing-page faults.
func RegisterMissing(fd int, addr, length uintptr) error {
	r := uffdioRegister{Range: uffdioRange{Start: uint64(addr), Len: uint64(length)}, Mode: RegisterModeMissing}
	if err := ioctl(fd, ioctlUffdRegister, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("UFFDIO_REGISTER %#x+%d: %w", addr, length, err)
	}
	return nil
}

func uffdWake(fd int, addr, length uint64) error {
	r := uffdioRange{Start: addr, Len: length}
	return ioctl(fd, ioctlUffdWake, unsafe.Pointer(&r))
}

// uffdCopy issues one UFFDIO_COPY and returns how many bytes were mapped
// before any error.
func uffdCopy(fd int, dst uint64, src []byte) (uint64, error) {
	c := uffdioCopy{Dst: dst, Src: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(src)))), Len: uint64(len(src))}
	err := ioctl(fd, ioctlUffdCopy, unsafe.Pointer(&c))
	runtime.KeepAlive(src)
	if err == nil {
		return uint64(len(src)), nil
	}
	return uint64(max(c.Copy, 0)), err
}

func uffdZeropage(fd int, dst, length uint64) (uint64, error) {
	z := uffdioZeropage{Range: uffdioRange{Start: dst, Len: length}}
	err := ioctl(fd, ioctlUffdZeropage, unsafe.Pointer(&z))
	if err == nil {
		return length, nil
	}
	return uint64(max(z.Zeropage, 0)), err
}

// isUserfaultfd reports whether fd refers to a userfaultfd object.
func isUserfaultfd(fd int) bool {
	target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	return err == nil && target == "anon_inode:[userfaultfd]"
}
