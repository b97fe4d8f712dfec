// Package procsvc implements the envd process.Process Connect service:
// starting commands (pipes or a PTY) as a chosen OS user, streaming their
// output, and letting later calls attach, feed input, resize and signal.
package procsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/creack/pty"

	rpc "github.com/hearth-sandbox/hearth/gen/envd/process"
	"github.com/hearth-sandbox/hearth/gen/envd/process/processconnect"
	"github.com/hearth-sandbox/hearth/internal/envd/userenv"
)

// KeepaliveHeader is the request header (seconds) with which the E2B SDK asks
// for KeepAlive events on long-lived streams, so idle proxies keep them open.
const KeepaliveHeader = "Keepalive-Ping-Interval"

// defaultPath is used when envd itself runs without PATH (as PID 1's child).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Service implements processconnect.ProcessHandler.
type Service struct {
	state *userenv.State
	log   *slog.Logger

	mu    sync.Mutex
	procs map[uint32]*proc
}

var _ processconnect.ProcessHandler = (*Service)(nil)

// New returns a Service whose processes get state's env, user and workdir.
func New(state *userenv.State, log *slog.Logger) *Service {
	return &Service{state: state, log: log, procs: make(map[uint32]*proc)}
}

// Close kills every process still running (used on shutdown and in tests).
func (s *Service) Close() {
	s.mu.Lock()
	procs := slices.Collect(maps.Values(s.procs))
	s.mu.Unlock()
	for _, p := range procs {
		_ = p.signal(syscall.SIGKILL)
		<-p.exited
	}
}

// Start launches the process and streams its events until it ends. If the
// client goes away first the process keeps running (E2B semantics: a
// background command survives its stream); the request's deadline, when the
// client set one, bounds the process's lifetime instead.
func (s *Service) Start(ctx context.Context, req *connect.Request[rpc.StartRequest], stream *connect.ServerStream[rpc.StartResponse]) error {
	u, err := s.state.ResolveHeader(req.Header())
	if err != nil {
		return userError(err)
	}
	p, sub, err := s.launch(ctx, u, req.Msg)
	if err != nil {
		return err
	}
	defer p.unsubscribe(sub)
	send := func(ev *rpc.ProcessEvent) error { return stream.Send(&rpc.StartResponse{Event: ev}) }
	if err := send(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_Start{Start: &rpc.ProcessEvent_StartEvent{Pid: p.pid}}}); err != nil {
		return err
	}
	return s.forward(ctx, req.Header().Get(KeepaliveHeader), sub, send)
}

// Connect attaches to a running process and streams its further events.
func (s *Service) Connect(ctx context.Context, req *connect.Request[rpc.ConnectRequest], stream *connect.ServerStream[rpc.ConnectResponse]) error {
	p, err := s.find(req.Msg.GetProcess())
	if err != nil {
		return err
	}
	sub := newSubscriber()
	if !p.subscribe(sub) {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("process %d has already exited", p.pid))
	}
	defer p.unsubscribe(sub)
	send := func(ev *rpc.ProcessEvent) error { return stream.Send(&rpc.ConnectResponse{Event: ev}) }
	if err := send(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_Start{Start: &rpc.ProcessEvent_StartEvent{Pid: p.pid}}}); err != nil {
		return err
	}
	return s.forward(ctx, req.Header().Get(KeepaliveHeader), sub, send)
}

// forward sends queued events until the EndEvent went out or ctx ends.
func (s *Service) forward(ctx context.Context, keepalive string, sub *subscriber, send func(*rpc.ProcessEvent) error) error {
	var tick <-chan time.Time
	if secs, err := strconv.Atoi(keepalive); err == nil && secs > 0 {
		t := time.NewTicker(time.Duration(secs) * time.Second)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
			if err := send(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_Keepalive{Keepalive: &rpc.ProcessEvent_KeepAlive{}}}); err != nil {
				return err
			}
		case <-sub.notify:
			for _, ev := range sub.take() {
				if err := send(ev); err != nil {
					return err
				}
				if _, ok := ev.Event.(*rpc.ProcessEvent_End); ok {
					return nil
				}
			}
		}
	}
}

