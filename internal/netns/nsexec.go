package netns

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
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
