package envdclient_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	rpc "github.com/hearth-sandbox/hearth/gen/envd/process"
	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/envd/envdtest"
	"github.com/hearth-sandbox/hearth/internal/envdclient"
)

// startEnvd runs a real envd on loopback and returns its base URL.
func startEnvd(t *testing.T) string {
	t.Helper()
	return envdtest.Start(t, envd.Config{})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// newClient returns a client for an envd initialised with token "tok".
func newClient(t *testing.T, opts ...connect.ClientOption) *envdclient.Client {
	t.Helper()
	c := envdclient.New(startEnvd(t), "", &http.Client{}, opts...)
	if err := c.Init(ctx(t), envdclient.InitRequest{AccessToken: "tok", EnvVars: map[string]string{"FROM_INIT": "yes"}}, ""); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHealthAndInit(t *testing.T) {
	t.Parallel()
	base := startEnvd(t)
	c := envdclient.New(base, "", nil)
	v, err := c.Health(ctx(t))
	if err != nil || v != envd.Version {
		t.Fatalf("health = %q, %v", v, err)
	}
	if err := c.Init(ctx(t), envdclient.InitRequest{AccessToken: "one"}, ""); err != nil {
		t.Fatal(err)
	}
	if c.AccessToken() != "one" {
		t.Fatalf("token = %q", c.AccessToken())
	}
	// Re-keying needs the current token.
	other := envdclient.New(base, "", nil)
	err = other.Init(ctx(t), envdclient.InitRequest{AccessToken: "two"}, "")
	var herr *envdclient.Error
	if !errors.As(err, &herr) || herr.Status != http.StatusUnauthorized {
		t.Fatalf("re-init without token: %v", err)
	}
	now := time.Now()
	if err := c.Init(ctx(t), envdclient.InitRequest{AccessToken: "two", Timestamp: &now}, "one"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx(t), envdclient.ExecRequest{Cmd: "/bin/true"}); err != nil {
		t.Fatalf("exec after re-key: %v", err)
	}
	stale := envdclient.New(base, "one", nil)
	if _, err := stale.Exec(ctx(t), envdclient.ExecRequest{Cmd: "/bin/true"}); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("exec with old token: %v, want unauthenticated", err)
	}
}

func TestExec(t *testing.T) {
	t.Parallel()
	for name, opts := range map[string][]connect.ClientOption{"proto": nil, "json": {connect.WithProtoJSON()}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, opts...)
			dir := t.TempDir()
			res, err := c.Exec(ctx(t), envdclient.ExecRequest{
				Cmd:  "/bin/sh",
				Args: []string{"-c", `echo "$FROM_INIT $REQ $(pwd) $(id -un)"; echo err >&2; exit 7`},
				Env:  map[string]string{"REQ": "req"},
				Cwd:  dir,
				User: "root",
			})
			if err != nil {
				t.Fatal(err)
			}
			if string(res.Stdout) != "yes req "+dir+" root\n" || string(res.Stderr) != "err\n" || res.ExitCode != 7 || res.Pid == 0 {
				t.Fatalf("result = %+v (stdout %q stderr %q)", res, res.Stdout, res.Stderr)
			}
		})
	}
}

func TestExecStreamCallbacksInOrder(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	var mu sync.Mutex
	var events []string
	rec := func(kind string) func([]byte) {
		return func(b []byte) {
			mu.Lock()
			defer mu.Unlock()
			for _, line := range strings.SplitAfter(string(b), "\n") {
				if line != "" {
					events = append(events, kind+":"+strings.TrimSpace(line))
				}
			}
		}
	}
	started := false
	res, err := c.ExecStream(ctx(t), envdclient.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", "echo a; sleep 0.2; echo b >&2; sleep 0.2; echo c"}},
		envdclient.StreamHandlers{OnStart: func(uint32) { started = true }, OnStdout: rec("out"), OnStderr: rec("err")})
	if err != nil {
		t.Fatal(err)
	}
	if !started || res.ExitCode != 0 {
		t.Fatalf("started %v result %+v", started, res)
	}
	if strings.Join(events, ",") != "out:a,err:b,out:c" {
		t.Fatalf("events = %v", events)
	}
}

func TestExecTimeoutKills(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	_, err := c.Exec(ctx(t), envdclient.ExecRequest{Cmd: "/bin/sleep", Args: []string{"300"}, Timeout: 300 * time.Millisecond})
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("err = %v, want deadline_exceeded", err)
	}
	// The process itself was killed: nothing is left in the list.
	for {
		list, err := c.Process().List(ctx(t), connect.NewRequest(&rpc.ListRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Msg.GetProcesses()) == 0 {
			return
		}
		if ctx(t).Err() != nil {
			t.Fatal("timed-out process still running")
		}
	}
}

func TestWriteReadFile(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	data := make([]byte, 5<<20)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "a", "b.bin")
	if err := c.WriteFile(ctx(t), path, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	rc, err := c.ReadFile(ctx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("round trip differs (%d bytes, err %v)", len(got), err)
	}
	e, err := c.Stat(ctx(t), path)
	if err != nil || e.GetSize() != int64(len(data)) {
		t.Fatalf("stat = %v, %v", e, err)
	}
	_, err = c.ReadFile(ctx(t), path+".missing")
	var herr *envdclient.Error
	if !errors.As(err, &herr) || herr.Status != http.StatusNotFound {
		t.Fatalf("missing file: %v", err)
	}
}