// launch starts the process with sub already subscribed, so the caller sees
// every byte of output from the first one.
func (s *Service) launch(ctx context.Context, u userenv.User, req *rpc.StartRequest) (*proc, *subscriber, error) {
	cfg := req.GetProcess()
	if cfg == nil || cfg.GetCmd() == "" {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, errors.New("process.cmd is required"))
	}
	cwd := s.state.Workdir(u)
	if cfg.Cwd != nil && *cfg.Cwd != "" {
		cwd = s.state.ExpandPath(*cfg.Cwd, u)
	}
	if st, err := os.Stat(cwd); err != nil || !st.IsDir() {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd %q is not a directory", cwd))
	}

	cmd := exec.Command(cfg.GetCmd(), cfg.GetArgs()...)
	cmd.Dir = cwd
	cmd.Env = s.environ(u, cfg.GetEnvs())
	attr := &syscall.SysProcAttr{}
	if userenv.NeedsCredential(u) {
		attr.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
	}

	p := &proc{
		tag:    req.Tag,
		config: cfg,
		cmd:    cmd,
		subs:   make(map[*subscriber]struct{}),
		exited: make(chan struct{}),
	}
	sub := newSubscriber()
	p.subs[sub] = struct{}{}

	var pumps sync.WaitGroup
	var readers []*os.File
	if req.GetPty() != nil {
		// Setsid+Setctty: the PTY becomes the controlling terminal of a new
		// session, so job control and Ctrl-C work as in a terminal.
		attr.Setsid = true
		attr.Setctty = true
		size := req.GetPty().GetSize()
		ws := &pty.Winsize{Cols: uint16(size.GetCols()), Rows: uint16(size.GetRows())}
		if ws.Cols == 0 || ws.Rows == 0 {
			ws.Cols, ws.Rows = 80, 24
		}
		master, err := pty.StartWithAttrs(cmd, ws, attr)
		if err != nil {
			return nil, nil, startError(err)
		}
		p.ptyFile = master
		readers = append(readers, master)
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			p.pump(master, func(b []byte) *rpc.ProcessEvent_DataEvent {
				return &rpc.ProcessEvent_DataEvent{Output: &rpc.ProcessEvent_DataEvent_Pty{Pty: b}}
			})
		}()
	} else {
		// Own process group: SendSignal reaches the whole command tree.
		attr.Setpgid = true
		cmd.SysProcAttr = attr
		outR, outW, err := os.Pipe()
		if err != nil {
			return nil, nil, connect.NewError(connect.CodeInternal, err)
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			closeAll(outR, outW)
			return nil, nil, connect.NewError(connect.CodeInternal, err)
		}
		cmd.Stdout, cmd.Stderr = outW, errW
		var inR, inW *os.File
		if req.Stdin == nil || req.GetStdin() {
			if inR, inW, err = os.Pipe(); err != nil {
				closeAll(outR, outW, errR, errW)
				return nil, nil, connect.NewError(connect.CodeInternal, err)
			}
			cmd.Stdin = inR
		}
		err = cmd.Start()
		// The child holds its own copies; ours must go so EOF can arrive.
		closeAll(outW, errW)
		if inR != nil {
			_ = inR.Close()
		}
		if err != nil {
			closeAll(outR, errR)
			if inW != nil {
				_ = inW.Close()
			}
			return nil, nil, startError(err)
		}
		if inW != nil {
			p.stdin = inW
		}
		readers = append(readers, outR, errR)
		pumps.Add(2)
		go func() {
			defer pumps.Done()
			p.pump(outR, func(b []byte) *rpc.ProcessEvent_DataEvent {
				return &rpc.ProcessEvent_DataEvent{Output: &rpc.ProcessEvent_DataEvent_Stdout{Stdout: b}}
			})
		}()
		go func() {
			defer pumps.Done()
			p.pump(errR, func(b []byte) *rpc.ProcessEvent_DataEvent {
				return &rpc.ProcessEvent_DataEvent{Output: &rpc.ProcessEvent_DataEvent_Stderr{Stderr: b}}
			})
		}()
	}
	if p.ptyFile != nil {
		p.stdin = nil // PTY input goes to the master, see writeInput
	}
	p.pid = uint32(cmd.Process.Pid)

	s.mu.Lock()
	s.procs[p.pid] = p
	s.mu.Unlock()
	s.log.Info("process started", "pid", p.pid, "cmd", cfg.GetCmd(), "user", u.Name, "pty", p.ptyFile != nil)

	go p.wait(&pumps, readers, func(end *rpc.ProcessEvent_EndEvent) {
		s.mu.Lock()
		delete(s.procs, p.pid)
		s.mu.Unlock()
		s.log.Info("process ended", "pid", p.pid, "status", end.GetStatus())
	})

	// The client's deadline (Connect-Timeout-Ms / grpc-timeout) is the
	// command's timeout, independent of the stream staying connected.
	if deadline, ok := ctx.Deadline(); ok {
		go func() {
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			select {
			case <-t.C:
				s.log.Info("process timed out", "pid", p.pid)
				_ = p.signal(syscall.SIGKILL)
			case <-p.exited:
			}
		}()
	}
	return p, sub, nil
}

// environ builds the process environment: envd's own, then the user's
// identity, then /init's variables, then the request's (later wins).
func (s *Service) environ(u userenv.User, reqEnv map[string]string) []string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := cutEnv(kv); ok {
			env[k] = v
		}
	}
	if env["PATH"] == "" {
		env["PATH"] = defaultPath
	}
	env["HOME"] = u.Home
	env["USER"] = u.Name
	env["LOGNAME"] = u.Name
	maps.Copy(env, s.state.Env())
	maps.Copy(env, reqEnv)
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

func cutEnv(kv string) (string, string, bool) {
	for i := 1; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return "", "", false
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

func startError(err error) error {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("starting process: %w", err))
	}
	if errors.Is(err, os.ErrPermission) {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("starting process: %w", err))
	}
	return connect.NewError(connect.CodeInternal, fmt.Errorf("starting process: %w", err))
}

