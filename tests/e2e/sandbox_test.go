//go:build vm

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/envdclient"
)

// Both platform images boot and run commands; base has python3.
func TestCreateAndExec(t *testing.T) {
	cases := []struct {
		template string
		cmd      string
		args     []string
		want     string
	}{
		{"tiny", "echo", []string{"hello from tiny"}, "hello from tiny\n"},
		{"base", "python3", []string{"-c", "print(6*7)"}, "42\n"},
	}
	for _, tc := range cases {
		t.Run(tc.template, func(t *testing.T) {
			a := newAPI(t)
			sb := a.create(map[string]any{"template": tc.template})
			if sb.Status != "running" {
				t.Fatalf("status %q after create, want running", sb.Status)
			}
			r := a.exec(sb.ID, tc.cmd, tc.args...)
			if r.ExitCode != 0 || r.Stdout != tc.want {
				t.Fatalf("exec: %+v, want stdout %q", r, tc.want)
			}
			r = a.exec(sb.ID, "sh", "-c", "echo err >&2; exit 3")
			if r.ExitCode != 3 || r.Stderr != "err\n" {
				t.Fatalf("exit/stderr: %+v", r)
			}
		})
	}
}

// disk_size_mb reaches the guest's root filesystem: df / shows it.
func TestDiskSize(t *testing.T) {
	cases := []struct {
		name   string
		diskMB int // 0: default
		wantMB int
	}{
		{"default", 0, 20480},
		{"10GiB", 10240, 10240},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAPI(t)
			req := map[string]any{"template": "tiny"}
			if tc.diskMB != 0 {
				req["disk_size_mb"] = tc.diskMB
			}
			sb := a.create(req)
			if sb.DiskSizeMB != tc.wantMB {
				t.Fatalf("disk_size_mb %d, want %d", sb.DiskSizeMB, tc.wantMB)
			}
			r := a.exec(sb.ID, "df", "-B1", "/")
			size := dfSize(t, r.Stdout)
			// df reports the filesystem minus ext4's own metadata (a few
			// percent); it must be close to, and never above, the request.
			want := int64(tc.wantMB) << 20
			if size > want || size < want*95/100 {
				t.Fatalf("df / size %d bytes, want about %d (%d MiB)\n%s", size, want, tc.wantMB, r.Stdout)
			}
		})
	}
}

func dfSize(t *testing.T, out string) int64 {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) < 2 {
		t.Fatalf("df output %q", out)
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatalf("df output %q: %v", out, err)
	}
	return n
}

