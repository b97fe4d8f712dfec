package main

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/cli/clitest"
)

// firstWriter collects writes and closes first on the first one.
type firstWriter struct {
	mu    sync.Mutex
	b     strings.Builder
	first chan struct{}
	once  sync.Once
}

func (w *firstWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.once.Do(func() { close(w.first) })
	return w.b.Write(p)
}

func (w *firstWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestSandboxExecStreams: `hearth sandbox exec` prints output while the
// command runs, keeps stdout and stderr apart, passes the exit code
// through, and stops on Ctrl-C (the root context ending) with status 130.
func TestSandboxExecStreams(t *testing.T) {
	srv := clitest.New(t)
	acct := srv.Signup(t)
	t.Setenv(cli.EnvConfig, filepath.Join(t.TempDir(), "cli.json"))
	t.Setenv(cli.EnvURL, srv.URL)
	t.Setenv(cli.EnvAPIKey, acct.APIKey)
	t.Setenv(cli.EnvToken, "")
	sb, err := cli.NewClient(srv.URL, acct.APIKey, "").CreateSandbox(context.Background(), apiwire.CreateSandbox{Template: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"sandbox", "exec", sb.ID, "--", "emit", "1:first", "2:warning", "1:second", "exit:3"}

	// run starts the command; cancel plays Ctrl-C. A broken stream makes
	// the test fail after a minute instead of hanging.
	run := func(stdout *firstWriter, stderr *strings.Builder) (done <-chan error, cancel context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		root := cliRoot()
		root.SetOut(stdout)
		root.SetErr(stderr)
		root.SetArgs(args)
		ch := make(chan error, 1)
		go func() { ch <- root.ExecuteContext(ctx) }()
		return ch, cancel
	}

	entered, release := srv.Host.HoldStreams()
	defer release()
	stdout, stderr := &firstWriter{first: make(chan struct{})}, &strings.Builder{}
	done, cancel := run(stdout, stderr)
	defer cancel()
	select {
	case <-stdout.first: // printed while the host holds the command
	case err := <-done:
		t.Fatalf("exec ended (%v) before the held command's first output was printed", err)
	}
	<-entered
	release()
	err = <-done
	if cli.ExitCode(err) != 3 || stdout.String() != "first\nsecond\n" || stderr.String() != "warning\n" {
		t.Fatalf("exec: exit %d (%v), stdout %q, stderr %q", cli.ExitCode(err), err, stdout.String(), stderr.String())
	}

	// Ctrl-C after the first output: the command is abandoned, status 130.
	entered, release = srv.Host.HoldStreams()
	defer release()
	stdout = &firstWriter{first: make(chan struct{})}
	done, cancel = run(stdout, &strings.Builder{})
	defer cancel()
	<-stdout.first
	cancel()
	if err := <-done; cli.ExitCode(err) != 130 {
		t.Fatalf("interrupted exec: exit %d (%v), want 130", cli.ExitCode(err), err)
	}
	<-entered
}
