package guestinit

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

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
		if err := LoadModules(ModulesDir, cl.ModuleParams, l.printf); err != nil {
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

// Restart backoff for envd: a daemon that keeps dying right away is
// restarted at most every maxBackoff; one that ran for a while is
// restarted at once.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	stableRun  = 10 * time.Second
)

// supervise runs envd, restarts it when it exits, reaps every other child
// (orphans re-parented to PID 1), and powers off on a shutdown signal.
// Reaping and starting happen in this one goroutine so a fast-exiting envd
// cannot be reaped before its PID is known. It only returns via powerOff.
func supervise(l *logger, envd string, env []string) {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGPWR, unix.SIGUSR1, unix.SIGUSR2, unix.SIGHUP)
	var (
		pid     int
		started time.Time
		backoff = minBackoff
		restart = time.NewTimer(0) // start now
	)
	for {
		select {
		case <-restart.C:
			p, err := startEnvd(envd, env)
			if err != nil {
				l.printf("start %s: %v (retry in %s)", envd, err, backoff)
				restart.Reset(backoff)
				backoff = min(2*backoff, maxBackoff)
				continue
			}
			pid, started = p, time.Now()
			l.printf("envd pid %d at %.3fs", pid, uptime().Seconds())
			fmt.Fprintln(os.Stderr, EnvdStartedMarker)
		case s := <-sigs:
			switch s {
			case unix.SIGCHLD:
				if reapAll(pid) && pid != 0 {
					ran := time.Since(started)
					l.printf("envd exited after %s", ran.Round(time.Millisecond))
					pid = 0
					if ran >= stableRun {
						backoff = minBackoff
					}
					restart.Reset(backoff)
					backoff = min(2*backoff, maxBackoff)
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

// reapAll collects every exited child; it reports whether watched exited.
func reapAll(watched int) bool {
	hit := false
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || p <= 0 {
			return hit
		}
		if p == watched {
			hit = true
		}
	}
}

func startEnvd(path string, env []string) (int, error) {
	return syscall.ForkExec(path, []string{path}, &syscall.ProcAttr{
		Dir:   "/",
		Env:   env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
}
