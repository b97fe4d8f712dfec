package vmmproc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStartInNetNSOwnGroupNoZombie starts a process inside a fresh network
// namespace and checks: it is in that namespace (not ours), it leads its own
// process group, the pid file exists while it runs, and after KillAndWait it
// is gone entirely (reaped, no zombie) and the pid file is removed.
func TestStartInNetNSOwnGroupNoZombie(t *testing.T) {
	name := "hearth-vmmproc-test-" + strconv.Itoa(os.Getpid())
	// ip(8) creates the namespace without touching this process's threads.
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("needs root and ip(8) to create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	nsPath := filepath.Join("/run/netns", name)

	pidFile := filepath.Join(t.TempDir(), "vmm.pid")
	cmd := exec.Command("sleep", "60")
	p, err := Start(cmd, nsPath, pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	link := func(path string) string {
		s, err := os.Readlink(path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got, want := link("/proc/"+strconv.Itoa(pid)+"/ns/net"), netnsID(t, nsPath); got != want {
		t.Fatalf("child netns %s, want %s", got, want)
	}
	if got, self := link("/proc/"+strconv.Itoa(pid)+"/ns/net"), link("/proc/self/ns/net"); got == self {
		t.Fatal("child runs in the test's own netns")
	}
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		t.Fatalf("pgid %d (%v), want own group %d", pgid, err, pid)
	}
	if sid, err := unix.Getsid(pid); err != nil || sid != pid {
		t.Fatalf("session %d (%v), want own session %d (the VMM must outlive the agent)", sid, err, pid)
	}
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
		t.Fatalf("pid file %q %v", b, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.KillAndWait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Fatalf("pid %d still exists (zombie?): %v", pid, err)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Fatalf("pid file left: %v", err)
	}
	if err := p.Kill(); err != nil {
		t.Fatalf("Kill after exit: %v", err)
	}
}

func netnsID(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return "net:[" + strconv.FormatUint(st.Ino, 10) + "]"
}

func TestStartBadNetNS(t *testing.T) {
	t.Parallel()
	_, err := Start(exec.Command("true"), "/nonexistent/netns", "")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/netns") {
		t.Fatalf("Start = %v, want an error naming the netns", err)
	}
}

// TestAdoptWatchesAndKills adopts a process that is not this test's child
// (as a restarted agent finds its VMMs): Done stays open while it runs,
// KillAndWait kills its whole group and returns once it is gone, and the
// pid file is removed.
func TestAdoptWatchesAndKills(t *testing.T) {
	// sh starts sleep in its own session and exits: sleep is reparented
	// away from the test, like a VMM whose agent died.
	out, err := exec.Command("sh", "-c", "setsid sleep 60 >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	pidFile := filepath.Join(t.TempDir(), "vmm.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Adopt(pid, pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if p.PID() != pid {
		t.Fatalf("PID %d, want %d", p.PID(), pid)
	}
	select {
	case <-p.Done():
		t.Fatal("adopted process reported exited while running")
	case <-time.After(200 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.KillAndWait(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(p.Err(), ErrAdoptedExit) {
		t.Fatalf("exit status %v, want ErrAdoptedExit", p.Err())
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Fatalf("pid file after exit: %v", err)
	}
}
