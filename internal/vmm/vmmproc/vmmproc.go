// Package vmmproc runs a VMM binary as a child process: in its own session
// and process group (so a kill takes any helpers with it, and neither a
// terminal signal nor the agent's own death reaches it), optionally inside a network namespace and a private mount
// namespace (Mounts: files bound at fixed paths), with a pid file, and
// reaped exactly once so no zombie is left behind.
package vmmproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Process is a started or adopted VMM process.
type Process struct {
	pid     int
	wait    func() error // blocks until the process has exited
	pidFile string
	done    chan struct{}
	err     error // set before done is closed
	once    sync.Once
}

// ErrAdoptedExit is the exit status of an adopted process: it is not this
// process's child, so its status cannot be collected.
var ErrAdoptedExit = errors.New("exited (status unknown: started by an earlier agent)")

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
	return StartWith(cmd, Options{NetNS: netnsPath, PIDFile: pidFile})
}

// Options say where and how a VMM process starts.
type Options struct {
	NetNS   string // network namespace path; empty: the caller's
	PIDFile string // empty: no pid file
	// Mounts, when set, runs the process in its own mount namespace with
	// these files bound at fixed paths (see Mounts).
	Mounts *Mounts
	// Cgroup, when set, receives the process right after it started
	// (before the caller talks to it); failing that, the process is killed.
	Cgroup interface{ Add(pid int) error }
}

// Mounts describes a per-process mount namespace in which a fixed
// directory holds files of the caller's choosing, so that a path recorded
// by the VMM (Firecracker's drive path_on_host, saved in its snapshots) is
// the same for every VM and every restore while each VM sees its own file.
//
// In the new namespace (a copy of the caller's, made MS_REC|MS_SLAVE first
// so that nothing propagates back to the host while host mounts and
// unmounts still propagate in: a private copy would pin unmounted host
// file systems for the VM's lifetime) a fresh, tiny tmpfs covers Dir, one
// empty file per entry of Files is created in it, and each Source is
// bind-mounted onto its file. The host's Dir stays an empty directory
// (created if missing): no mount-point files are shared between VMs, no
// cleanup is needed on the host, and the namespace with all its mounts
// disappears with the last process in it.
type Mounts struct {
	Dir   string
	Files []BindFile
}

// BindFile is one file bound into Mounts.Dir.
type BindFile struct {
	Name   string // a plain file name inside Dir
	Source string // the host file bound onto Dir/Name (opened by path in the caller's namespace)
}

// Path returns where the process sees the file named name.
func (m *Mounts) Path(name string) string { return filepath.Join(m.Dir, name) }

func (m *Mounts) validate() error {
	if !filepath.IsAbs(m.Dir) || filepath.Clean(m.Dir) == "/" {
		return fmt.Errorf("mount dir %q: must be an absolute path below /", m.Dir)
	}
	for _, f := range m.Files {
		if f.Name == "" || f.Name != filepath.Base(f.Name) || f.Name == "." || f.Name == ".." {
			return fmt.Errorf("bind file name %q: must be a plain file name", f.Name)
		}
		if !filepath.IsAbs(f.Source) {
			return fmt.Errorf("bind source %q: must be absolute", f.Source)
		}
	}
	return nil
}

