package agentclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	pb "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/templatebuild"
)

var _ service.TemplateBuilder = (*Client)(nil)

// BuildTemplate runs a build on the agent, handing each log line to log.
func (c *Client) BuildTemplate(ctx context.Context, req service.BuildTemplateRequest, log func(templatebuild.Log)) (service.BuildTemplateResult, error) {
	plan, err := json.Marshal(req.Plan)
	if err != nil {
		return service.BuildTemplateResult{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.rpc.BuildTemplate(ctx, connect.NewRequest(&pb.BuildTemplateRequest{
		ArtifactId: req.ArtifactID, PlanJson: plan, Vcpus: int32(req.VCPUs), MemoryMb: int32(req.MemoryMB),
		DiskSizeMb: int32(req.DiskSizeMB), TemplateDiskMb: int32(req.TemplateDiskMB), MinFreeDiskMb: optInt32(req.MinFreeDiskMB), SkipCache: req.SkipCache, Files: req.Files,
		RegistryUsername: req.Auth.Username, RegistryPassword: req.Auth.Password, ReadyTimeoutS: int32(req.ReadyTimeoutS),
	}))
	if err != nil {
		return service.BuildTemplateResult{}, serviceErr("build template", err)
	}
	defer st.Close()
	for st.Receive() {
		switch ev := st.Msg().Event.(type) {
		case *pb.BuildTemplateResponse_Log:
			log(templatebuild.Log{Time: ev.Log.Time.AsTime(), Level: ev.Log.Level, Step: int(ev.Log.Step), Message: ev.Log.Message})
		case *pb.BuildTemplateResponse_Result:
			out := service.BuildTemplateResult{Snapshot: ev.Result.Snapshot, DiskSizeMB: int(ev.Result.DiskSizeMb)}
			if err := json.Unmarshal(ev.Result.ResultJson, &out.Result); err != nil {
				return out, fmt.Errorf("build result: %w", err)
			}
			return out, nil
		}
	}
	if err := st.Err(); err != nil {
		return service.BuildTemplateResult{}, serviceErr("build template", err)
	}
	return service.BuildTemplateResult{}, errors.New("build template: stream ended without a result")
}

func (c *Client) DeleteBuild(ctx context.Context, artifactID string) error {
	_, err := c.rpc.DeleteBuild(ctx, connect.NewRequest(&pb.DeleteBuildRequest{ArtifactId: artifactID}))
	return serviceErr("delete build", err)
}

func optInt32(p *int) *int32 {
	if p == nil {
		return nil
	}
	v := int32(*p)
	return &v
}
