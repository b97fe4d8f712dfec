package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// virtiofsdPaths are where Debian puts the daemon: QEMU 7.2's C daemon
// (qemu-system-common) and the Rust one (package virtiofsd, bookworm
// backports and later).
var virtiofsdPaths = []string{"/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd", "/usr/lib/virtiofsd"}

// FindVirtiofsd returns the virtio-fs daemon of this host.
func FindVirtiofsd() (string, error) {
	for _, p := range virtiofsdPaths {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath("virtiofsd"); err == nil {
		return p, nil
	}
	return "", errors.New("no virtiofsd found (install qemu-system-common, or the virtiofsd package)")
}

// Daemon is one running virtiofsd serving one volume to one VM. It
// runs in its own session, like the VMMs, so it outlives a crashed agent
// together with the VM it serves; it exits by itself when that VM's
// vhost-user connection closes.
type Daemon struct {
	cmd     *exec.Cmd
	PIDFile string
	done    chan struct{}
}

// DaemonSpec says what to serve where.
type DaemonSpec struct {
	Binary  string
	Dir     string // the shared directory
	Socket  string // the vhost-user socket to listen on
	PIDFile string // recorded for crash recovery
	Log     string // the daemon's stderr
}

// StartDaemon starts virtiofsd and waits until its socket accepts (the
// VMM connects at start and fails without it). The daemon sandboxes
// itself: namespaces (mount, pid, net) with pivot_root into the shared
// directory, a seccomp filter and a reduced capability set; it must start
// as root for that, and for keeping the guest's file owners.
func StartDaemon(ctx context.Context, s DaemonSpec) (*Daemon, error) {
	_ = os.Remove(s.Socket) // stale from a crash
	logf, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("virtiofsd log: %w", err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(s.Binary,
		"--socket-path="+s.Socket,
		"-o", "source="+s.Dir,
		"-o", "sandbox=namespace",
		"-o", "cache=auto",
		// No device nodes or file capabilities from a guest on the host.
		"-o", "modcaps=-mknod:-setfcap",
		"-o", "no_posix_lock", "-o", "no_flock", "-o", "no_xattr",
		"-o", "log_level=warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start virtiofsd: %w", err)
	}
	d := &Daemon{cmd: cmd, PIDFile: s.PIDFile, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(d.done) }()
	if err := os.WriteFile(s.PIDFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		d.Stop()
		return nil, fmt.Errorf("virtiofsd pid file: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-d.done:
			b, _ := os.ReadFile(s.Log)
			return nil, fmt.Errorf("virtiofsd exited at start: %s", tail(b))
		default:
		}
		if _, err := os.Stat(s.Socket); err == nil {
			// The socket exists once virtiofsd listens on it; a connect
			// here would be its one vhost-user client.
			return d, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			d.Stop()
			return nil, fmt.Errorf("virtiofsd did not listen on %s within 10s", s.Socket)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop kills the daemon and waits for it; idempotent.
func (d *Daemon) Stop() {
	_ = d.cmd.Process.Kill()
	<-d.done
	_ = os.Remove(d.PIDFile)
}

func tail(b []byte) string {
	if len(b) > 300 {
		b = b[len(b)-300:]
	}
	return string(b)
}

// PIDFiles returns the daemon pid files in dir (crash recovery kills what
// they name).
func PIDFiles(dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "virtiofsd-*.pid"))
	return m
}
