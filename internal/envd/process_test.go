package envd_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	rpc "github.com/hearth-sandbox/hearth/gen/envd/process"
	"github.com/hearth-sandbox/hearth/gen/envd/process/processconnect"
)

// events collects a Start/Connect stream's events in order.
type collected struct {
	pid    uint32
	stdout strings.Builder
	stderr strings.Builder
	pty    strings.Builder
	end    *rpc.ProcessEvent_EndEvent
	order  []string
}

func (c *collected) add(ev *rpc.ProcessEvent) {
	switch e := ev.GetEvent().(type) {
	case *rpc.ProcessEvent_Start:
		c.pid = e.Start.GetPid()
		c.order = append(c.order, "start")
	case *rpc.ProcessEvent_Data:
		switch o := e.Data.GetOutput().(type) {
		case *rpc.ProcessEvent_DataEvent_Stdout:
			c.stdout.Write(o.Stdout)
			c.order = append(c.order, "stdout")
		case *rpc.ProcessEvent_DataEvent_Stderr:
			c.stderr.Write(o.Stderr)
			c.order = append(c.order, "stderr")
		case *rpc.ProcessEvent_DataEvent_Pty:
			c.pty.Write(o.Pty)
			c.order = append(c.order, "pty")
		}
	case *rpc.ProcessEvent_End:
		c.end = e.End
		c.order = append(c.order, "end")
	}
}

func startReq(cmd string, args ...string) *rpc.StartRequest {
	return &rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: cmd, Args: args}}
}

func runToEnd(t *testing.T, pc processconnect.ProcessClient, req *connect.Request[rpc.StartRequest]) *collected {
	t.Helper()
	stream, err := pc.Start(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	c := &collected{}
	for stream.Receive() {
		c.add(stream.Msg().GetEvent())
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if c.end == nil {
		t.Fatalf("no end event; order %v", c.order)
	}
	return c
}

func bySelectorPid(pid uint32) *rpc.ProcessSelector {
	return &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: pid}}
}

