package service_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// collected is a streamed command's output as the callback saw it.
type collected struct {
	events []string // "stdout:data" per call
	stdout strings.Builder
	stderr strings.Builder
}

func (c *collected) out(stream string, data []byte) error {
	c.events = append(c.events, stream+":"+string(data))
	if stream == service.StreamStderr {
		c.stderr.Write(data)
	} else {
		c.stdout.Write(data)
	}
	return nil
}

func TestExecStream(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		sb, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base", AutoResume: true})
		if err != nil {
			t.Fatal(err)
		}

		// Output arrives in order, in several chunks, with the exit code.
		var c collected
		code, err := f.svc.ExecStream(ctx, f.p, sb.ID, service.ExecRequest{Cmd: "emit", Args: []string{"1:first", "2:oops", "1:second", "exit:3"}}, c.out)
		if err != nil || code != 3 {
			t.Fatalf("exec stream: code %d, err %v", code, err)
		}
		if c.stdout.String() != "first\nsecond\n" || c.stderr.String() != "oops\n" || len(c.events) < 4 {
			t.Fatalf("events %q", c.events)
		}
		if firstErr := indexPrefix(c.events, "stderr:"); firstErr < 0 || indexPrefix(c.events[firstErr:], "stdout:sec") < 0 {
			t.Errorf("stderr did not come between the stdout lines: %q", c.events)
		}

		// The same checks as Exec, before anything runs.
		other, err := f.svc.Signup(ctx, "other@example.com", "password123")
		if err != nil {
			t.Fatal(err)
		}
		otherTeam := service.Principal{UserID: other.User.ID, TeamID: other.Team.ID}
		for _, tc := range []struct {
			name string
			p    service.Principal
			id   string
			req  service.ExecRequest
			kind service.Kind
		}{
			{"no cmd", f.p, sb.ID, service.ExecRequest{}, service.KindInvalidArgument},
			{"timeout too long", f.p, sb.ID, service.ExecRequest{Cmd: "echo", TimeoutS: service.MaxTimeoutS + 1}, service.KindInvalidArgument},
			{"bad env", f.p, sb.ID, service.ExecRequest{Cmd: "echo", Env: map[string]string{"A=B": "c"}}, service.KindInvalidArgument},
			{"other team's sandbox", otherTeam, sb.ID, service.ExecRequest{Cmd: "echo"}, service.KindNotFound},
			{"missing sandbox", f.p, "nosuchsandbox", service.ExecRequest{Cmd: "echo"}, service.KindNotFound},
		} {
			called := false
			_, err := f.svc.ExecStream(ctx, tc.p, tc.id, tc.req, func(string, []byte) error { called = true; return nil })
			if service.KindOf(err) != tc.kind || called {
				t.Errorf("%s: err %v (kind %v), output called %v; want kind %v and no output", tc.name, err, service.KindOf(err), called, tc.kind)
			}
		}

		// A paused auto-resume sandbox is resumed first.
		if _, _, err := f.svc.PauseSandbox(ctx, f.p, sb.ID); err != nil {
			t.Fatal(err)
		}
		resumes := f.host.Resumes()
		c = collected{}
		if code, err := f.svc.ExecStream(ctx, f.p, sb.ID, service.ExecRequest{Cmd: "echo", Args: []string{"back"}}, c.out); err != nil || code != 0 || c.stdout.String() != "back\n" {
			t.Fatalf("exec on paused auto-resume sandbox: code %d, err %v, out %q", code, err, c.stdout.String())
		}
		if f.host.Resumes() != resumes+1 {
			t.Errorf("host resumes %d, want %d", f.host.Resumes(), resumes+1)
		}

		// The callback's error stops the command and comes back unchanged.
		stop := errors.New("reader went away")
		calls := 0
		_, err = f.svc.ExecStream(ctx, f.p, sb.ID, service.ExecRequest{Cmd: "emit", Args: []string{"1:aaaaaaaaaaaa"}}, func(string, []byte) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("callback error: %v after %d calls, want %v after 1", err, calls, stop)
		}

		// A host failing mid-stream is a host failure (503), after the
		// output that made it.
		f.host.FailStreams(errors.New("connection reset"))
		c = collected{}
		_, err = f.svc.ExecStream(ctx, f.p, sb.ID, service.ExecRequest{Cmd: "emit", Args: []string{"1:partial output"}}, c.out)
		if service.KindOf(err) != service.KindUnavailable || len(c.events) != 1 {
			t.Errorf("host failure: %v (kind %v) after %q, want unavailable after one chunk", err, service.KindOf(err), c.events)
		}
	})
}

func indexPrefix(ss []string, prefix string) int {
	for i, s := range ss {
		if strings.HasPrefix(s, prefix) {
			return i
		}
	}
	return -1
}
