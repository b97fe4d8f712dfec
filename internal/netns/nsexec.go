package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNS runs fn on an OS thread that has joined ns. The thread is never
// returned to the Go scheduler: the goroutine exits while still locked, so
// the runtime discards the thread and no other goroutine can ever run in the
// wrong namespace, even if switching back would have failed. Child processes
// started by fn (exec.Command) are forked from this thread and inherit ns.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread on purpose (see above).
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// newNamedNS creates a network namespace bind-mounted at /run/netns/name (the
// layout `ip netns` uses) and returns a handle to it. The creating thread is
// discarded like in inNS.
func newNamedNS(name string) (netns.NsHandle, error) {
	type res struct {
		h   netns.NsHandle
		err error
	}
	c := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		c <- res{h, err}
	}()
	r := <-c
	return r.h, r.err
}

// rebindName makes /run/netns/name hold the network namespace of process
// pid when it holds no namespace (an empty mount-point file left by a bind
// mount that is gone). A name that holds a namespace is left alone.
func rebindName(name string, pid int) error {
	path := filepath.Join(netnsDir, name)
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if !errors.Is(err, unix.ENOENT) {
			return err
		}
		if err := ensureNetnsDir(); err != nil {
			return err
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if err != nil {
			return err
		}
		f.Close()
	} else if st.Type == unix.NSFS_MAGIC {
		return nil
	}
	src := fmt.Sprintf("/proc/%d/ns/net", pid)
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s to %s: %w", src, path, err)
	}
	return nil
}

// ListenTCP opens a TCP listener on addr inside the network namespace at
// nsPath: the socket belongs to the namespace for its whole life, and is
// served from any goroutine afterwards.
func ListenTCP(nsPath, addr string) (net.Listener, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	var l net.Listener
	err = inNS(ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, nsPath, err)
	}
	return l, nil
}

// DialTCP connects to addr from inside the network namespace at nsPath:
// the connection leaves through the namespace's routes and firewall (a
// sandbox's egress chain). The dialling thread is discarded afterwards,
// as in inNS.
func DialTCP(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	var c net.Conn
	err = inNS(ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}