// A 5 MB file goes in and comes out byte-exactly through the REST API.
func TestFilesRoundTrip(t *testing.T) {
	a := newAPI(t)
	sb := a.create(map[string]any{"template": "tiny"})
	data := make([]byte, 5<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if code := a.do("PUT", "/v1/sandboxes/"+sb.ID+"/files?path=/tmp/blob.bin", data, nil); code/100 != 2 {
		t.Fatalf("put file: status %d", code)
	}
	var got []byte
	if code := a.do("GET", "/v1/sandboxes/"+sb.ID+"/files?path=/tmp/blob.bin", nil, &got); code != http.StatusOK {
		t.Fatalf("get file: status %d", code)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("file round trip: got %d bytes, want %d identical", len(got), len(data))
	}
	if r := a.exec(sb.ID, "sh", "-c", "wc -c < /tmp/blob.bin"); strings.TrimSpace(r.Stdout) != strconv.Itoa(len(data)) {
		t.Fatalf("size inside the guest: %q", r.Stdout)
	}
}

// Output streams: the first line arrives while the command still runs.
func TestExecStreams(t *testing.T) {
	a := newAPI(t)
	sb := a.create(map[string]any{"template": "tiny"})
	addr, err := stack.Agent.SandboxAddr(sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	c := envdclient.New("http://"+addr+":49983", sb.AccessToken, http.DefaultClient)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The command waits for a file the test creates only after it has seen
	// the first line: buffered output would deadlock (and time out).
	var first bool
	var out strings.Builder
	res, err := c.ExecStream(ctx, envdclient.ExecRequest{Cmd: "sh", Args: []string{"-c", "echo first; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo second"}},
		envdclient.StreamHandlers{OnStdout: func(b []byte) {
			out.Write(b)
			if !first && strings.Contains(out.String(), "first\n") {
				first = true
				// Not a.exec: t.Fatal must not run outside the test goroutine.
				go c.Exec(ctx, envdclient.ExecRequest{Cmd: "touch", Args: []string{"/tmp/go"}})
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || out.String() != "first\nsecond\n" {
		t.Fatalf("stream: exit %d output %q", res.ExitCode, out.String())
	}
}

// envd answers nothing but /health without the sandbox's access token.
func TestEnvdRequiresToken(t *testing.T) {
	a := newAPI(t)
	sb := a.create(map[string]any{"template": "tiny"})
	addr, err := stack.Agent.SandboxAddr(sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr + ":49983"
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"wrong", http.StatusUnauthorized}, {sb.AccessToken, http.StatusOK}} {
		req, _ := http.NewRequest("GET", base+"/files?path=/etc/hostname", nil)
		if tc.token != "" {
			req.Header.Set("X-Access-Token", tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET /files with token %q: status %d, want %d", tc.token, resp.StatusCode, tc.want)
		}
	}
}

// Destroy leaves no VMM process, namespace, tap, loop device or file.
func TestDestroyLeavesNothing(t *testing.T) {
	a := newAPI(t)
	sb := a.create(map[string]any{"template": "tiny"})
	runDir := filepath.Join(stack.DataDir, "sandboxes", sb.ID)
	if _, err := os.Stat(runDir); err != nil {
		t.Fatalf("run dir of a running sandbox: %v", err)
	}
	before := traces(t, sb.ID)
	if len(before) == 0 {
		t.Fatal("found no trace of a running sandbox: the leak check would prove nothing")
	}
	if code := a.do("DELETE", "/v1/sandboxes/"+sb.ID, nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete: status %d", code)
	}
	if left := traces(t, sb.ID); len(left) > 0 {
		t.Fatalf("left behind after destroy: %v", left)
	}
	if _, err := os.Stat(runDir); !os.IsNotExist(err) {
		t.Fatalf("run dir still there: %v", err)
	}
	if code := a.do("GET", "/v1/sandboxes/"+sb.ID, nil, nil); code != http.StatusNotFound {
		t.Fatalf("get after delete: status %d, want 404", code)
	}
}

// traces lists what exists on the host for a sandbox: VMM processes naming
// it, network namespaces, loop devices backed by its files, its files.
func traces(t *testing.T, id string) []string {
	t.Helper()
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(id)) && bytes.Contains(b, []byte("qemu")) {
			found = append(found, "process "+filepath.Base(filepath.Dir(p)))
		}
	}
	if ns, _ := filepath.Glob("/run/netns/*" + id + "*"); len(ns) > 0 {
		found = append(found, ns...)
	}
	if out, err := exec.Command("losetup", "-a").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, id) {
				found = append(found, "loop "+l)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(stack.DataDir, "*", "*"+id+"*"))
	more, _ := filepath.Glob(filepath.Join(stack.DataDir, "*", "*", "*"+id+"*"))
	found = append(found, append(files, more...)...)
	return found
}

// A sandbox past its end time is destroyed by the reaper (no auto_pause).
func TestTimeoutDestroys(t *testing.T) {
	a := newAPI(t)
	sb := a.create(map[string]any{"template": "tiny", "timeout_s": 1})
	deadline := time.Now().Add(time.Minute) // failure guard, not a speed check
	for {
		var got sandbox
		code := a.do("GET", "/v1/sandboxes/"+sb.ID, nil, &got)
		if code == http.StatusNotFound || got.Status == "stopped" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox still %q (HTTP %d) a minute after its 1 s timeout", got.Status, code)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if left := traces(t, sb.ID); len(left) > 0 {
		t.Fatalf("left behind after timeout: %v", left)
	}
}
