package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
	"github.com/hearth-sandbox/hearth/gen/hostagent/v1/hostagentv1connect"
	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/hostwire"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/templatebuild"
)

// rpcServer implements the HostAgentService over a Manager.
type rpcServer struct {
	a *Agent
}

var _ hostagentv1connect.HostAgentServiceHandler = (*rpcServer)(nil)

func (s *rpcServer) m() *Manager { return s.a.mgr }

func (s *rpcServer) CreateSandbox(ctx context.Context, req *connect.Request[pb.CreateSandboxRequest]) (*connect.Response[pb.CreateSandboxResponse], error) {
	r := req.Msg
	pol, err := policyFromPB(r.AllowInternet, r.AllowOut, r.DenyOut)
	if err != nil {
		return nil, connectErr(err)
	}
	in, err := s.m().Create(ctx, Spec{
		ID:           r.SandboxId,
		TemplateID:   r.TemplateId,
		TemplateKind: hostwire.KindFromPB(r.TemplateKind),
		VCPUs:        int(r.Vcpus),
		MemoryMB:     int(r.MemoryMb),
		DiskSizeMB:   int(r.DiskSizeMb),
		Env:          r.Env,
		AccessToken:  r.AccessToken,
		TimeoutS:     int(r.TimeoutS),
		Egress:       pol,
		Volumes:      volumesFromPB(r.Volumes),
		EgressRules:  hostwire.RulesFromPB(r.EgressRules),
	})
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.CreateSandboxResponse{Sandbox: toPB(in)}), nil
}

func (s *rpcServer) DestroySandbox(ctx context.Context, req *connect.Request[pb.DestroySandboxRequest]) (*connect.Response[pb.DestroySandboxResponse], error) {
	if err := s.m().Destroy(ctx, req.Msg.SandboxId); err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.DestroySandboxResponse{}), nil
}

func (s *rpcServer) PauseSandbox(ctx context.Context, req *connect.Request[pb.PauseSandboxRequest]) (*connect.Response[pb.PauseSandboxResponse], error) {
	in, err := s.m().Pause(ctx, req.Msg.SandboxId)
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.PauseSandboxResponse{Sandbox: toPB(in)}), nil
}

func (s *rpcServer) ResumeSandbox(ctx context.Context, req *connect.Request[pb.ResumeSandboxRequest]) (*connect.Response[pb.ResumeSandboxResponse], error) {
	r := req.Msg
	pol, err := policyFromPB(r.AllowInternet, r.AllowOut, r.DenyOut)
	if err != nil {
		return nil, connectErr(err)
	}
	in, err := s.m().Resume(ctx, r.SandboxId, r.AccessToken, pol)
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.ResumeSandboxResponse{Sandbox: toPB(in)}), nil
}

func (s *rpcServer) UpdateSandboxNetwork(ctx context.Context, req *connect.Request[pb.UpdateSandboxNetworkRequest]) (*connect.Response[pb.UpdateSandboxNetworkResponse], error) {
	r := req.Msg
	pol, err := policyFromPB(r.AllowInternet, r.AllowOut, r.DenyOut)
	if err != nil {
		return nil, connectErr(err)
	}
	in, err := s.m().SetNetwork(ctx, r.SandboxId, pol)
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.UpdateSandboxNetworkResponse{Sandbox: toPB(in)}), nil
}

// policyFromPB validates egress rules again on the host: the agent never
// trusts its caller to have done it.
func policyFromPB(allowInternet bool, allowOut, denyOut []string) (egress.Policy, error) {
	p, err := egress.New(allowInternet, allowOut, denyOut)
	var re *egress.RuleError
	if errors.As(err, &re) {
		return egress.Policy{}, &FieldError{Field: re.Field, Msg: re.Error()}
	}
	return p, err
}

func (s *rpcServer) ListSandboxes(ctx context.Context, _ *connect.Request[pb.ListSandboxesRequest]) (*connect.Response[pb.ListSandboxesResponse], error) {
	var out []*pb.Sandbox
	for _, in := range s.m().List() {
		out = append(out, toPB(in))
	}
	return connect.NewResponse(&pb.ListSandboxesResponse{Sandboxes: out}), nil
}

