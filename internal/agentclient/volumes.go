package agentclient

import (
	"context"
	"errors"
	"io"

	"connectrpc.com/connect"

	pb "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
	"github.com/hearth-sandbox/hearth/internal/hostwire"
	"github.com/hearth-sandbox/hearth/internal/service"
)

var _ service.VolumeHost = (*Client)(nil)

func volumesToPB(in []service.HostVolumeMount) []*pb.VolumeMount {
	var out []*pb.VolumeMount
	for _, v := range in {
		out = append(out, &pb.VolumeMount{VolumeId: v.VolumeID, Path: v.Path})
	}
	return out
}

func (c *Client) CreateVolume(ctx context.Context, volumeID string) error {
	_, err := c.rpc.CreateVolume(ctx, connect.NewRequest(&pb.CreateVolumeRequest{VolumeId: volumeID}))
	return serviceErr("create volume", err)
}

func (c *Client) DeleteVolume(ctx context.Context, volumeID string) error {
	_, err := c.rpc.DeleteVolume(ctx, connect.NewRequest(&pb.DeleteVolumeRequest{VolumeId: volumeID}))
	return serviceErr("delete volume", err)
}

var volumeOps = map[service.VolumeOp]pb.VolumeOp{
	service.VolumeStat:     pb.VolumeOp_VOLUME_OP_STAT,
	service.VolumeList:     pb.VolumeOp_VOLUME_OP_LIST,
	service.VolumeMkdir:    pb.VolumeOp_VOLUME_OP_MKDIR,
	service.VolumeRemove:   pb.VolumeOp_VOLUME_OP_REMOVE,
	service.VolumeSetAttrs: pb.VolumeOp_VOLUME_OP_SET_ATTRS,
}

func entryFromPB(e *pb.VolumeEntry) service.VolumeEntry {
	return service.VolumeEntry{
		Name: e.Name, Path: e.Path, Type: e.Type, Size: e.Size, Mode: e.Mode, UID: e.Uid, GID: e.Gid,
		Atime: e.Atime.AsTime(), Mtime: e.Mtime.AsTime(), Ctime: e.Ctime.AsTime(), Target: e.Target,
	}
}

func (c *Client) VolumeFile(ctx context.Context, req service.VolumeFileRequest) ([]service.VolumeEntry, error) {
	res, err := c.rpc.VolumeFile(ctx, connect.NewRequest(&pb.VolumeFileRequest{
		VolumeId: req.VolumeID, Op: volumeOps[req.Op], Path: req.Path, Depth: int32(req.Depth), Force: req.Force,
		Uid: req.Attrs.UID, Gid: req.Attrs.GID, Mode: req.Attrs.Mode,
	}))
	if err != nil {
		return nil, serviceErr("volume file", err)
	}
	out := make([]service.VolumeEntry, len(res.Msg.Entries))
	for i, e := range res.Msg.Entries {
		out[i] = entryFromPB(e)
	}
	return out, nil
}

func (c *Client) ReadVolumeFile(ctx context.Context, volumeID, path string) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	st, err := c.rpc.ReadVolumeFile(ctx, connect.NewRequest(&pb.ReadVolumeFileRequest{VolumeId: volumeID, Path: path}))
	return readStream(st, err, cancel)
}

func (c *Client) WriteVolumeFile(ctx context.Context, volumeID, path string, r io.Reader, a service.VolumeAttrs) (service.VolumeEntry, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := c.rpc.WriteVolumeFile(ctx)
	err := st.Send(&pb.WriteVolumeFileRequest{Msg: &pb.WriteVolumeFileRequest_Header{Header: &pb.WriteVolumeFileHeader{
		VolumeId: volumeID, Path: path, Uid: a.UID, Gid: a.GID, Mode: a.Mode,
	}}})
	if err == nil {
		err = hostwire.SendChunks(r, func(b []byte) error {
			return st.Send(&pb.WriteVolumeFileRequest{Msg: &pb.WriteVolumeFileRequest_Data{Data: b}})
		})
	}
	var re *hostwire.ReadError
	if errors.As(err, &re) {
		return service.VolumeEntry{}, re.Err // the caller's body: its own error (e.g. too large)
	}
	// A send error means the server ended the stream: CloseAndReceive
	// has its reason.
	res, cerr := st.CloseAndReceive()
	if cerr != nil {
		return service.VolumeEntry{}, serviceErr("write volume file", cerr)
	}
	if len(res.Msg.Entries) == 0 {
		return service.VolumeEntry{}, serviceErr("write volume file", io.ErrUnexpectedEOF)
	}
	return entryFromPB(res.Msg.Entries[0]), nil
}
