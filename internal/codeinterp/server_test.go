package codeinterp_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/codeinterp"
	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/envd/envdtest"
)

const token = "test-token"

// startServer runs server.py on the test host against a real envd (which
// holds the access token and the sandbox's variables) and waits for the
// default kernel to be warm.
func startServer(t *testing.T) string {
	t.Helper()
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import jupyter_client, ipykernel, numpy, pandas, matplotlib").CombinedOutput(); err != nil {
		t.Fatalf("the code interpreter's Debian packages are missing (run scripts/deps.sh): %v: %s", err, out)
	}
	envdURL := envdtest.Start(t, envdConfig())
	resp, err := http.Post(envdURL+"/init", "application/json",
		strings.NewReader(`{"accessToken":"`+token+`","envVars":{"SANDBOX_VAR":"from-sandbox"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	dir := t.TempDir()
	script := filepath.Join(dir, "server.py")
	if err := os.WriteFile(script, codeinterp.Script, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, script)
	cmd.Dir = home
	cmd.Env = append(os.Environ(), "HOME="+home, "HEARTH_CI_USER=", fmt.Sprintf("HEARTH_CI_PORT=%d", port),
		"HEARTH_CI_ENVD_URL="+envdURL, "HEARTH_CI_OUTPUT_LIMIT=65536")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // the server kills its kernels
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("server log:\n%s", log.String())
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not healthy after 90 s (last: %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type msg struct {
	Type         string `json:"type"`
	Text         string `json:"text"`
	HTML         string `json:"html"`
	PNG          string `json:"png"`
	IsMain       bool   `json:"is_main_result"`
	Name         string `json:"name"`
	Value        string `json:"value"`
	Traceback    string `json:"traceback"`
	ExecCount    int    `json:"execution_count"`
	ErrorCode    int    `json:"code"`
	ErrorMessage string `json:"message"`
}

type run struct {
	status int
	msgs   []msg
}

func (r run) stdout() string { return r.join("stdout") }
func (r run) stderr() string { return r.join("stderr") }
func (r run) join(kind string) string {
	var b strings.Builder
	for _, m := range r.msgs {
		if m.Type == kind {
			b.WriteString(m.Text)
		}
	}
	return b.String()
}
func (r run) main() *msg {
	for i, m := range r.msgs {
		if m.Type == "result" && m.IsMain {
			return &r.msgs[i]
		}
	}
	return nil
}
func (r run) first(kind string) *msg {
	for i, m := range r.msgs {
		if m.Type == kind {
			return &r.msgs[i]
		}
	}
	return nil
}

func execute(t *testing.T, ctx context.Context, base, tok string, body map[string]any) run {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/execute", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("X-Access-Token", tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := run{status: resp.StatusCode}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var m msg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		r.msgs = append(r.msgs, m)
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		t.Fatal(err)
	}
	return r
}

func call(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestServer(t *testing.T) {
	base := startServer(t)
	bg := context.Background()
	exec := func(code string, extra map[string]any) run {
		t.Helper()
		body := map[string]any{"code": code}
		for k, v := range extra {
			body[k] = v
		}
		return execute(t, bg, base, token, body)
	}

	t.Run("access token", func(t *testing.T) {
		for _, tc := range []struct{ name, tok string }{{"missing", ""}, {"wrong", "nope"}} {
			r := execute(t, bg, base, tc.tok, map[string]any{"code": "1"})
			if r.status != http.StatusUnauthorized {
				t.Errorf("%s token: status %d, want 401", tc.name, r.status)
			}
		}
	})

	t.Run("cells", func(t *testing.T) {
		cases := []struct {
			name  string
			code  string
			extra map[string]any
			check func(t *testing.T, r run)
		}{
			{"main result and state", "x = 41\nx + 1", nil, func(t *testing.T, r run) {
				if m := r.main(); m == nil || m.Text != "42" {
					t.Errorf("main result %+v, want 42", m)
				}
			}},
			{"state across cells", "x * 2", nil, func(t *testing.T, r run) {
				if m := r.main(); m == nil || m.Text != "82" {
					t.Errorf("main result %+v, want 82", m)
				}
			}},
			{"stdout and stderr", "import sys\nprint('out')\nprint('err', file=sys.stderr)", nil, func(t *testing.T, r run) {
				if r.stdout() != "out\n" || r.stderr() != "err\n" {
					t.Errorf("stdout %q stderr %q", r.stdout(), r.stderr())
				}
			}},
			{"error with traceback", "def f():\n    raise ValueError('boom')\nf()", nil, func(t *testing.T, r run) {
				e := r.first("error")
				if e == nil || e.Name != "ValueError" || e.Value != "boom" || !strings.Contains(e.Traceback, "Traceback") {
					t.Errorf("error %+v", e)
				}
			}},
			{"syntax error is a result", "def f(:", nil, func(t *testing.T, r run) {
				if e := r.first("error"); e == nil || e.Name != "SyntaxError" {
					t.Errorf("error %+v, want SyntaxError", e)
				}
			}},
			{"sandbox and per-run env", "import os\nprint(os.environ.get('SANDBOX_VAR'), os.environ.get('RUN_VAR'))", map[string]any{"env_vars": map[string]string{"RUN_VAR": "run"}}, func(t *testing.T, r run) {
				if r.stdout() != "from-sandbox run\n" {
					t.Errorf("stdout %q", r.stdout())
				}
			}},
			{"per-run env is gone after the run", "import os\nprint(os.environ.get('RUN_VAR'))", nil, func(t *testing.T, r run) {
				if r.stdout() != "None\n" {
					t.Errorf("stdout %q", r.stdout())
				}
			}},
			{"dataframe html and text", "import pandas as pd\npd.DataFrame({'a': [1, 2]})", nil, func(t *testing.T, r run) {
				m := r.main()
				if m == nil || !strings.Contains(m.HTML, "<table") || !strings.Contains(m.Text, "a") {
					t.Errorf("result %+v", m)
				}
			}},
			{"matplotlib png", "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()", nil, func(t *testing.T, r run) {
				m := r.first("result")
				if m == nil || !strings.HasPrefix(m.PNG, "iVBORw0KGgo") {
					t.Errorf("no PNG result in %+v", r.msgs)
				}
			}},
			{"unbounded output is truncated", "while True:\n    print('x' * 1000)", nil, func(t *testing.T, r run) {
				if !strings.Contains(r.stderr(), "output truncated") || len(r.stdout()) > 65536 {
					t.Errorf("stdout %d bytes, stderr %q", len(r.stdout()), r.stderr())
				}
			}},
			{"results still come after truncated output", "for _ in range(100):\n    print('x' * 1000)\n'done'", nil, func(t *testing.T, r run) {
				if m := r.main(); m == nil || m.Text != "'done'" || !strings.Contains(r.stderr(), "output truncated") {
					t.Errorf("main %+v, stderr %q", m, r.stderr())
				}
			}},
			{"unknown context", "1", map[string]any{"context_id": "nope"}, func(t *testing.T, r run) {
				if r.status != http.StatusNotFound {
					t.Errorf("status %d, want 404", r.status)
				}
			}},
			{"unknown language", "1", map[string]any{"language": "cobol"}, func(t *testing.T, r run) {
				if r.status != http.StatusBadRequest {
					t.Errorf("status %d, want 400", r.status)
				}
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ctx := bg
				if strings.HasPrefix(tc.code, "while True") {
					// Truncated output still runs forever: the client hangs
					// up, which interrupts the kernel.
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(bg, 20*time.Second)
					defer cancel()
				}
				body := map[string]any{"code": tc.code}
				for k, v := range tc.extra {
					body[k] = v
				}
				r := execute(t, ctx, base, token, body)
				tc.check(t, r)
				if r.status == http.StatusOK && !strings.HasPrefix(tc.code, "while True") && r.msgs[len(r.msgs)-1].Type != "end_of_execution" {
					t.Errorf("last message %+v, want end_of_execution", r.msgs[len(r.msgs)-1])
				}
			})
		}
	})

	t.Run("client hang-up interrupts the kernel", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(bg, 2*time.Second)
		defer cancel()
		execute(t, ctx, base, token, map[string]any{"code": "import time\nfor _ in range(600): time.sleep(0.1)"})
		start := time.Now()
		r := exec("x + 1", nil)
		if m := r.main(); m == nil || m.Text != "42" {
			t.Fatalf("after the interrupt: %+v (%s)", r.msgs, time.Since(start))
		}
	})

	t.Run("a dead kernel is restarted", func(t *testing.T) {
		r := exec("import os\nos._exit(1)", nil)
		if e := r.first("error"); e == nil || e.Name != "DeadKernelError" {
			t.Fatalf("messages %+v, want a DeadKernelError", r.msgs)
		}
		r = exec("'x' in dir(), 6 * 7", nil)
		if m := r.main(); m == nil || m.Text != "(False, 42)" {
			t.Fatalf("after restart: %+v", r.msgs)
		}
	})

	t.Run("contexts", func(t *testing.T) {
		cwd := t.TempDir()
		code, body := call(t, http.MethodPost, base+"/contexts", `{"language":"python","cwd":"`+cwd+`"}`)
		var c struct{ ID, Language, Cwd string }
		if code != http.StatusOK || json.Unmarshal(body, &c) != nil || c.ID == "" || c.Cwd != cwd {
			t.Fatalf("create: %d %s", code, body)
		}
		exec("isolated = 1", nil)
		r := exec("import os\nos.getcwd(), 'isolated' in dir()", map[string]any{"context_id": c.ID})
		if m := r.main(); m == nil || m.Text != fmt.Sprintf("('%s', False)", cwd) {
			t.Fatalf("in the new context: %+v", r.msgs)
		}
		code, body = call(t, http.MethodGet, base+"/contexts", "")
		if code != http.StatusOK || !strings.Contains(string(body), c.ID) {
			t.Fatalf("list: %d %s", code, body)
		}
		exec("y = 1", map[string]any{"context_id": c.ID})
		if code, body := call(t, http.MethodPost, base+"/contexts/"+c.ID+"/restart", ""); code != http.StatusNoContent {
			t.Fatalf("restart: %d %s", code, body)
		}
		if m := exec("'y' in dir()", map[string]any{"context_id": c.ID}).main(); m == nil || m.Text != "False" {
			t.Fatalf("after restart: %+v", m)
		}
		if code, body := call(t, http.MethodDelete, base+"/contexts/"+c.ID, ""); code != http.StatusNoContent {
			t.Fatalf("delete: %d %s", code, body)
		}
		if code, _ := call(t, http.MethodDelete, base+"/contexts/"+c.ID, ""); code != http.StatusNotFound {
			t.Fatalf("delete again: %d, want 404", code)
		}
		if r := exec("1", map[string]any{"context_id": c.ID}); r.status != http.StatusNotFound {
			t.Fatalf("execute in a removed context: %d, want 404", r.status)
		}
	})
}

func envdConfig() envd.Config { return envd.Config{} }
