package guestinit

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ServicesDir holds executables an image wants running beside envd (the
// code-interpreter image's server): the init starts each after envd, with
// envd's environment, as root, and restarts it when it exits.
const ServicesDir = "/etc/hearth/services"

// baseEnv is the environment envd (and so every sandbox command) starts
// with; envd's /init call adds the user's variables on top.
var baseEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"USER=root",
	"LANG=C.UTF-8",
	"TERM=xterm-256color",
}

// stage2 is the init of the root filesystem. It returns only on a fatal
// setup error.
func stage2(l *logger) error {
	if err := mountAll(earlyMounts); err != nil {
		return err
	}
	l.ensureConsole()
	// Root may come up read-only (kernel "ro" default without initramfs).
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_NOATIME, ""); err != nil {
		l.printf("remount / rw: %v", err)
	}
	if err := mountAll(systemMounts); err != nil {
		l.printf("%v", err) // a missing cgroup2 or shm is not worth a dead VM
	}
	makeDevLinks()
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read cmdline: %w", err)
	}
	cl, err := ParseCmdline(string(raw))
	if err != nil {
		return err
	}
	l.debug = cl.Debug
	l.stepf("stage 2: mounts done")
	if _, err := os.Stat(ModulesDir); err == nil {
		if err := LoadModules(ModulesDir, cl, l.printf); err != nil {
			l.printf("%v", err)
		}
	}
	if err := unix.Sethostname([]byte(cl.Hostname)); err != nil {
		l.printf("hostname: %v", err)
	}
	_ = os.WriteFile("/etc/hostname", []byte(cl.Hostname+"\n"), 0o644)
	if err := writeHosts(cl.Hostname); err != nil {
		l.printf("/etc/hosts: %v", err)
	}
	l.stepf("stage 2: network")
	if err := configureNetwork(cl); err != nil {
		l.printf("network: %v", err) // envd still starts: the console shows why it is unreachable
	}
	if err := writeResolvConf(cl); err != nil {
		l.printf("resolv.conf: %v", err)
	}
	// A sandbox asked for its volumes (served over the network just
	// configured): booting without one would look like an empty volume,
	// so a failed mount is fatal (the console says why).
	if err := mountVolumes(cl.VolumeServer, cl.Volumes); err != nil {
		return err
	}
	os.Clearenv()
	for _, kv := range baseEnv {
		k, v, _ := cutEnv(kv)
		_ = os.Setenv(k, v)
	}
	_ = os.Chdir("/")
	l.stepf("stage 2: starting %s", cl.Envd)
	supervise(l, cl.Envd, baseEnv)
	return errors.New("supervisor returned")
}

func cutEnv(kv string) (string, string, bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}

// Restart backoff for envd and the services: a daemon that keeps dying
// right away is restarted at most every maxBackoff; one that ran for a
// while is restarted at once.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	stableRun  = 10 * time.Second
)

// program is one supervised daemon.
type program struct {
	path    string
	pid     int
	started time.Time
	backoff time.Duration
}

// supervise runs envd and the image's services (ServicesDir), restarts
// each when it exits, reaps every other child (orphans re-parented to PID
// 1), and powers off on a shutdown signal. Reaping and starting happen in
// this one goroutine so a fast-exiting program cannot be reaped before its
// PID is known (timers only post to due). It only returns via powerOff.
func supervise(l *logger, envd string, env []string) {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGPWR, unix.SIGUSR1, unix.SIGUSR2, unix.SIGHUP)
	progs := []*program{{path: envd, backoff: minBackoff}}
	for _, s := range services(l) {
		progs = append(progs, &program{path: s, backoff: minBackoff})
	}
	due := make(chan *program, len(progs))
	for _, p := range progs {
		due <- p // start now, envd first
	}
	for {
		select {
		case p := <-due:
			pid, err := startProgram(p.path, env)
			if err != nil {
				l.printf("start %s: %v (retry in %s)", p.path, err, p.backoff)
				p.retryLater(due)
				continue
			}
			p.pid, p.started = pid, time.Now()
			l.printf("%s pid %d at %.3fs", p.path, pid, uptime().Seconds())
			if p.path == envd {
				fmt.Fprintln(os.Stderr, EnvdStartedMarker)
			}
		case s := <-sigs:
			switch s {
			case unix.SIGCHLD:
				for _, p := range reapAll(progs) {
					ran := time.Since(p.started)
					l.printf("%s exited after %s", p.path, ran.Round(time.Millisecond))
					p.pid = 0
					if ran >= stableRun {
						p.backoff = minBackoff
					}
					p.retryLater(due)
				}
			case unix.SIGHUP:
				// ignored: a hang-up on the console must not stop the VM
			default:
				l.printf("signal %v", s)
				powerOff(l)
			}
		}
	}
}

// retryLater posts p to due after its backoff and doubles the backoff.
func (p *program) retryLater(due chan<- *program) {
	time.AfterFunc(p.backoff, func() { due <- p })
	p.backoff = min(2*p.backoff, maxBackoff)
}

// services lists the executables in ServicesDir, sorted by name.
func services(l *logger) []string {
	ents, err := os.ReadDir(ServicesDir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			l.printf("%s: %v", ServicesDir, err)
		}
		return nil
	}
	var out []string
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			continue
		}
		out = append(out, filepath.Join(ServicesDir, e.Name()))
	}
	return out
}

// reapAll collects every exited child; it returns the supervised
// programs among them.
func reapAll(progs []*program) []*program {
	var exited []*program
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || p <= 0 {
			return exited
		}
		for _, prog := range progs {
			if prog.pid == p {
				exited = append(exited, prog)
			}
		}
	}
}

func startProgram(path string, env []string) (int, error) {
	return syscall.ForkExec(path, []string{path}, &syscall.ProcAttr{
		Dir:   "/",
		Env:   env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
}
