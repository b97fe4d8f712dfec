//go:build vm

package e2e

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// holder is a python3 process that keeps a random secret in memory only
// (never written anywhere until asked), counts in a file every 100 ms and,
// on SIGUSR1, dumps "pid secret count" to /tmp/dump. A process restarted
// from scratch would have another secret; a frozen-and-thawed one has the
// same pid, the same secret and a count that continues.
const holderScript = `
import os, signal, time
secret = os.urandom(8).hex()
n = 0
def dump(sig, frame):
    with open("/tmp/dump.tmp", "w") as f:
        f.write("%d %s %d\n" % (os.getpid(), secret, n))
    os.rename("/tmp/dump.tmp", "/tmp/dump")
signal.signal(signal.SIGUSR1, dump)
while True:
    n += 1
    with open("/tmp/count.tmp", "w") as f:
        f.write(str(n))
    os.rename("/tmp/count.tmp", "/tmp/count")
    time.sleep(0.1)
`

type holderState struct {
	pid    int
	secret string
	count  int
}

// startHolder starts the holder in the background (its own session, output
// discarded, so exec returns) and returns its pid.
func startHolder(a *api, id string) int {
	a.t.Helper()
	r := a.exec(id, "sh", "-c", `setsid nohup python3 -c "$0" >/dev/null 2>&1 & echo $!`, holderScript)
	pid, err := strconv.Atoi(strings.TrimSpace(r.Stdout))
	if r.ExitCode != 0 || err != nil {
		a.t.Fatalf("start holder: %+v", r)
	}
	// Wait (no timing assertion: bounded poll) until it has counted.
	for range 100 {
		if a.exec(id, "sh", "-c", "test -s /tmp/count").ExitCode == 0 {
			return pid
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.t.Fatal("holder never wrote /tmp/count")
	return 0
}

// dumpHolder asks the holder for its in-memory state.
func dumpHolder(a *api, id string, pid int) holderState {
	a.t.Helper()
	script := `rm -f /tmp/dump; kill -USR1 "$0" || exit 7; for i in $(seq 100); do test -s /tmp/dump && exec cat /tmp/dump; sleep 0.05; done; exit 9`
	r := a.exec(id, "sh", "-c", script, strconv.Itoa(pid))
	f := strings.Fields(r.Stdout)
	if r.ExitCode != 0 || len(f) != 3 {
		a.t.Fatalf("dump holder %d: %+v", pid, r)
	}
	var s holderState
	s.pid, _ = strconv.Atoi(f[0])
	s.secret = f[1]
	s.count, _ = strconv.Atoi(f[2])
	return s
}

func readCount(a *api, id string) int {
	a.t.Helper()
	r := a.exec(id, "cat", "/tmp/count")
	n, err := strconv.Atoi(strings.TrimSpace(r.Stdout))
	if err != nil {
		a.t.Fatalf("count: %+v", r)
	}
	return n
}

// logConsoleOnFailure prints the tail of the guest console of sandbox id
// when the test fails (run before the destroy cleanup).
func logConsoleOnFailure(t *testing.T, id string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		b, _ := os.ReadFile(filepath.Join(stack.DataDir, "sandboxes", id, "vm", "console.log"))
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		t.Logf("console of %s:\n%s", id, b)
	})
}

