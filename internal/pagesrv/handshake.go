package pagesrv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Region is one guest memory region as Firecracker describes it in the Uffd
// handshake (its GuestRegionUffdMapping, written here from
// specs/firecracker/handling-page-faults-on-snapshot-resume.md and Firecracker's
// send_uffd_handshake; Apache-2.0). Offset is the region's byte offset in the
// guest memory snapshot.
type Region struct {
	BaseHostVirtAddr uint64 `json:"base_host_virt_addr"`
	Size             uint64 `json:"size"`
	Offset           uint64 `json:"offset"`
	// PageSize is in bytes (newer Firecracker). Older releases sent only
	// PageSizeKiB; some releases put the byte count in both fields.
	PageSize    uint64 `json:"page_size,omitempty"`
	PageSizeKiB uint64 `json:"page_size_kib,omitempty"`
}

// pageBytes resolves the region's page size in bytes.
func (r Region) pageBytes() uint64 {
	switch {
	case r.PageSize != 0:
		return r.PageSize
	case r.PageSizeKiB >= 4096:
		return r.PageSizeKiB // a release that sent bytes under the old name
	case r.PageSizeKiB != 0:
		return r.PageSizeKiB << 10
	default:
		return uint64(os.Getpagesize())
	}
}

// maxHandshake bounds the JSON payload (Firecracker sends a few hundred bytes).
const maxHandshake = 1 << 20

// ErrHandshake is wrapped by every handshake validation error.
var ErrHandshake = errors.New("uffd handshake")

// Handshake is what the VMM sent.
type Handshake struct {
	Regions []Region
	Uffd    int // owned by the receiver; close it when done
	PeerPID int // from SO_PEERCRED; 0 if unknown
}

// ReadHandshake receives the JSON region list and the uffd (SCM_RIGHTS) from
// a VMM connection. Firecracker sends both in one sendmsg and then closes its
// end, so the socket is not used afterwards. Any received descriptor is closed
// on error.
func ReadHandshake(ctx context.Context, conn *net.UnixConn, timeout time.Duration) (hs Handshake, err error) {
	hs.Uffd = -1
	if timeout > 0 {
		if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return hs, fmt.Errorf("set handshake deadline: %w", err)
		}
		defer conn.SetReadDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	raw, err := conn.SyscallConn()
	if err != nil {
		return hs, fmt.Errorf("raw conn: %w", err)
	}
	var fds []int
	defer func() {
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			hs.Uffd = -1
		}
	}()
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(8*4))
	var n, oobn, flags int
	var rerr error
	if err := raw.Read(func(fd uintptr) bool {
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return rerr != unix.EAGAIN
	}); err != nil {
		return hs, fmt.Errorf("%w: receive: %w", ErrHandshake, err)
	}
	if rerr != nil {
		return hs, fmt.Errorf("%w: recvmsg: %w", ErrHandshake, rerr)
	}
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return hs, fmt.Errorf("%w: control message: %w", ErrHandshake, err)
		}
		for i := range msgs {
			got, err := unix.ParseUnixRights(&msgs[i])
			if err == nil {
				fds = append(fds, got...)
			}
		}
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return hs, fmt.Errorf("%w: control data truncated (too many descriptors)", ErrHandshake)
	}
	if len(fds) != 1 {
		return hs, fmt.Errorf("%w: got %d file descriptors, want exactly one userfaultfd", ErrHandshake, len(fds))
	}
	if !isUserfaultfd(fds[0]) {
		return hs, fmt.Errorf("%w: the descriptor is not a userfaultfd", ErrHandshake)
	}
	// The fd must be non-blocking: a blocking uffd makes poll report POLLERR
	// here. O_NONBLOCK lives on the shared file description, which the VMM
	// already sets (Firecracker creates it non-blocking); set it if it did not.
	fl, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFL, 0)
	if err != nil {
		return hs, fmt.Errorf("%w: F_GETFL: %w", ErrHandshake, err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		if _, err := unix.FcntlInt(uintptr(fds[0]), unix.F_SETFL, fl|unix.O_NONBLOCK); err != nil {
			return hs, fmt.Errorf("%w: set O_NONBLOCK: %w", ErrHandshake, err)
		}
	}

	// A stream socket may split the payload: read until it is a complete
	// JSON value (not until EOF: an in-process peer may keep the socket open).
	data := append([]byte(nil), buf[:n]...)
	for !json.Valid(data) {
		if len(data) > maxHandshake {
			return hs, fmt.Errorf("%w: payload larger than %d bytes", ErrHandshake, maxHandshake)
		}
		m, err := conn.Read(buf)
		data = append(data, buf[:m]...)
		if errors.Is(err, io.EOF) || (err != nil && m == 0) {
			return hs, fmt.Errorf("%w: malformed JSON %.64q: %v", ErrHandshake, data, err)
		}
	}
	if err := json.Unmarshal(data, &hs.Regions); err != nil {
		return hs, fmt.Errorf("%w: decode regions: %w", ErrHandshake, err)
	}
	if err := validateRegions(hs.Regions); err != nil {
		return hs, err
	}
	if cred, err := unix.GetsockoptUcred(int(sysFd(raw)), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
		hs.PeerPID = int(cred.Pid)
	}
	hs.Uffd = fds[0]
	return hs, nil
}

func sysFd(raw interface {
	Control(func(uintptr)) error
}) uintptr {
	var out uintptr
	_ = raw.Control(func(fd uintptr) { out = fd })
	return out
}

// validateRegions checks a region list on its own; the memory size is checked
// against the snapshot by NewSession.
func validateRegions(rs []Region) error {
	if len(rs) == 0 {
		return fmt.Errorf("%w: no memory regions", ErrHandshake)
	}
	if len(rs) > 1024 {
		return fmt.Errorf("%w: %d regions", ErrHandshake, len(rs))
	}
	for i, r := range rs {
		ps := r.pageBytes()
		if ps < 4096 || bits.OnesCount64(ps) != 1 || ps > 1<<30 {
			return fmt.Errorf("%w: region %d: page size %d", ErrHandshake, i, ps)
		}
		if r.Size == 0 || r.Size%ps != 0 || r.BaseHostVirtAddr%ps != 0 || r.Offset%ps != 0 {
			return fmt.Errorf("%w: region %d (%+v) not aligned to its page size %d", ErrHandshake, i, r, ps)
		}
		if r.BaseHostVirtAddr+r.Size < r.BaseHostVirtAddr || r.Offset+r.Size < r.Offset {
			return fmt.Errorf("%w: region %d overflows", ErrHandshake, i)
		}
		for j := range i {
			o := rs[j]
			if r.BaseHostVirtAddr < o.BaseHostVirtAddr+o.Size && o.BaseHostVirtAddr < r.BaseHostVirtAddr+r.Size {
				return fmt.Errorf("%w: regions %d and %d overlap", ErrHandshake, j, i)
			}
		}
	}
	return nil
}

// SendHandshake performs the VMM's side (what Firecracker does after
// registering its memory): one sendmsg carrying the JSON region list and the
// uffd. Used by in-process callers and tests.
func SendHandshake(conn *net.UnixConn, regions []Region, uffd int) error {
	payload, err := json.Marshal(regions)
	if err != nil {
		return fmt.Errorf("encode regions: %w", err)
	}
	n, _, err := conn.WriteMsgUnix(payload, unix.UnixRights(uffd), nil)
	if err != nil {
		return fmt.Errorf("send handshake: %w", err)
	}
	if n != len(payload) {
		return fmt.Errorf("send handshake: short write %d of %d", n, len(payload))
	}
	return nil
}