func userError(err error) error {
	if errors.Is(err, userenv.ErrUnknownUser) {
		return connect.NewError(connect.CodeUnauthenticated, err)
	}
	return connect.NewError(connect.CodeInvalidArgument, err)
}

func (s *Service) find(sel *rpc.ProcessSelector) (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch v := sel.GetSelector().(type) {
	case *rpc.ProcessSelector_Pid:
		if p, ok := s.procs[v.Pid]; ok {
			return p, nil
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d not found", v.Pid))
	case *rpc.ProcessSelector_Tag:
		for _, p := range s.procs {
			if p.tag != nil && *p.tag == v.Tag {
				return p, nil
			}
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with tag %q not found", v.Tag))
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("process selector (pid or tag) is required"))
	}
}

// List returns the running processes.
func (s *Service) List(_ context.Context, _ *connect.Request[rpc.ListRequest]) (*connect.Response[rpc.ListResponse], error) {
	s.mu.Lock()
	pids := slices.Sorted(maps.Keys(s.procs))
	out := make([]*rpc.ProcessInfo, 0, len(pids))
	for _, pid := range pids {
		out = append(out, s.procs[pid].info())
	}
	s.mu.Unlock()
	return connect.NewResponse(&rpc.ListResponse{Processes: out}), nil
}

// Update resizes a PTY process's terminal.
func (s *Service) Update(_ context.Context, req *connect.Request[rpc.UpdateRequest]) (*connect.Response[rpc.UpdateResponse], error) {
	p, err := s.find(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if size := req.Msg.GetPty().GetSize(); size != nil {
		if p.ptyFile == nil {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process %d has no pty", p.pid))
		}
		if err := p.resize(size.GetCols(), size.GetRows()); err != nil {
			return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("resizing pty: %w", err))
		}
	}
	return connect.NewResponse(&rpc.UpdateResponse{}), nil
}

// writeInput writes input to the PTY master or the stdin pipe.
func (p *proc) writeInput(in *rpc.ProcessInput) error {
	var data []byte
	switch v := in.GetInput().(type) {
	case *rpc.ProcessInput_Stdin:
		data = v.Stdin
	case *rpc.ProcessInput_Pty:
		data = v.Pty
	default:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("input (stdin or pty) is required"))
	}
	if p.ptyFile != nil {
		if _, err := p.ptyFile.Write(data); err != nil {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("writing to pty: %w", err))
		}
		return nil
	}
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin == nil {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("stdin of process %d is not open (start it with stdin enabled)", p.pid))
	}
	if _, err := p.stdin.Write(data); err != nil {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("writing to stdin: %w", err))
	}
	return nil
}

// SendInput writes one chunk of input.
func (s *Service) SendInput(_ context.Context, req *connect.Request[rpc.SendInputRequest]) (*connect.Response[rpc.SendInputResponse], error) {
	p, err := s.find(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.writeInput(req.Msg.GetInput()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&rpc.SendInputResponse{}), nil
}

// StreamInput takes a start event naming the process, then data events.
func (s *Service) StreamInput(_ context.Context, stream *connect.ClientStream[rpc.StreamInputRequest]) (*connect.Response[rpc.StreamInputResponse], error) {
	var p *proc
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *rpc.StreamInputRequest_Start:
			found, err := s.find(ev.Start.GetProcess())
			if err != nil {
				return nil, err
			}
			p = found
		case *rpc.StreamInputRequest_Data:
			if p == nil {
				return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("data event before start event"))
			}
			if err := p.writeInput(ev.Data.GetInput()); err != nil {
				return nil, err
			}
		case *rpc.StreamInputRequest_Keepalive:
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&rpc.StreamInputResponse{}), nil
}

// SendSignal delivers SIGTERM or SIGKILL to the process's group.
func (s *Service) SendSignal(_ context.Context, req *connect.Request[rpc.SendSignalRequest]) (*connect.Response[rpc.SendSignalResponse], error) {
	p, err := s.find(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	var sig syscall.Signal
	switch req.Msg.GetSignal() {
	case rpc.Signal_SIGNAL_SIGKILL:
		sig = syscall.SIGKILL
	case rpc.Signal_SIGNAL_SIGTERM:
		sig = syscall.SIGTERM
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("unsupported signal %v", req.Msg.GetSignal()))
	}
	if err := p.signal(sig); err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("signalling process %d: %w", p.pid, err))
	}
	return connect.NewResponse(&rpc.SendSignalResponse{}), nil
}

// CloseStdin closes a pipe-mode process's stdin (EOF).
func (s *Service) CloseStdin(_ context.Context, req *connect.Request[rpc.CloseStdinRequest]) (*connect.Response[rpc.CloseStdinResponse], error) {
	p, err := s.find(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if p.ptyFile != nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("closing stdin is not supported for pty processes; send Ctrl-D (0x04)"))
	}
	p.closeStdin()
	return connect.NewResponse(&rpc.CloseStdinResponse{}), nil
}