// vmmPID is the pid of a running sandbox's VMM (from its pid file).
func vmmPID(t *testing.T, id string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stack.DataDir, "sandboxes", id, "vm", "vmm.pid"))
	if err != nil {
		t.Fatalf("VMM pid file of %s: %v", id, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// processAlive reports whether pid is a live process that belongs to the
// sandbox (its command line names the sandbox's run dir).
func processAlive(pid int, id string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(b, []byte(filepath.Join("sandboxes", id)+"/"))
}

// privateRAM reports whether VMM pid maps a RAM file from the sandbox's
// snapshot directory privately (lazy restore: the "p" of its mappings).
func privateRAM(t *testing.T, pid int, id string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		t.Fatalf("maps of VMM %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && strings.HasSuffix(f[1], "p") && strings.Contains(f[5], id) && strings.HasPrefix(filepath.Base(f[5]), "ram-") {
			return true
		}
	}
	return false
}

// ramFiles lists the tmpfs RAM files of sandbox id (a booted guest's RAM).
func ramFiles(id string) []string {
	m, _ := filepath.Glob(filepath.Join("/dev/shm", "hearth-*", id+".ram"))
	return m
}

func (a *api) status(id string) string {
	a.t.Helper()
	var sb sandbox
	if code := a.do("GET", "/v1/sandboxes/"+id, nil, &sb); code != http.StatusOK {
		a.t.Fatalf("get %s: %d", id, code)
	}
	return sb.Status
}

func (a *api) pause(id string) {
	a.t.Helper()
	var raw []byte
	if code := a.do("POST", "/v1/sandboxes/"+id+"/pause", nil, &raw); code != http.StatusOK {
		a.t.Fatalf("pause %s: %d %s", id, code, raw)
	}
}

func (a *api) resume(id string) {
	a.t.Helper()
	var raw []byte
	if code := a.do("POST", "/v1/sandboxes/"+id+"/resume", nil, &raw); code != http.StatusOK {
		a.t.Fatalf("resume %s: %d %s", id, code, raw)
	}
}

// Pause frees the VM (process and RAM gone) and resume brings back the
// same process with the same memory, its counter continuing, the disk
// intact; five times in a row.
func TestPauseResume(t *testing.T) {
	a := newAPI(t)
	sb := a.create(map[string]any{"template": "base", "memory_mb": 512})
	logConsoleOnFailure(t, sb.ID)
	pid := startHolder(a, sb.ID)
	want := dumpHolder(a, sb.ID, pid)
	if r := a.exec(sb.ID, "sh", "-c", "head -c 3000000 /dev/urandom > $HOME/blob && sha256sum $HOME/blob"); r.ExitCode != 0 {
		t.Fatalf("write file: %+v", r)
	}
	sum := a.exec(sb.ID, "sh", "-c", "sha256sum $HOME/blob").Stdout

	for round := 1; round <= 5; round++ {
		vmm := vmmPID(t, sb.ID)
		// A booted guest keeps its RAM in a tmpfs file of its own; a resumed
		// one maps its snapshot's RAM file copy-on-write (lazy restore) and
		// has none in tmpfs.
		wantTmpfs := 0
		if round == 1 {
			wantTmpfs = 1
		} else if !privateRAM(t, vmm, sb.ID) {
			t.Fatalf("round %d: resumed VMM %d does not map a snapshot RAM file copy-on-write", round, vmm)
		}
		if f := ramFiles(sb.ID); len(f) != wantTmpfs {
			t.Fatalf("round %d: running sandbox has tmpfs RAM files %v, want %d", round, f, wantTmpfs)
		}
		before := readCount(a, sb.ID)
		a.pause(sb.ID)
		if st := a.status(sb.ID); st != "paused" {
			t.Fatalf("round %d: status %q after pause", round, st)
		}
		if processAlive(vmm, sb.ID) {
			t.Fatalf("round %d: VMM process %d still alive while paused", round, vmm)
		}
		if f := ramFiles(sb.ID); len(f) != 0 {
			t.Fatalf("round %d: RAM files remain while paused: %v", round, f)
		}
		a.resume(sb.ID)
		if st := a.status(sb.ID); st != "running" {
			t.Fatalf("round %d: status %q after resume", round, st)
		}
		got := dumpHolder(a, sb.ID, pid)
		if got.pid != want.pid || got.secret != want.secret {
			t.Fatalf("round %d: holder %+v after resume, want pid %d secret %s (process restarted?)", round, got, want.pid, want.secret)
		}
		if got.count < before {
			t.Fatalf("round %d: count %d after resume, was %d before pause", round, got.count, before)
		}
		// It keeps counting from there.
		var later int
		for range 100 {
			if later = readCount(a, sb.ID); later > got.count {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if later <= got.count {
			t.Fatalf("round %d: counter stuck at %d after resume", round, later)
		}
		if s := a.exec(sb.ID, "sh", "-c", "sha256sum $HOME/blob").Stdout; s != sum {
			t.Fatalf("round %d: file changed: %q, want %q", round, s, sum)
		}
		t.Logf("round %d: count %d → %d", round, before, later)
	}
	// Pausing a paused sandbox is a conflict in the E2B API; destroying one
	// removes its snapshot files.
	a.pause(sb.ID)
	snapDir := filepath.Join(stack.DataDir, "sandboxes", sb.ID)
	if _, err := os.Stat(filepath.Join(snapDir, "snapshot")); err != nil {
		t.Fatalf("paused sandbox has no snapshot dir: %v", err)
	}
	if code := a.do("DELETE", "/v1/sandboxes/"+sb.ID, nil, nil); code != http.StatusNoContent && code != http.StatusOK {
		t.Fatalf("destroy paused: %d", code)
	}
	if _, err := os.Stat(snapDir); !os.IsNotExist(err) {
		t.Fatalf("run dir with snapshot remains after destroy: %v", err)
	}
	if f := ramFiles(sb.ID); len(f) != 0 {
		t.Fatalf("RAM files remain after destroy: %v", f)
	}
}