func (s *rpcServer) Ping(ctx context.Context, _ *connect.Request[pb.PingRequest]) (*connect.Response[pb.PingResponse], error) {
	h, err := s.a.HostInfo()
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.PingResponse{
		HostId:        h.HostID,
		Driver:        h.Driver,
		RootfsBackend: h.RootfsBackend,
		Capacity:      &pb.Resources{Vcpus: int32(h.VCPUs), MemoryMb: h.MemoryMB, DiskMb: h.DiskMB},
		Usage:         &pb.Resources{Vcpus: int32(h.UsedVCPUs), MemoryMb: h.UsedMemoryMB, DiskMb: h.UsedDiskMB},
		SandboxCount:  int32(h.SandboxCount),
		DiskFreeMb:    h.DiskFreeMB,
	}), nil
}

func (s *rpcServer) Exec(ctx context.Context, req *connect.Request[pb.ExecRequest], st *connect.ServerStream[pb.ExecResponse]) error {
	r := req.Msg
	e, user, err := s.m().envdOf(r.SandboxId)
	if err != nil {
		return connectErr(err)
	}
	if r.User != "" {
		user = r.User
	}
	exit, err := e.Exec(ctx, ExecSpec{
		Cmd: r.Cmd, Args: r.Args, Env: r.Env, Cwd: r.Cwd, User: user,
		Timeout: secs(r.TimeoutS),
	}, func(stream Stream, p []byte) error {
		msg := &pb.ExecResponse{}
		if stream == Stderr {
			msg.Event = &pb.ExecResponse_Stderr{Stderr: p}
		} else {
			msg.Event = &pb.ExecResponse_Stdout{Stdout: p}
		}
		return st.Send(msg)
	})
	if err != nil {
		return connectErr(fmt.Errorf("exec in %s: %w", r.SandboxId, err))
	}
	return st.Send(&pb.ExecResponse{Event: &pb.ExecResponse_Exit{Exit: &pb.ExitStatus{
		ExitCode: int32(exit.Code), Error: exit.Error,
	}}})
}

func (s *rpcServer) ReadFile(ctx context.Context, req *connect.Request[pb.ReadFileRequest], st *connect.ServerStream[pb.ReadFileResponse]) error {
	r := req.Msg
	e, user, err := s.m().envdOf(r.SandboxId)
	if err != nil {
		return connectErr(err)
	}
	if r.User != "" {
		user = r.User
	}
	rc, err := e.ReadFile(ctx, r.Path, user)
	if err != nil {
		return connectErr(fmt.Errorf("read %s: %w", r.Path, err))
	}
	defer rc.Close()
	return sendFile(rc, r.Path, st)
}

// sendFile streams a file's bytes to a ReadFile-shaped stream.
func sendFile(rc io.Reader, path string, st *connect.ServerStream[pb.ReadFileResponse]) error {
	err := hostwire.SendChunks(rc, func(b []byte) error { return st.Send(&pb.ReadFileResponse{Data: b}) })
	var re *hostwire.ReadError
	if errors.As(err, &re) {
		return connectErr(fmt.Errorf("read %s: %w", path, re.Err))
	}
	return err
}

// firstHeader receives a file-writing stream's first message, which must
// carry its header.
func firstHeader[M, H any](st *connect.ClientStream[M], header func(*M) *H) (*H, error) {
	if !st.Receive() {
		if err := st.Err(); err != nil {
			return nil, err
		}
		return nil, connectErr(&FieldError{Field: "header", Msg: "empty stream"})
	}
	h := header(st.Msg())
	if h == nil {
		return nil, connectErr(&FieldError{Field: "header", Msg: "first message must be the header"})
	}
	return h, nil
}

func (s *rpcServer) WriteFile(ctx context.Context, st *connect.ClientStream[pb.WriteFileRequest]) (*connect.Response[pb.WriteFileResponse], error) {
	h, err := firstHeader(st, (*pb.WriteFileRequest).GetHeader)
	if err != nil {
		return nil, err
	}
	e, user, err := s.m().envdOf(h.SandboxId)
	if err != nil {
		return nil, connectErr(err)
	}
	if h.User != "" {
		user = h.User
	}
	// Stream the body into envd as it arrives instead of buffering it.
	pr, pw := io.Pipe()
	var n int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for st.Receive() {
			data := st.Msg().GetData()
			if _, err := pw.Write(data); err != nil {
				return // the reader side failed and closed the pipe
			}
			n += int64(len(data))
		}
		pw.CloseWithError(st.Err()) // nil: EOF
	}()
	err = e.WriteFile(ctx, h.Path, user, pr)
	pr.CloseWithError(errors.New("write finished")) // unblocks the receiver goroutine
	<-done                                          // it must not touch st after we return
	if err != nil {
		return nil, connectErr(fmt.Errorf("write %s: %w", h.Path, err))
	}
	return connect.NewResponse(&pb.WriteFileResponse{BytesWritten: n}), nil
}