func TestStartStreamsOutputBeforeExit(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	for _, codec := range codecs {
		t.Run(codec.name, func(t *testing.T) {
			t.Parallel()
			pc := h.proc(codec.opts)
			stream, err := pc.Start(testCtx(t), connect.NewRequest(startReq("/bin/sh", "-c", "echo first; sleep 1; echo second")))
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			c := &collected{}
			sawFirstWhileRunning := false
			for stream.Receive() {
				c.add(stream.Msg().GetEvent())
				if c.end == nil && strings.Contains(c.stdout.String(), "first") && !strings.Contains(c.stdout.String(), "second") && !sawFirstWhileRunning {
					// The first chunk is here; the process must still be listed.
					list, err := pc.List(testCtx(t), connect.NewRequest(&rpc.ListRequest{}))
					if err != nil {
						t.Fatal(err)
					}
					for _, p := range list.Msg.GetProcesses() {
						if p.GetPid() == c.pid {
							sawFirstWhileRunning = true
						}
					}
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if !sawFirstWhileRunning {
				t.Errorf("first chunk did not arrive while the process was running; order %v", c.order)
			}
			if c.order[0] != "start" || c.order[len(c.order)-1] != "end" {
				t.Errorf("order = %v, want start first and end last", c.order)
			}
			if got := c.stdout.String(); got != "first\nsecond\n" {
				t.Errorf("stdout = %q", got)
			}
			if c.end.GetExitCode() != 0 || !c.end.GetExited() {
				t.Errorf("end = %v", c.end)
			}
		})
	}
}

// Output is streamed, not buffered until exit: the process waits for input
// that the test sends only after seeing the first line.
func TestStartInteractiveNeedsStreaming(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	for _, codec := range codecs {
		t.Run(codec.name, func(t *testing.T) {
			t.Parallel()
			pc := h.proc(codec.opts)
			stdin := true
			req := startReq("/bin/sh", "-c", "echo ready; read x; echo got $x")
			req.Stdin = &stdin
			stream, err := pc.Start(testCtx(t), connect.NewRequest(req))
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			c := &collected{}
			sent := false
			for stream.Receive() {
				c.add(stream.Msg().GetEvent())
				if !sent && strings.Contains(c.stdout.String(), "ready") {
					sent = true
					_, err := pc.SendInput(testCtx(t), connect.NewRequest(&rpc.SendInputRequest{
						Process: bySelectorPid(c.pid),
						Input:   &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: []byte("hello\n")}},
					}))
					if err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if got := c.stdout.String(); got != "ready\ngot hello\n" {
				t.Errorf("stdout = %q", got)
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	cases := []struct {
		script string
		code   int32
		exited bool
		status string
	}{
		{"exit 0", 0, true, "exit status 0"},
		{"echo oops >&2; exit 3", 3, true, "exit status 3"},
		{"kill -9 $$", -1, false, "signal: killed"},
	}
	for _, codec := range codecs {
		for _, tc := range cases {
			t.Run(codec.name+"/"+tc.script, func(t *testing.T) {
				t.Parallel()
				c := runToEnd(t, h.proc(codec.opts), connect.NewRequest(startReq("/bin/sh", "-c", tc.script)))
				if c.end.GetExitCode() != tc.code || c.end.GetExited() != tc.exited || c.end.GetStatus() != tc.status {
					t.Errorf("end = %v, want code %d exited %v status %q", c.end, tc.code, tc.exited, tc.status)
				}
				if tc.code == 3 && c.stderr.String() != "oops\n" {
					t.Errorf("stderr = %q", c.stderr.String())
				}
			})
		}
	}
}

func TestStartUnknownCommand(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	stream, err := h.proc(nil).Start(testCtx(t), connect.NewRequest(startReq("/nonexistent/binary")))
	if err == nil {
		for stream.Receive() {
		}
		err = stream.Err()
	}
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("err = %v, want not_found", err)
	}
}

func TestStdinSendInputAndCloseStdin(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	for _, codec := range codecs {
		t.Run(codec.name, func(t *testing.T) {
			t.Parallel()
			pc := h.proc(codec.opts)
			stdin := true
			req := startReq("/bin/cat")
			req.Stdin = &stdin
			stream, err := pc.Start(testCtx(t), connect.NewRequest(req))
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			c := &collected{}
			if !stream.Receive() {
				t.Fatal(stream.Err())
			}
			c.add(stream.Msg().GetEvent())
			sel := bySelectorPid(c.pid)
			for _, chunk := range []string{"one ", "two\n"} {
				if _, err := pc.SendInput(testCtx(t), connect.NewRequest(&rpc.SendInputRequest{
					Process: sel, Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: []byte(chunk)}},
				})); err != nil {
					t.Fatal(err)
				}
			}
			// StreamInput keeps order across chunks.
			in := pc.StreamInput(testCtx(t))
			msgs := []*rpc.StreamInputRequest{
				{Event: &rpc.StreamInputRequest_Start{Start: &rpc.StreamInputRequest_StartEvent{Process: sel}}},
				{Event: &rpc.StreamInputRequest_Data{Data: &rpc.StreamInputRequest_DataEvent{Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: []byte("three ")}}}}},
				{Event: &rpc.StreamInputRequest_Keepalive{Keepalive: &rpc.StreamInputRequest_KeepAlive{}}},
				{Event: &rpc.StreamInputRequest_Data{Data: &rpc.StreamInputRequest_DataEvent{Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: []byte("four\n")}}}}},
			}
			for _, m := range msgs {
				if err := in.Send(m); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := in.CloseAndReceive(); err != nil {
				t.Fatal(err)
			}
			if _, err := pc.CloseStdin(testCtx(t), connect.NewRequest(&rpc.CloseStdinRequest{Process: sel})); err != nil {
				t.Fatal(err)
			}
			for stream.Receive() {
				c.add(stream.Msg().GetEvent())
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if got := c.stdout.String(); got != "one two\nthree four\n" {
				t.Errorf("stdout = %q", got)
			}
			if c.end == nil || c.end.GetExitCode() != 0 {
				t.Errorf("end = %v, want exit 0 after EOF", c.end)
			}
		})
	}
}

func TestStdinDisabled(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	pc := h.proc(nil)
	stdin := false
	req := startReq("/bin/cat")
	req.Stdin = &stdin
	// cat gets /dev/null and exits at once.
	c := runToEnd(t, pc, connect.NewRequest(req))
	if c.end.GetExitCode() != 0 {
		t.Fatalf("end = %v", c.end)
	}
}

func TestSendSignalKillsBackgroundProcess(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	for _, codec := range codecs {
		for _, sig := range []rpc.Signal{rpc.Signal_SIGNAL_SIGKILL, rpc.Signal_SIGNAL_SIGTERM} {
			t.Run(codec.name+"/"+sig.String(), func(t *testing.T) {
				t.Parallel()
				pc := h.proc(codec.opts)
				stream, err := pc.Start(testCtx(t), connect.NewRequest(startReq("/bin/sleep", "300")))
				if err != nil {
					t.Fatal(err)
				}
				defer stream.Close()
				c := &collected{}
				if !stream.Receive() {
					t.Fatal(stream.Err())
				}
				c.add(stream.Msg().GetEvent())
				if _, err := pc.SendSignal(testCtx(t), connect.NewRequest(&rpc.SendSignalRequest{Process: bySelectorPid(c.pid), Signal: sig})); err != nil {
					t.Fatal(err)
				}
				for stream.Receive() {
					c.add(stream.Msg().GetEvent())
				}
				want := map[rpc.Signal]string{rpc.Signal_SIGNAL_SIGKILL: "signal: killed", rpc.Signal_SIGNAL_SIGTERM: "signal: terminated"}[sig]
				if c.end == nil || c.end.GetStatus() != want || c.end.GetExited() {
					t.Fatalf("end = %v, want %q", c.end, want)
				}
				// Gone from the table: a second signal is not_found (SDK kill() → false).
				_, err = pc.SendSignal(testCtx(t), connect.NewRequest(&rpc.SendSignalRequest{Process: bySelectorPid(c.pid), Signal: sig}))
				if connect.CodeOf(err) != connect.CodeNotFound {
					t.Fatalf("second signal err = %v, want not_found", err)
				}
			})
		}
	}
}

// The process outlives a Start stream whose client went away, and can be
// reattached with Connect by pid or by tag.
func TestDisconnectKeepsProcessAndConnectReattaches(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	for _, codec := range codecs {
		for _, byTag := range []bool{false, true} {
			name := codec.name + "/pid"
			if byTag {
				name = codec.name + "/tag"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				pc := h.proc(codec.opts)
				tag := "job-" + name
				stdin := true
				req := startReq("/bin/sh", "-c", "echo started; read x; echo got $x")
				req.Tag, req.Stdin = &tag, &stdin
				ctx, cancel := context.WithCancel(testCtx(t))
				stream, err := pc.Start(ctx, connect.NewRequest(req))
				if err != nil {
					t.Fatal(err)
				}
				first := &collected{}
				for !strings.Contains(first.stdout.String(), "started") && stream.Receive() {
					first.add(stream.Msg().GetEvent())
				}
				cancel()
				stream.Close()

				list, err := pc.List(testCtx(t), connect.NewRequest(&rpc.ListRequest{}))
				if err != nil {
					t.Fatal(err)
				}
				var info *rpc.ProcessInfo
				for _, p := range list.Msg.GetProcesses() {
					if p.GetPid() == first.pid {
						info = p
					}
				}
				if info == nil || info.GetTag() != tag || info.GetConfig().GetCmd() != "/bin/sh" {
					t.Fatalf("process %d not listed after disconnect (or wrong info): %v", first.pid, list.Msg)
				}

				sel := bySelectorPid(first.pid)
				if byTag {
					sel = &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Tag{Tag: tag}}
				}
				conn, err := pc.Connect(testCtx(t), connect.NewRequest(&rpc.ConnectRequest{Process: sel}))
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				second := &collected{}
				if !conn.Receive() {
					t.Fatal(conn.Err())
				}
				second.add(conn.Msg().GetEvent())
				if second.pid != first.pid {
					t.Fatalf("connect start pid = %d, want %d", second.pid, first.pid)
				}
				if _, err := pc.SendInput(testCtx(t), connect.NewRequest(&rpc.SendInputRequest{
					Process: sel, Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: []byte("again\n")}},
				})); err != nil {
					t.Fatal(err)
				}
				for conn.Receive() {
					second.add(conn.Msg().GetEvent())
				}
				if err := conn.Err(); err != nil {
					t.Fatal(err)
				}
				if second.stdout.String() != "got again\n" || second.end == nil || second.end.GetExitCode() != 0 {
					t.Fatalf("connect got stdout %q end %v", second.stdout.String(), second.end)
				}
			})
		}
	}
}

