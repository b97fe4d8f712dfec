// Package agentclient is the control plane's client of a host agent
// (hostagent.v1 over Connect): it turns the service's host calls into RPCs
// and the agent's errors back into service errors. It lives on the control
// plane's side so that the agent imports nothing of the control plane.
package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"connectrpc.com/connect"

	pb "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
	"github.com/hearth-sandbox/hearth/gen/hostagent/v1/hostagentv1connect"
	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/hostwire"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// Client is the control plane's Connect client for one host agent.
type Client struct {
	rpc hostagentv1connect.HostAgentServiceClient
}

var _ service.HostClient = (*Client)(nil)

// NewClient talks to the agent at baseURL (e.g. http://10.0.0.5:7070).
// hc nil means http.DefaultClient. Streaming calls (Exec, ReadFile,
// WriteFile) work over HTTP/1.1 with the Connect protocol.
func NewClient(baseURL string, hc *http.Client, opts ...ClientOption) *Client {
	var co clientOpts
	for _, o := range opts {
		o(&co)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	var copts []connect.ClientOption
	if co.token != "" {
		copts = append(copts, connect.WithInterceptors(tokenInterceptor(co.token)))
	}
	return &Client{rpc: hostagentv1connect.NewHostAgentServiceClient(hc, strings.TrimSuffix(baseURL, "/"), copts...)}
}

type clientOpts struct{ token string }

// ClientOption configures NewClient.
type ClientOption func(*clientOpts)

// WithToken sends the agent's token (agent.Options.Token) with every call.
func WithToken(token string) ClientOption { return func(o *clientOpts) { o.token = token } }

func (c *Client) CreateSandbox(ctx context.Context, req service.CreateSandboxRequest) (service.SandboxRuntime, error) {
	res, err := c.rpc.CreateSandbox(ctx, connect.NewRequest(&pb.CreateSandboxRequest{
		SandboxId:     req.SandboxID,
		TemplateId:    req.TemplateID,
		TemplateKind:  hostwire.KindToPB(req.TemplateKind),
		Vcpus:         int32(req.VCPUs),
		MemoryMb:      int32(req.MemoryMB),
		DiskSizeMb:    int32(req.DiskSizeMB),
		Env:           req.Env,
		AccessToken:   req.AccessToken,
		TimeoutS:      int32(req.TimeoutS),
		AllowInternet: req.Egress.AllowInternet,
		AllowOut:      req.Egress.AllowOut,
		DenyOut:       req.Egress.DenyOut,
		Volumes:       volumesToPB(req.Volumes),
		EgressRules:   hostwire.RulesToPB(req.EgressRules),
	}))
	if err != nil {
		return service.SandboxRuntime{}, serviceErr("create sandbox", err)
	}
	return fromPB(res.Msg.Sandbox), nil
}

func (c *Client) DestroySandbox(ctx context.Context, sandboxID string) error {
	_, err := c.rpc.DestroySandbox(ctx, connect.NewRequest(&pb.DestroySandboxRequest{SandboxId: sandboxID}))
	return serviceErr("destroy sandbox", err)
}

func (c *Client) PauseSandbox(ctx context.Context, sandboxID string) error {
	_, err := c.rpc.PauseSandbox(ctx, connect.NewRequest(&pb.PauseSandboxRequest{SandboxId: sandboxID}))
	return serviceErr("pause sandbox", err)
}

func (c *Client) ResumeSandbox(ctx context.Context, req service.ResumeSandboxRequest) (service.SandboxRuntime, error) {
	res, err := c.rpc.ResumeSandbox(ctx, connect.NewRequest(&pb.ResumeSandboxRequest{
		SandboxId: req.SandboxID, AccessToken: req.AccessToken,
		AllowInternet: req.Egress.AllowInternet, AllowOut: req.Egress.AllowOut, DenyOut: req.Egress.DenyOut,
	}))
	if err != nil {
		return service.SandboxRuntime{}, serviceErr("resume sandbox", err)
	}
	return fromPB(res.Msg.Sandbox), nil
}

func (c *Client) UpdateSandboxNetwork(ctx context.Context, sandboxID string, p egress.Policy) error {
	_, err := c.rpc.UpdateSandboxNetwork(ctx, connect.NewRequest(&pb.UpdateSandboxNetworkRequest{
		SandboxId: sandboxID, AllowInternet: p.AllowInternet, AllowOut: p.AllowOut, DenyOut: p.DenyOut,
	}))
	return serviceErr("update sandbox network", err)
}

func (c *Client) ListSandboxes(ctx context.Context) ([]service.SandboxRuntime, error) {
	res, err := c.rpc.ListSandboxes(ctx, connect.NewRequest(&pb.ListSandboxesRequest{}))
	if err != nil {
		return nil, serviceErr("list sandboxes", err)
	}
	out := make([]service.SandboxRuntime, 0, len(res.Msg.Sandboxes))
	for _, s := range res.Msg.Sandboxes {
		out = append(out, fromPB(s))
	}
	return out, nil
}

// Exec runs a command and collects its output.
func (c *Client) Exec(ctx context.Context, sandboxID string, req service.ExecRequest) (service.ExecResult, error) {
	var stdout, stderr strings.Builder
	code, err := c.ExecStream(ctx, sandboxID, req, func(stream string, p []byte) error {
		if stream == service.StreamStderr {
			stderr.Write(p)
		} else {
			stdout.Write(p)
		}
		return nil
	})
	if err != nil {
		return service.ExecResult{}, err
	}
	return service.ExecResult{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: code}, nil
}

// ExecStream runs a command, handing output chunks to out as they arrive,
// and returns the exit code.
func (c *Client) ExecStream(ctx context.Context, sandboxID string, req service.ExecRequest, out service.ExecOutput) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.rpc.Exec(ctx, connect.NewRequest(&pb.ExecRequest{
		SandboxId: sandboxID, Cmd: req.Cmd, Args: req.Args, Env: req.Env, Cwd: req.Cwd, TimeoutS: int32(req.TimeoutS),
	}))
	if err != nil {
		return 0, serviceErr("exec", err)
	}
	defer st.Close()
	for st.Receive() {
		switch ev := st.Msg().Event.(type) {
		case *pb.ExecResponse_Stdout:
			err = out(service.StreamStdout, ev.Stdout)
		case *pb.ExecResponse_Stderr:
			err = out(service.StreamStderr, ev.Stderr)
		case *pb.ExecResponse_Exit:
			code := int(ev.Exit.ExitCode)
			if ev.Exit.Error != "" && code == 0 {
				code = -1 // killed or lost: never report success
			}
			return code, nil
		}
		if err != nil {
			return 0, err
		}
	}
	if err := st.Err(); err != nil {
		return 0, serviceErr("exec", err)
	}
	return 0, errors.New("exec: stream ended without an exit status")
}

