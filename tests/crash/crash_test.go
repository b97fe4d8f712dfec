//go:build vm

// Package crash kills a real `hearth dev` process with SIGKILL in the
// middle of every lifecycle operation (at the agent's crash points, see
// agent.CrashSteps, and with no operation in flight), starts it again on
// the same data dir and checks that the sandbox is still there and usable:
// the same guest process with the same in-memory secret, its files, and a
// state the store and the host agree on. It needs root and guest images
// built by `hearth image build --data-dir $HEARTH_IMAGES_DIR`.
package crash

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/image"
)

var (
	hearthBin string
	imagesDir string
)

func TestMain(m *testing.M) {
	imagesDir = os.Getenv("HEARTH_IMAGES_DIR")
	switch {
	case imagesDir == "":
		fmt.Println("SKIP tests/crash: set HEARTH_IMAGES_DIR to a data dir with built images")
		return
	case os.Geteuid() != 0:
		fmt.Println("SKIP tests/crash: needs root (network namespaces, tap and loop devices)")
		return
	}
	if _, err := os.Stat(image.KernelPath(imagesDir)); err != nil {
		fmt.Printf("SKIP tests/crash: no guest kernel in %s\n", imagesDir)
		return
	}
	dir, err := os.MkdirTemp("", "hearth-crash-bin-")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	hearthBin = filepath.Join(dir, "hearth")
	build := exec.Command("go", "build", "-o", hearthBin, "./cmd/hearth")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Printf("build hearth: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// dev is one `hearth dev` process on a data dir that outlives it.
type dev struct {
	t      *testing.T
	data   string
	listen string
	url    string
	key    string
	cmd    *exec.Cmd
	done   chan struct{}
	log    *bytes.Buffer
}

func newDev(t *testing.T) *dev {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d := &dev{t: t, data: t.TempDir(), listen: addr, url: "http://" + addr, log: &bytes.Buffer{}}
	t.Cleanup(d.teardown)
	return d
}

// start runs hearth dev, killing itself at crashAt ("" = never), and waits
// until it serves.
func (d *dev) start(crashAt string) {
	d.t.Helper()
	// No code-interpreter-v1 bake: its sandbox would reach the crash
	// points (and the leak inventory) before the test's own.
	d.cmd = exec.Command(hearthBin, "dev", "--data-dir", d.data, "--listen", d.listen, "--images-from", imagesDir, "--code-interpreter=false")
	d.cmd.Env = append(os.Environ(), "HEARTH_CRASH_AT="+crashAt)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.done = make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-d.done:
			d.t.Fatalf("hearth dev exited during start-up:\n%s", d.tail())
		default:
		}
		if b, err := os.ReadFile(filepath.Join(d.data, "dev-credentials.json")); err == nil {
			var c struct {
				APIKey string `json:"api_key"`
			}
			if json.Unmarshal(b, &c) == nil && c.APIKey != "" {
				if resp, err := http.Get(d.url + "/healthz"); err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						d.key = c.APIKey
						return
					}
				}
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("hearth dev not serving after 2 minutes:\n%s", d.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitCrashed waits for the process to die at its crash point.
func (d *dev) waitCrashed() {
	d.t.Helper()
	select {
	case <-d.done:
	case <-time.After(3 * time.Minute):
		d.t.Fatalf("hearth dev did not crash at its crash point:\n%s", d.tail())
	}
	if st, ok := d.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || st.Signal() != syscall.SIGKILL {
		d.t.Fatalf("hearth dev ended with %v, want SIGKILL at the crash point:\n%s", d.cmd.ProcessState, d.tail())
	}
}

func (d *dev) kill() {
	_ = d.cmd.Process.Kill()
	<-d.done
}

// stop ends hearth dev gracefully (SIGTERM), as an operator's restart does.
func (d *dev) stop() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(2 * time.Minute):
		d.t.Fatalf("hearth dev did not stop on SIGTERM:\n%s", d.tail())
	}
}

func (d *dev) tail() string {
	s := d.log.String()
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	return s
}

func (d *dev) teardown() {
	if d.cmd != nil && d.cmd.ProcessState == nil {
		d.stop()
	}
	if d.t.Failed() {
		d.t.Logf("hearth dev log:\n%s", d.tail())
	}
	// A clean start on the data dir destroys nothing; the last process
	// paused its sandboxes. Remove them with their files.
	d.start("")
	var list []sandbox
	d.do("GET", "/v1/sandboxes", nil, &list)
	for _, sb := range list {
		d.do("DELETE", "/v1/sandboxes/"+sb.ID, nil, nil)
	}
	d.stop()
	out, _ := exec.Command("findmnt", "-rn", "-o", "TARGET").Output()
	for _, m := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(m, d.data+"/") {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}
}

type sandbox struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Error  string `json:"error"`
}

