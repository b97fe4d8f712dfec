// Package vmmproc runs a VMM binary as a child process: in its own process
// group (so a kill takes any helpers with it and a terminal signal to the
// agent does not), optionally inside a network namespace, with a pid file,
// and reaped exactly once so no zombie is left behind.
package vmmproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"github.com/vishvananda/netns"
)

// Process is a started VMM process.
type Process struct {
	cmd     *exec.Cmd
	pidFile string
	done    chan struct{}
	err     error // set before done is closed
	once    sync.Once
}

// Start starts cmd in its own process group inside the network namespace at
// netnsPath (empty: the caller's) and writes its pid to pidFile (empty: no
// pid file). cmd's Stdout/Stderr should be *os.File (or nil) so no copying
// goroutines outlive the process.
//
// Why setns on a locked thread rather than a re-exec helper: Linux forks the
// child from the calling thread, and the child inherits that thread's
// network namespace. Go's os/exec forks from the goroutine's current thread,
// so locking the goroutine to its thread, switching that one thread into the
// namespace, starting the command and switching back is enough and costs no
// extra exec. If switching back fails the thread is left locked; the Go
// runtime then destroys it when the goroutine exits instead of reusing a
// thread in the wrong namespace. (SysProcAttr has no "join this netns"
// option, only Cloneflags for new namespaces.)
//
// No Pdeathsig: Linux ties it to the parent *thread*, and Go threads come
// and go, which would kill VMs at random. The agent stops or pauses its VMs
// explicitly and re-adopts them by pid file after a restart.
func Start(cmd *exec.Cmd, netnsPath, pidFile string) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := startIn(cmd, netnsPath); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, pidFile: pidFile, done: make(chan struct{})}
	if pidFile != "" {
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
			_ = p.Kill()
			<-p.reap()
			return nil, fmt.Errorf("write pid file: %w", err)
		}
	}
	go p.reap()
	return p, nil
}

func startIn(cmd *exec.Cmd, nsPath string) error {
	if nsPath == "" {
		return cmd.Start()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", nsPath, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", nsPath, err)
			return
		}
		startErr := cmd.Start()
		if err := netns.Set(orig); err != nil {
			// Thread stays locked and dies with this goroutine.
			if startErr == nil {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				_ = cmd.Wait()
			}
			errc <- fmt.Errorf("leave netns %s: %w", nsPath, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- startErr
	}()
	return <-errc
}

// reap waits for the process exactly once and removes the pid file.
func (p *Process) reap() <-chan struct{} {
	p.once.Do(func() {
		p.err = p.cmd.Wait()
		if p.pidFile != "" {
			_ = os.Remove(p.pidFile)
		}
		close(p.done)
	})
	return p.done
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has been reaped.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the exit status (valid after Done).
func (p *Process) Err() error { return p.err }

// Wait blocks until the process exits or ctx ends.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kill sends SIGKILL to the whole process group.
func (p *Process) Kill() error {
	if p.Exited() {
		return nil
	}
	err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// KillAndWait kills the process group and waits until it is reaped.
func (p *Process) KillAndWait(ctx context.Context) error {
	if err := p.Kill(); err != nil {
		return fmt.Errorf("kill %d: %w", p.PID(), err)
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