// ReadFile returns the file's bytes as a stream. Errors that exist before
// the first byte (no such sandbox, no such file) are returned here, not on
// the first Read. Close cancels the transfer.
func (c *Client) ReadFile(ctx context.Context, sandboxID, path string) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	st, err := c.rpc.ReadFile(ctx, connect.NewRequest(&pb.ReadFileRequest{SandboxId: sandboxID, Path: path}))
	return readStream(st, err, cancel)
}

// readStream turns a file stream into a reader, returning the errors that
// come before the first byte.
func readStream(st *connect.ServerStreamForClient[pb.ReadFileResponse], err error, cancel context.CancelFunc) (io.ReadCloser, error) {
	if err != nil {
		cancel()
		return nil, serviceErr("read file", err)
	}
	r := &fileReader{st: st, cancel: cancel}
	if !st.Receive() {
		err := st.Err()
		r.Close()
		if err != nil {
			return nil, serviceErr("read file", err)
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	r.buf = st.Msg().Data
	return r, nil
}

type fileReader struct {
	st     *connect.ServerStreamForClient[pb.ReadFileResponse]
	cancel context.CancelFunc
	buf    []byte
	err    error
	once   sync.Once
}

func (r *fileReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if !r.st.Receive() {
			r.err = io.EOF
			if err := r.st.Err(); err != nil {
				r.err = serviceErr("read file", err)
			}
			continue
		}
		r.buf = r.st.Msg().Data
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *fileReader) Close() error {
	r.once.Do(func() {
		r.cancel()
		r.st.Close()
	})
	return nil
}

// WriteFile streams r into path in chunks.
func (c *Client) WriteFile(ctx context.Context, sandboxID, path string, r io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := c.rpc.WriteFile(ctx)
	err := st.Send(&pb.WriteFileRequest{Msg: &pb.WriteFileRequest_Header{Header: &pb.WriteFileHeader{SandboxId: sandboxID, Path: path}}})
	if err == nil {
		err = hostwire.SendChunks(r, func(b []byte) error {
			return st.Send(&pb.WriteFileRequest{Msg: &pb.WriteFileRequest_Data{Data: b}})
		})
	}
	var re *hostwire.ReadError
	if errors.As(err, &re) {
		return fmt.Errorf("write file %s: %w", path, re)
	}
	// A Send error (io.EOF) means the server answered early: the real
	// error comes from CloseAndReceive.
	if _, cerr := st.CloseAndReceive(); cerr != nil {
		return serviceErr("write file", cerr)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return serviceErr("write file", err)
	}
	return nil
}

func (c *Client) CreateSnapshot(ctx context.Context, sandboxID, templateID string) (service.SnapshotInfo, error) {
	res, err := c.rpc.CreateSnapshot(ctx, connect.NewRequest(&pb.CreateSnapshotRequest{SandboxId: sandboxID, TemplateId: templateID}))
	if err != nil {
		return service.SnapshotInfo{}, serviceErr("create snapshot", err)
	}
	m := res.Msg
	return service.SnapshotInfo{TemplateID: m.TemplateId, VCPUs: int(m.Vcpus), MemoryMB: int(m.MemoryMb), DiskSizeMB: int(m.DiskSizeMb)}, nil
}

func (c *Client) DeleteSnapshot(ctx context.Context, templateID string) error {
	_, err := c.rpc.DeleteSnapshot(ctx, connect.NewRequest(&pb.DeleteSnapshotRequest{TemplateId: templateID}))
	return serviceErr("delete snapshot", err)
}

func (c *Client) Ping(ctx context.Context) (service.HostInfo, error) {
	res, err := c.rpc.Ping(ctx, connect.NewRequest(&pb.PingRequest{}))
	if err != nil {
		return service.HostInfo{}, serviceErr("ping", err)
	}
	m := res.Msg
	return service.HostInfo{
		HostID:       m.HostId,
		VCPUs:        int(m.GetCapacity().GetVcpus()),
		MemoryMB:     int(m.GetCapacity().GetMemoryMb()),
		DiskMB:       int(m.GetCapacity().GetDiskMb()),
		SandboxCount: int(m.SandboxCount),
		Driver:       m.Driver,
	}, nil
}

func fromPB(s *pb.Sandbox) service.SandboxRuntime {
	rt := service.SandboxRuntime{
		SandboxID: s.GetSandboxId(),
		State:     string(hostwire.StateFromPB(s.GetState())),
		Address:   s.GetAddress(),
	}
	if s.GetStartedAt() != nil {
		rt.StartedAt = s.GetStartedAt().AsTime()
	}
	return rt
}

// serviceErr is the one place RPC errors become the service's typed errors.
// The message is the agent's (safe to show: it names the sandbox, field or
// state); the connect error stays as the cause for logs.
func serviceErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return fmt.Errorf("host agent: %s: %w", op, err)
	}
	msg := ce.Message()
	switch ce.Code() {
	case connect.CodeNotFound:
		return &service.Error{Kind: service.KindNotFound, Message: msg, Err: err}
	case connect.CodeInvalidArgument:
		return &service.Error{Kind: service.KindInvalidArgument, Field: ce.Meta().Get(hostwire.FieldHeader), Message: msg, Err: err}
	case connect.CodeFailedPrecondition, connect.CodeAlreadyExists, connect.CodeAborted:
		return &service.Error{Kind: service.KindConflict, Message: msg, Err: err}
	case connect.CodeUnimplemented:
		// The host cannot do this at all (e.g. a VMM without snapshots): the
		// sandbox was not touched.
		return &service.Error{Kind: service.KindUnimplemented, Message: "host agent: " + op + ": " + msg, Err: err}
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeResourceExhausted:
		return &service.Error{Kind: service.KindUnavailable, Message: "host agent: " + op + ": " + msg, Err: err}
	case connect.CodeUnauthenticated, connect.CodePermissionDenied:
		// The agent refused the control plane itself: a configuration
		// problem, not the end user's.
		return &service.Error{Kind: service.KindUnavailable, Message: "host agent refused the control plane's credentials", Err: err}
	case connect.CodeCanceled:
		return fmt.Errorf("host agent: %s: %w", op, context.Canceled)
	}
	return fmt.Errorf("host agent: %s: %w", op, err)
}

func tokenInterceptor(token string) connect.Interceptor {
	return tokenIC(token)
}

// tokenIC adds hostwire.TokenHeader to unary and streaming calls.
type tokenIC string

func (t tokenIC) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set(hostwire.TokenHeader, string(t))
		return next(ctx, req)
	}
}

func (t tokenIC) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set(hostwire.TokenHeader, string(t))
		return conn
	}
}

func (t tokenIC) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

var _ service.ConsoleLogReader = (*Client)(nil)

func (c *Client) ReadConsoleLog(ctx context.Context, sandboxID string, offset int64, maxBytes int) ([]byte, int64, error) {
	res, err := c.rpc.ReadConsoleLog(ctx, connect.NewRequest(&pb.ReadConsoleLogRequest{
		SandboxId: sandboxID, Offset: offset, MaxBytes: int32(maxBytes),
	}))
	if err != nil {
		return nil, 0, serviceErr("read console log", err)
	}
	return res.Msg.Data, res.Msg.Size, nil
}
