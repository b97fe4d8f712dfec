package cli_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/cli/clitest"
)

// notifyWriter collects writes and closes first on the first one.
type notifyWriter struct {
	mu    sync.Mutex
	b     strings.Builder
	first chan struct{}
	once  sync.Once
}

func newNotifyWriter() *notifyWriter { return &notifyWriter{first: make(chan struct{})} }

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.once.Do(func() { close(w.first) })
	return w.b.Write(p)
}

func (w *notifyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestExecStream runs streamed commands through the real API (fake host at
// the VM boundary).
func TestExecStream(t *testing.T) {
	t.Parallel()
	srv := clitest.New(t)
	acct := srv.Signup(t)
	c := cli.NewClient(srv.URL, acct.APIKey, "")
	// A test that breaks streaming fails when this ends instead of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sb, err := c.CreateSandbox(ctx, apiwire.CreateSandbox{Template: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	script := apiwire.ExecRequest{Cmd: "emit", Args: []string{"1:first", "2:warning", "1:second", "exit:3"}}

	// Output and exit code.
	var stdout, stderr strings.Builder
	code, err := c.ExecStream(ctx, sb.ID, script, &stdout, &stderr)
	if err != nil || code != 3 || stdout.String() != "first\nsecond\n" || stderr.String() != "warning\n" {
		t.Fatalf("exec stream: code %d, err %v, stdout %q, stderr %q", code, err, stdout.String(), stderr.String())
	}

	// Output reaches the writer while the command still runs: the host
	// holds the command after its first chunk until the test saw it.
	entered, release := srv.Host.HoldStreams()
	out := newNotifyWriter()
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := c.ExecStream(ctx, sb.ID, script, out, &strings.Builder{})
		done <- result{code, err}
	}()
	select {
	case <-out.first:
	case r := <-done:
		t.Fatalf("exec ended (%d, %v) before the held command wrote to the terminal", r.code, r.err)
	}
	<-entered
	release()
	if r := <-done; r.err != nil || r.code != 3 || out.String() != "first\nsecond\n" {
		t.Fatalf("after release: code %d, err %v, stdout %q", r.code, r.err, out.String())
	}

	// Cancelling (Ctrl-C) while the command runs ends the call with
	// context.Canceled, which the CLI turns into exit status 130.
	entered, release = srv.Host.HoldStreams()
	defer release()
	cctx, ccancel := context.WithCancel(ctx)
	out = newNotifyWriter()
	go func() {
		<-out.first
		ccancel()
	}()
	_, err = c.ExecStream(cctx, sb.ID, script, out, &strings.Builder{})
	if !errors.Is(err, context.Canceled) || cli.ExitCode(err) != 130 {
		t.Fatalf("cancelled exec: %v (exit code %d), want context.Canceled (130)", err, cli.ExitCode(err))
	}
	<-entered
	release()

	// Errors before the stream are API errors; a host lost mid-stream is
	// one too, after the output that came before it.
	if _, err := c.ExecStream(ctx, "nosuchsandbox000000", script, &strings.Builder{}, &strings.Builder{}); !isStatus(err, http.StatusNotFound) {
		t.Errorf("missing sandbox: %v", err)
	}
	srv.Host.FailStreams(errors.New("agent connection reset"))
	stdout.Reset()
	_, err = c.ExecStream(ctx, sb.ID, script, &stdout, &strings.Builder{})
	if !isStatus(err, http.StatusServiceUnavailable) || stdout.String() == "" {
		t.Errorf("host lost mid-stream: %v after %q", err, stdout.String())
	}
}

// A server without streaming answers the buffered JSON; ExecStream still
// prints it.
func TestExecStreamBufferedServer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") == "" || r.URL.Path != "/v1/sandboxes/sb1/exec" {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(apiwire.ExecResult{Stdout: "out\n", Stderr: "err\n", ExitCode: 5})
	}))
	defer srv.Close()
	var stdout, stderr strings.Builder
	code, err := cli.NewClient(srv.URL, "e2b_x", "").ExecStream(context.Background(), "sb1", apiwire.ExecRequest{Cmd: "x"}, &stdout, &stderr)
	if err != nil || code != 5 || stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Fatalf("code %d, err %v, stdout %q, stderr %q", code, err, stdout.String(), stderr.String())
	}
}