// StartWith is Start with Options.
//
// Why a locked thread and not a re-exec helper for Mounts as well: mount
// namespaces, like network namespaces, belong to a thread (unshare(2) with
// CLONE_NEWNS also unshares the thread's fs_struct, so a single thread of
// a multi-threaded process may do it), and the child of cmd.Start inherits
// the namespaces of the thread it is forked from. So one locked thread
// unshares, sets up the mounts and starts the command; that thread is then
// never unlocked, and the Go runtime destroys it when its goroutine ends
// instead of reusing a thread in a foreign namespace (the runtime also never
// clones new threads from a locked one: it uses its template thread). This
// works for any binary the agent happens to be (the hearth binary, a test
// binary) without a hidden entry point in main and costs no extra exec;
// SysProcAttr.Unshareflags cannot do it, as the bind mounts must happen
// after the unshare and before the exec, in the child.
func StartWith(cmd *exec.Cmd, o Options) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// A new session makes the process a group leader too (kill(-pid)
	// reaches its helpers) and detaches it from the agent's terminal: a
	// VMM must outlive an agent that crashes or restarts, to be adopted.
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setpgid = false
	var err error
	if o.Mounts != nil {
		err = startInMountNS(cmd, o.NetNS, o.Mounts)
	} else {
		err = startIn(cmd, o.NetNS)
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	pidFile := o.PIDFile
	p := &Process{pid: cmd.Process.Pid, wait: cmd.Wait, pidFile: pidFile, done: make(chan struct{})}
	if o.Cgroup != nil {
		if err := o.Cgroup.Add(cmd.Process.Pid); err != nil {
			_ = p.Kill()
			<-p.reap()
			return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
		}
	}
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

// startInMountNS starts cmd from a throw-away locked thread that joined
// netnsPath (if any) and unshared a mount namespace set up as m says.
func startInMountNS(cmd *exec.Cmd, netnsPath string, m *Mounts) error {
	if err := m.validate(); err != nil {
		return err
	}
	// The mount point must exist on the host (a tmpfs covers it only inside).
	if err := os.MkdirAll(m.Dir, 0o755); err != nil {
		return fmt.Errorf("mount dir: %w", err)
	}
	return onDisposableThread(func() error {
		if netnsPath != "" {
			target, err := netns.GetFromPath(netnsPath)
			if err != nil {
				return fmt.Errorf("open netns %s: %w", netnsPath, err)
			}
			defer target.Close()
			if err := netns.Set(target); err != nil {
				return fmt.Errorf("enter netns %s: %w", netnsPath, err)
			}
		}
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("unshare mount namespace (needs CAP_SYS_ADMIN): %w", err)
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
			return fmt.Errorf("make / a slave mount: %w", err)
		}
		if err := unix.Mount("tmpfs", m.Dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=16k,nr_inodes=64"); err != nil {
			return fmt.Errorf("tmpfs on %s: %w", m.Dir, err)
		}
		for _, f := range m.Files {
			target := m.Path(f.Name)
			fd, err := unix.Open(target, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
			if err != nil {
				return fmt.Errorf("mount point %s: %w", target, err)
			}
			unix.Close(fd)
			if err := unix.Mount(f.Source, target, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind %s onto %s: %w", f.Source, target, err)
			}
		}
		return cmd.Start()
	})
}

// onDisposableThread runs fn on a locked OS thread that is destroyed
// afterwards, for changes to a thread's kernel state that cannot be undone
// (a mount namespace: setns back would reset the thread's root and working
// directory and leave it with its own fs_struct). The thread must not be
// the main thread: the Go runtime cannot end that one and parks it for
// good instead, and the main thread's namespaces are what /proc/self shows
// to every reader of /proc/self/mountinfo, ns/mnt and the like. A goroutine
// that finds itself on the main thread keeps it locked and hands fn to a
// second goroutine, which then cannot be scheduled there.
func onDisposableThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			// Never unlocked: the thread exits with this goroutine.
			errc <- fn()
			return
		}
		inner := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // not the main thread: the outer goroutine holds it
			inner <- fn()
		}()
		err := <-inner
		runtime.UnlockOSThread() // fn did not run here: the main thread is unchanged
		errc <- err
	}()
	return <-errc
}

// reap waits for the process exactly once and removes the pid file.
func (p *Process) reap() <-chan struct{} {
	p.once.Do(func() {
		p.err = p.wait()
		if p.pidFile != "" {
			_ = os.Remove(p.pidFile)
		}
		close(p.done)
	})
	return p.done
}

// PID returns the process id.
func (p *Process) PID() int { return p.pid }

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
	err := syscall.Kill(-p.pid, syscall.SIGKILL)
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

// Adopt takes over a VMM process that an earlier agent started (so not a
// child of this one) and that is still running: its exit is observed
// through a pidfd, which, unlike a pid, cannot come to name another
// process. pidFile is removed once the process has exited.
func Adopt(pid int, pidFile string) (*Process, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("adopt pid %d: %w", pid, err)
	}
	p := &Process{pid: pid, pidFile: pidFile, done: make(chan struct{}), wait: func() error {
		defer unix.Close(fd)
		// A pidfd polls readable once the process has exited.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if err == nil && fds[0].Revents != 0 {
				return ErrAdoptedExit
			}
			if err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("watch pid %d: %w", pid, err)
			}
		}
	}}
	go p.reap()
	return p, nil
}