// do sends a /v1 request; a transport error (the process died) is status 0.
func (d *dev) do(method, path string, body, out any) int {
	d.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.url+path, rd)
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("X-API-Key", d.key)
	req.Header.Set("Content-Type", "application/json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		_ = json.Unmarshal(b, out)
	}
	return resp.StatusCode
}

func (d *dev) get(id string) sandbox {
	d.t.Helper()
	var sb sandbox
	if code := d.do("GET", "/v1/sandboxes/"+id, nil, &sb); code != http.StatusOK {
		d.t.Fatalf("get %s: status %d", id, code)
	}
	return sb
}

// sh runs a shell script in the sandbox and returns its stdout.
func (d *dev) sh(id, script string) string {
	d.t.Helper()
	var r struct {
		Stdout   string `json:"stdout"`
		Stderr   string `json:"stderr"`
		ExitCode int    `json:"exit_code"`
	}
	if code := d.do("POST", "/v1/sandboxes/"+id+"/exec", map[string]any{"cmd": "/bin/sh", "args": []string{"-c", script}}, &r); code != http.StatusOK || r.ExitCode != 0 {
		d.t.Fatalf("exec %q in %s: status %d %+v", script, id, code, r)
	}
	return strings.TrimSpace(r.Stdout)
}

// holder starts a shell loop that keeps a random secret in its memory
// only and writes "pid secret count" to /tmp/holder every 100 ms, and a
// file on disk; it returns the loop's first record.
func (d *dev) holder(id string) []string {
	d.t.Helper()
	d.sh(id, `echo kept > "$HOME/file" || exit 9; S=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n'); `+
		`(n=0; while :; do n=$((n+1)); echo "$$ $S $n" > /tmp/h.tmp; mv /tmp/h.tmp /tmp/holder; sleep 0.1; done) >/dev/null 2>&1 &`)
	for range 100 {
		if f := strings.Fields(d.sh(id, "cat /tmp/holder 2>/dev/null || true")); len(f) == 3 {
			return f
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.t.Fatal("the holder never wrote /tmp/holder")
	return nil
}

// checkHolder asserts that the guest still runs the same holder (same pid
// and secret, counting on) and still has its file.
func (d *dev) checkHolder(id string, was []string) {
	d.t.Helper()
	var now []string
	for range 50 {
		now = strings.Fields(d.sh(id, "cat /tmp/holder"))
		if len(now) == 3 && now[2] != was[2] {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(now) != 3 || now[0] != was[0] || now[1] != was[1] {
		d.t.Fatalf("holder %v, want pid %s and secret %s: the guest's memory was lost", now, was[0], was[1])
	}
	if n, _ := strconv.Atoi(now[2]); n <= func() int { v, _ := strconv.Atoi(was[2]); return v }() {
		d.t.Fatalf("holder count %s, was %s: it is not running", now[2], was[2])
	}
	if f := d.sh(id, `cat "$HOME/file"`); f != "kept" {
		d.t.Fatalf("file on disk: %q", f)
	}
}

// settled waits for the sandbox to reach a stable state and returns it.
func (d *dev) settled(id string) sandbox {
	d.t.Helper()
	var sb sandbox
	for range 300 {
		sb = d.get(id)
		switch sb.Status {
		case "running", "paused", "error", "stopped":
			return sb
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.t.Fatalf("sandbox %s still %s after 30 s", id, sb.Status)
	return sb
}

func (d *dev) create() string {
	d.t.Helper()
	var sb sandbox
	if code := d.do("POST", "/v1/sandboxes", map[string]any{"template": "tiny", "memory_mb": 256, "vcpus": 1}, &sb); code != http.StatusCreated {
		d.t.Fatalf("create: status %d\n%s", code, d.tail())
	}
	return sb.ID
}

// vmmProcesses counts QEMU processes that belong to this data dir.
func (d *dev) vmmProcesses() int {
	out, _ := exec.Command("pgrep", "-f", "qemu-system.*"+d.data).Output()
	return len(strings.Fields(string(out)))
}

// captureLeftovers lists the files of cut-short captures (root-disk clones,
// RAM and state copies: named .capture-*) in the data dir.
func (d *dev) captureLeftovers() []string {
	var left []string
	filepath.WalkDir(d.data, func(p string, e fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(e.Name(), ".capture-") {
			left = append(left, p)
		}
		return nil
	})
	return left
}

// TestCrashDuringOperations: for every crash point of pause, resume and
// snapshot, and with nothing in flight, the sandbox survives a SIGKILL of
// hearth dev: after a restart it is running or paused (as far as the
// operation got), the store agrees, and once running it has the same
// guest process, secret and files.
func TestCrashDuringOperations(t *testing.T) {
	for _, tc := range []struct {
		step string // crash point; "" kills with no operation in flight
		op   string // "pause", "resume", "snapshot" or "" (none)
		want string // state after the restart
	}{
		{step: "", op: "", want: "running"},
		{step: "pause:started", op: "pause", want: "running"},
		{step: "snapshot:state", op: "pause", want: "running"},
		{step: "snapshot:committed", op: "pause", want: "paused"},
		{step: "pause:vm-stopped", op: "pause", want: "paused"},
		{step: "resume:started", op: "resume", want: "paused"},
		{step: "restore:vm-started", op: "resume", want: "running"},
		{step: "resume:initialized", op: "resume", want: "running"},
		// A snapshot of a running sandbox does not pause it: cut short
		// while the guest stands still, or after, it runs on.
		{step: "capture:frozen", op: "snapshot", want: "running"},
		{step: "template:written", op: "snapshot", want: "running"},
	} {
		name := tc.step
		if name == "" {
			name = "no-operation"
		}
		t.Run(strings.ReplaceAll(name, ":", "-"), func(t *testing.T) {
			d := newDev(t)
			d.start(tc.step)
			id := d.create()
			was := d.holder(id)
			if tc.op == "resume" {
				if code := d.do("POST", "/v1/sandboxes/"+id+"/pause", nil, nil); code != http.StatusOK {
					t.Fatalf("pause before the resume: %d", code)
				}
			}
			switch tc.op {
			case "":
				d.kill()
			case "pause", "resume":
				d.do("POST", "/v1/sandboxes/"+id+"/"+tc.op, nil, nil)
				d.waitCrashed()
			case "snapshot":
				d.do("POST", "/v1/snapshots", map[string]any{"sandbox_id": id, "name": "crash-tpl"}, nil)
				d.waitCrashed()
			}
			d.start("")
			sb := d.settled(id)
			if sb.Status != tc.want {
				t.Fatalf("after the restart: %s (%s), want %s", sb.Status, sb.Error, tc.want)
			}
			if left := d.captureLeftovers(); len(left) > 0 {
				t.Fatalf("a capture cut short left %q after the restart", left)
			}
			if sb.Status == "paused" {
				if code := d.do("POST", "/v1/sandboxes/"+id+"/resume", nil, nil); code != http.StatusOK {
					t.Fatalf("resume after the restart: %d", code)
				}
			}
			d.checkHolder(id, was)
			// And it keeps working through a full cycle.
			if code := d.do("POST", "/v1/sandboxes/"+id+"/pause", nil, nil); code != http.StatusOK {
				t.Fatalf("pause after recovery: %d", code)
			}
			if code := d.do("POST", "/v1/sandboxes/"+id+"/resume", nil, nil); code != http.StatusOK {
				t.Fatalf("resume after recovery: %d", code)
			}
			d.checkHolder(id, was)
		})
	}
}

// TestCrashDuringCreateAndDestroy: a create cut short leaves no VM and no
// row that blocks anything; a destroy cut short finishes on the retry.
func TestCrashDuringCreateAndDestroy(t *testing.T) {
	t.Run("create", func(t *testing.T) {
		d := newDev(t)
		d.start("create:vm-started")
		d.do("POST", "/v1/sandboxes", map[string]any{"template": "tiny", "memory_mb": 256, "vcpus": 1}, nil)
		d.waitCrashed()
		d.start("")
		var list []sandbox
		d.do("GET", "/v1/sandboxes", nil, &list)
		for _, sb := range list {
			if sb.Status == "running" || sb.Status == "creating" {
				t.Fatalf("a create cut short left %+v", sb)
			}
			if code := d.do("DELETE", "/v1/sandboxes/"+sb.ID, nil, nil); code != http.StatusNoContent && code != http.StatusOK {
				t.Fatalf("delete %s (%s) after the crash: %d", sb.ID, sb.Status, code)
			}
		}
		if n := d.vmmProcesses(); n != 0 {
			t.Fatalf("%d VMM processes left by a create cut short", n)
		}
		id := d.create()
		if out := d.sh(id, "echo ok"); out != "ok" {
			t.Fatalf("create after the crash: %q", out)
		}
	})
	t.Run("destroy", func(t *testing.T) {
		d := newDev(t)
		d.start("destroy:started")
		id := d.create()
		d.do("DELETE", "/v1/sandboxes/"+id, nil, nil)
		d.waitCrashed()
		d.start("")
		if code := d.do("DELETE", "/v1/sandboxes/"+id, nil, nil); code != http.StatusNoContent && code != http.StatusOK && code != http.StatusNotFound {
			t.Fatalf("delete again after the crash: %d", code)
		}
		if code := d.do("GET", "/v1/sandboxes/"+id, nil, nil); code != http.StatusNotFound {
			t.Fatalf("get after the delete: %d, want 404", code)
		}
		if n := d.vmmProcesses(); n != 0 {
			t.Fatalf("%d VMM processes left after the delete", n)
		}
	})
}

// TestGracefulRestart: SIGTERM with sandboxes running and paused, then a
// start on the same data dir: the running ones run again (same process and
// memory, resumed once), the paused one is still paused and resumes.
func TestGracefulRestart(t *testing.T) {
	d := newDev(t)
	d.start("")
	a, b := d.create(), d.create()
	wasA, wasB := d.holder(a), d.holder(b)
	if code := d.do("POST", "/v1/sandboxes/"+b+"/pause", nil, nil); code != http.StatusOK {
		t.Fatalf("pause: %d", code)
	}
	d.stop()
	if n := d.vmmProcesses(); n != 0 {
		t.Fatalf("%d VMM processes left by a graceful stop", n)
	}
	d.start("")
	if sb := d.settled(a); sb.Status != "running" {
		t.Fatalf("running sandbox after a graceful restart: %s (%s)", sb.Status, sb.Error)
	}
	d.checkHolder(a, wasA)
	if sb := d.settled(b); sb.Status != "paused" {
		t.Fatalf("paused sandbox after a graceful restart: %s", sb.Status)
	}
	if code := d.do("POST", "/v1/sandboxes/"+b+"/resume", nil, nil); code != http.StatusOK {
		t.Fatalf("resume: %d", code)
	}
	d.checkHolder(b, wasB)
}