func (s *rpcServer) CreateSnapshot(ctx context.Context, req *connect.Request[pb.CreateSnapshotRequest]) (*connect.Response[pb.CreateSnapshotResponse], error) {
	in, err := s.m().CreateSnapshot(ctx, req.Msg.SandboxId, req.Msg.TemplateId)
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.CreateSnapshotResponse{
		TemplateId: in.TemplateID, Vcpus: int32(in.VCPUs), MemoryMb: int32(in.MemoryMB), DiskSizeMb: int32(in.DiskSizeMB),
	}), nil
}

func (s *rpcServer) DeleteSnapshot(ctx context.Context, req *connect.Request[pb.DeleteSnapshotRequest]) (*connect.Response[pb.DeleteSnapshotResponse], error) {
	if err := s.m().DeleteSnapshot(ctx, req.Msg.TemplateId); err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.DeleteSnapshotResponse{}), nil
}

func (s *rpcServer) ReadConsoleLog(ctx context.Context, req *connect.Request[pb.ReadConsoleLogRequest]) (*connect.Response[pb.ReadConsoleLogResponse], error) {
	data, size, err := s.m().ReadConsoleLog(ctx, req.Msg.SandboxId, req.Msg.Offset, int(req.Msg.MaxBytes))
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.ReadConsoleLogResponse{Data: data, Size: size}), nil
}

func toPB(in Info) *pb.Sandbox {
	out := &pb.Sandbox{
		SandboxId:  in.ID,
		State:      hostwire.StateToPB(in.State),
		Address:    in.EnvdAddr,
		TemplateId: in.TemplateID,
		Vcpus:      int32(in.VCPUs),
		MemoryMb:   int32(in.MemoryMB),
		DiskSizeMb: int32(in.DiskSizeMB),
		Error:      in.Error,
	}
	if !in.StartedAt.IsZero() {
		out.StartedAt = timestamppb.New(in.StartedAt)
	}
	return out
}

var stateToPB = map[sbx.State]pb.SandboxState{
	sbx.StateCreating: pb.SandboxState_SANDBOX_STATE_CREATING,
	sbx.StateRunning:  pb.SandboxState_SANDBOX_STATE_RUNNING,
	sbx.StatePausing:  pb.SandboxState_SANDBOX_STATE_PAUSING,
	sbx.StatePaused:   pb.SandboxState_SANDBOX_STATE_PAUSED,
	sbx.StateResuming: pb.SandboxState_SANDBOX_STATE_RESUMING,
	sbx.StateStopping: pb.SandboxState_SANDBOX_STATE_STOPPING,
	sbx.StateStopped:  pb.SandboxState_SANDBOX_STATE_STOPPED,
	sbx.StateError:    pb.SandboxState_SANDBOX_STATE_ERROR,
}

// FieldError is an invalid argument that names its field.
type FieldError struct {
	Field, Msg string
}

func (e *FieldError) Error() string        { return e.Field + ": " + e.Msg }
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// connectErr is the one place manager errors become RPC codes.
func connectErr(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	var te *sbx.ErrTransition
	var fe *FieldError
	var (
		ie *templatebuild.ImageError
		se *templatebuild.SyntaxError
		st *templatebuild.StepError
	)
	code := connect.CodeInternal
	switch {
	case errors.Is(err, context.Canceled):
		code = connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	case errors.As(err, &ie), errors.As(err, &se):
		code = connect.CodeInvalidArgument
	case errors.As(err, &st):
		// The user's build failed; the host is fine.
		code = connect.CodeFailedPrecondition
	case errors.Is(err, ErrNotFound):
		code = connect.CodeNotFound
	case errors.Is(err, ErrInvalid):
		code = connect.CodeInvalidArgument
	case errors.Is(err, ErrAlreadyExists):
		code = connect.CodeAlreadyExists
	case errors.Is(err, ErrUnimplemented):
		code = connect.CodeUnimplemented
	case errors.Is(err, ErrShuttingDown):
		code = connect.CodeUnavailable
	case errors.As(err, &te), errors.Is(err, ErrInUse):
		code = connect.CodeFailedPrecondition
	}
	out := connect.NewError(code, err)
	if errors.As(err, &fe) {
		out.Meta().Set(hostwire.FieldHeader, fe.Field)
	}
	return out
}

func secs(s int32) time.Duration { return time.Duration(s) * time.Second }
