package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
	"github.com/hearth-sandbox/hearth/internal/templatebuild"
)

func (s *rpcServer) BuildTemplate(ctx context.Context, req *connect.Request[pb.BuildTemplateRequest], st *connect.ServerStream[pb.BuildTemplateResponse]) error {
	r := req.Msg
	var plan templatebuild.Plan
	if err := json.Unmarshal(r.PlanJson, &plan); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("plan: %w", err))
	}
	if err := s.m().attachFiles(&plan, r.Files); err != nil {
		return connectErr(err)
	}
	// Log lines go out from one goroutine; a client that went away cancels
	// the build through ctx.
	res, err := s.m().BuildTemplate(ctx, BuildRequest{
		ArtifactID: r.ArtifactId, Plan: plan, VCPUs: int(r.Vcpus), MemoryMB: int(r.MemoryMb),
		DiskSizeMB: int(r.DiskSizeMb), TemplateDiskMB: int(r.TemplateDiskMb), SkipCache: r.SkipCache, ReadyTimeout: secs(r.ReadyTimeoutS),
		Auth:          templatebuild.RegistryAuth{Username: r.RegistryUsername, Password: r.RegistryPassword},
		MinFreeDiskMB: optInt(r.MinFreeDiskMb),
		Log: func(l templatebuild.Log) {
			_ = st.Send(&pb.BuildTemplateResponse{Event: &pb.BuildTemplateResponse_Log{Log: &pb.BuildLogLine{
				Time: timestamppb.New(l.Time), Level: l.Level, Step: int32(l.Step), Message: l.Message,
			}}})
		},
	})
	if err != nil {
		return connectErr(err)
	}
	b, err := json.Marshal(res.Result)
	if err != nil {
		return connectErr(err)
	}
	return st.Send(&pb.BuildTemplateResponse{Event: &pb.BuildTemplateResponse_Result{Result: &pb.BuildTemplateResult{
		Snapshot: res.Snapshot, ResultJson: b, DiskSizeMb: int32(res.DiskSizeMB),
	}}})
}

func (s *rpcServer) DeleteBuild(ctx context.Context, req *connect.Request[pb.DeleteBuildRequest]) (*connect.Response[pb.DeleteBuildResponse], error) {
	if err := s.m().DeleteBuild(ctx, req.Msg.ArtifactId); err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.DeleteBuildResponse{}), nil
}

var validHash = regexp.MustCompile(`^[A-Za-z0-9]{8,128}$`)

// attachFiles unpacks the COPY archives into DATA/builds/files/<hash>/
// (kept: the same hash is the same content) and points the steps that
// name them there.
func (m *Manager) attachFiles(p *templatebuild.Plan, files map[string][]byte) error {
	dirs := map[string]string{}
	for h, archive := range files {
		if !validHash.MatchString(h) {
			return fmt.Errorf("files hash %q: %w", h, ErrInvalid)
		}
		dir := filepath.Join(m.d.DataDir, "builds", "files", h)
		if !exists(dir) {
			if err := unpackArchive(archive, dir); err != nil {
				return fmt.Errorf("files %s: %w: %w", h, err, ErrInvalid)
			}
		}
		dirs[h] = dir
	}
	for i, s := range p.Steps {
		if s.Type != templatebuild.StepCopy || s.Context != "" {
			continue
		}
		dir, ok := dirs[s.FilesHash]
		if !ok {
			return fmt.Errorf("step %d (%s): no files uploaded for hash %q: %w", i+1, s, s.FilesHash, ErrInvalid)
		}
		// The engine hashes the sources it copies itself: a whole build
		// context's hash would rebuild every COPY when any file changed.
		p.Steps[i].Context, p.Steps[i].FilesHash = dir, ""
	}
	return nil
}

// unpackArchive extracts a gzipped tar into a new directory dst,
// appearing by rename once complete.
func unpackArchive(archive []byte, dst string) error {
	tmp := dst + ".tmp-" + randomHex(4)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return err
	}
	if err := templatebuild.Unpack(tmp, zr); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func optInt(p *int32) *int {
	if p == nil {
		return nil
	}
	v := int(*p)
	return &v
}