func TestConnectUnknownProcess(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	for _, codec := range codecs {
		conn, err := h.proc(codec.opts).Connect(testCtx(t), connect.NewRequest(&rpc.ConnectRequest{Process: bySelectorPid(1 << 30)}))
		if err == nil {
			for conn.Receive() {
			}
			err = conn.Err()
		}
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%s: err = %v, want not_found", codec.name, err)
		}
	}
}

func TestPTYEchoAndResize(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	for _, codec := range codecs {
		t.Run(codec.name, func(t *testing.T) {
			t.Parallel()
			pc := h.proc(codec.opts)
			req := startReq("/bin/sh", "-c", "stty size; read line; echo line=$line; stty size")
			req.Pty = &rpc.PTY{Size: &rpc.PTY_Size{Cols: 80, Rows: 24}}
			stream, err := pc.Start(testCtx(t), connect.NewRequest(req))
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			c := &collected{}
			typed := false
			for stream.Receive() {
				c.add(stream.Msg().GetEvent())
				if !typed && strings.Contains(c.pty.String(), "24 80") {
					typed = true
					sel := bySelectorPid(c.pid)
					if _, err := pc.Update(testCtx(t), connect.NewRequest(&rpc.UpdateRequest{
						Process: sel, Pty: &rpc.PTY{Size: &rpc.PTY_Size{Cols: 100, Rows: 40}},
					})); err != nil {
						t.Fatal(err)
					}
					if _, err := pc.SendInput(testCtx(t), connect.NewRequest(&rpc.SendInputRequest{
						Process: sel, Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Pty{Pty: []byte("hello\n")}},
					})); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			out := c.pty.String()
			if c.stdout.Len() != 0 || c.stderr.Len() != 0 {
				t.Errorf("pty process produced pipe output: %q %q", c.stdout.String(), c.stderr.String())
			}
			// "hello" appears twice: the terminal's echo and the script's output.
			if strings.Count(out, "hello") < 2 || !strings.Contains(out, "line=hello") {
				t.Errorf("pty output lacks echo or line: %q", out)
			}
			if !strings.Contains(out, "40 100") {
				t.Errorf("resize not seen by stty: %q", out)
			}
			if c.end.GetExitCode() != 0 {
				t.Errorf("end = %v", c.end)
			}
		})
	}
}

func TestPTYOnlyOperations(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	pc := h.proc(nil)
	stdin := true
	req := startReq("/bin/cat")
	req.Stdin = &stdin
	stream, err := pc.Start(testCtx(t), connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	c := &collected{}
	stream.Receive()
	c.add(stream.Msg().GetEvent())
	_, err = pc.Update(testCtx(t), connect.NewRequest(&rpc.UpdateRequest{Process: bySelectorPid(c.pid), Pty: &rpc.PTY{Size: &rpc.PTY_Size{Cols: 1, Rows: 1}}}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("resize of pipe process: err = %v, want failed_precondition", err)
	}
	if _, err := pc.CloseStdin(testCtx(t), connect.NewRequest(&rpc.CloseStdinRequest{Process: bySelectorPid(c.pid)})); err != nil {
		t.Fatal(err)
	}
	for stream.Receive() {
	}
}

func TestEnvCwdAndUser(t *testing.T) {
	t.Parallel()
	workdir := t.TempDir()
	h := newEnvd(t, map[string]any{
		"envVars":        map[string]string{"FROM_INIT": "init", "OVERRIDE": "init"},
		"defaultWorkdir": workdir,
	})
	// t.TempDir's parent is 0700; nobody needs a reachable directory.
	other, err := os.MkdirTemp("", "envd-cwd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(other) })
	if err := os.Chmod(other, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		user   string
		cwd    *string
		envs   map[string]string
		script string
		want   string
	}{
		{"init and request env", "", nil, map[string]string{"OVERRIDE": "req"}, `echo "$FROM_INIT $OVERRIDE"`, "init req\n"},
		{"identity env", "", nil, nil, `echo "$USER $HOME"`, "root /root\n"},
		{"default workdir", "", nil, nil, "pwd", workdir + "\n"},
		{"explicit cwd", "", &other, nil, "pwd", other + "\n"},
		{"user nobody", "nobody", &other, nil, "id -u; id -g; echo $USER", "65534\n65534\nnobody\n"},
		{"user root", "root", nil, nil, "id -u", "0\n"},
	}
	for _, codec := range codecs {
		for _, tc := range cases {
			t.Run(codec.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				msg := startReq("/bin/sh", "-c", tc.script)
				msg.Process.Envs = tc.envs
				msg.Process.Cwd = tc.cwd
				req := connect.NewRequest(msg)
				if tc.user != "" {
					req.Header().Set("Authorization", basicUser(tc.user))
				}
				c := runToEnd(t, h.proc(codec.opts), req)
				if got := c.stdout.String(); got != tc.want {
					t.Errorf("stdout = %q (stderr %q), want %q", got, c.stderr.String(), tc.want)
				}
			})
		}
	}
	t.Run("unknown user", func(t *testing.T) {
		req := connect.NewRequest(startReq("/bin/true"))
		req.Header().Set("Authorization", basicUser("no-such-user-xyz"))
		stream, err := h.proc(nil).Start(testCtx(t), req)
		if err == nil {
			for stream.Receive() {
			}
			err = stream.Err()
		}
		if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "no-such-user-xyz") {
			t.Fatalf("err = %v, want unauthenticated naming the user", err)
		}
	})
	t.Run("missing cwd", func(t *testing.T) {
		missing := filepath.Join(other, "missing")
		msg := startReq("/bin/true")
		msg.Process.Cwd = &missing
		stream, err := h.proc(nil).Start(testCtx(t), connect.NewRequest(msg))
		if err == nil {
			for stream.Receive() {
			}
			err = stream.Err()
		}
		var cerr *connect.Error
		if !errors.As(err, &cerr) || cerr.Code() != connect.CodeInvalidArgument {
			t.Fatalf("err = %v, want invalid_argument", err)
		}
	})
}

func TestDefaultUserFromInit(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, map[string]any{"defaultUser": "nobody"})
	c := runToEnd(t, h.proc(nil), connect.NewRequest(startReq("/bin/sh", "-c", "id -un; pwd")))
	// nobody's home (/nonexistent) does not exist, so the cwd falls back to /.
	if got := c.stdout.String(); got != "nobody\n/\n" {
		t.Fatalf("stdout = %q (stderr %q)", got, c.stderr.String())
	}
}

func TestKeepaliveEvents(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	req := connect.NewRequest(startReq("/bin/sh", "-c", "sleep 1.5; echo done"))
	req.Header().Set("Keepalive-Ping-Interval", "1")
	stream, err := h.proc(nil).Start(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	keepalives := 0
	for stream.Receive() {
		if stream.Msg().GetEvent().GetKeepalive() != nil {
			keepalives++
		}
	}
	// The process sleeps longer than the interval, and output waits for the
	// sleep, so at least one keepalive must precede the end.
	if keepalives == 0 {
		t.Fatal("no keepalive event")
	}
}

// A deadline on the Start call (SDK timeoutMs) bounds the process itself.
func TestStartDeadlineKillsProcess(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	ctx, cancel := context.WithTimeout(testCtx(t), 500*1e6)
	defer cancel()
	stream, err := h.proc(nil).Start(ctx, connect.NewRequest(startReq("/bin/sleep", "300")))
	if err != nil {
		t.Fatal(err)
	}
	c := &collected{}
	if stream.Receive() {
		c.add(stream.Msg().GetEvent())
	}
	for stream.Receive() {
	}
	stream.Close()
	// Wait for the process to be reaped: Connect returns not_found once gone.
	for {
		conn, err := h.proc(nil).Connect(testCtx(t), connect.NewRequest(&rpc.ConnectRequest{Process: bySelectorPid(c.pid)}))
		if err == nil {
			for conn.Receive() {
				if conn.Msg().GetEvent().GetEnd() != nil {
					if conn.Msg().GetEvent().GetEnd().GetStatus() != "signal: killed" {
						t.Fatalf("end = %v", conn.Msg().GetEvent().GetEnd())
					}
					return
				}
			}
			err = conn.Err()
			conn.Close()
		}
		if connect.CodeOf(err) == connect.CodeNotFound {
			return
		}
		if testCtx(t).Err() != nil {
			t.Fatal("process not killed at its deadline")
		}
	}
}
