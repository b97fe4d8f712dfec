package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
	"github.com/hearth-sandbox/hearth/internal/guestinit"
	"github.com/hearth-sandbox/hearth/internal/netns"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/volume"
)

// Volumes (docs/volumes.md): DATA/volumes/<id>/data on this host,
// served to a sandbox's guest by an NFSv3 server of this agent that
// listens inside the sandbox's network namespace and exports only that
// sandbox's volumes. The guest's kernel mounts them over its network, so
// any VMM serves volumes and a paused sandbox's guest state holds nothing
// but an NFS client: the server stops with the VM and starts again
// before a resumed guest runs.

// VolumeMount is one volume in a sandbox's spec.
type VolumeMount struct {
	VolumeID string `json:"volume_id"`
	Path     string `json:"path"` // absolute, in the guest
}

func (m *Manager) volumes() volume.Dir {
	return volume.Dir{Root: filepath.Join(m.d.DataDir, "volumes")}
}

// volErr maps the volume package's errors onto the agent's.
func volErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, volume.ErrInvalid):
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: %w", ErrAlreadyExists, err)
	}
	return err
}

// checkVolumes refuses mounts this host cannot serve.
func (m *Manager) checkVolumes(spec Spec) error {
	if len(spec.Volumes) == 0 {
		return nil
	}
	if spec.TemplateKind == sbx.KindSnapshot {
		return &FieldError{Field: "volumes", Msg: "a snapshot template restores a guest whose init has already run, so nothing would mount new volumes: mount them in sandboxes of a base template (a snapshot of a sandbox with volumes mounts the same ones)"}
	}
	if err := m.volumesExist(spec.Volumes); err != nil {
		return err
	}
	for _, v := range spec.Volumes {
		if !strings.HasPrefix(v.Path, "/") || strings.ContainsAny(v.Path, " \t\n") {
			return &FieldError{Field: "volumes", Msg: fmt.Sprintf("mount path %q: want an absolute path without spaces", v.Path)}
		}
	}
	return nil
}

// volumesExist checks that this host has each volume of vols.
func (m *Manager) volumesExist(vols []VolumeMount) error {
	for _, v := range vols {
		p, err := m.volumes().DataPath(v.VolumeID)
		if err != nil {
			return volErr(err)
		}
		if !exists(p) {
			return fmt.Errorf("volume %s: %w", v.VolumeID, ErrNotFound)
		}
	}
	return nil
}

// volumeServer is where a sandbox's guest finds its volumes (MOUNT and
// NFS on one port): the namespace's end of the tap, the same in every
// namespace and so after a resume.
var volumeServer = netip.AddrPortFrom(netip.MustParseAddr(netns.GatewayIP), netns.VolumeServerPort)

// volumeArgs are the kernel parameters that make the guest mount sb's
// volumes ("" without volumes).
func volumeArgs(spec Spec) string {
	if len(spec.Volumes) == 0 {
		return ""
	}
	var mounts []guestinit.VolumeMount
	for i, v := range spec.Volumes {
		mounts = append(mounts, guestinit.VolumeMount{Tag: exportName(i), Path: v.Path})
	}
	return " " + guestinit.VolumeArgs(volumeServer, mounts)
}

func exportName(i int) string { return "vol" + strconv.Itoa(i) }

// startSlotServers starts the servers this agent runs in sb's network
// namespace for its guest (the volume server, the egress proxy), each only
// if the sandbox needs it, before the guest runs. redirect: slot is new
// (an adopted one already has its redirect rules).
func (m *Manager) startSlotServers(ctx context.Context, sb *sandbox, slot NetSlot, redirect bool) error {
	if err := m.startVolumes(sb, slot); err != nil {
		return err
	}
	return m.startEgress(ctx, sb, slot, redirect)
}

// stopSlotServers stops those that run.
func (m *Manager) stopSlotServers(sb *sandbox) {
	m.stopVolumes(sb)
	m.stopEgress(sb)
}

// startVolumes starts sb's volume server in slot's namespace (before the
// guest runs: it mounts at boot, and a resumed one retries its requests).
// A sandbox without volumes has none.
func (m *Manager) startVolumes(sb *sandbox, slot NetSlot) error {
	if len(sb.spec.Volumes) == 0 {
		return nil
	}
	var exports []volume.Export
	for i, v := range sb.spec.Volumes {
		dir, err := m.volumes().DataPath(v.VolumeID)
		if err != nil {
			return volErr(err)
		}
		exports = append(exports, volume.Export{Name: exportName(i), Dir: dir})
	}
	if slot.NSPath == "" {
		return fmt.Errorf("volumes: %w: the network has no namespace to serve them in", ErrUnimplemented)
	}
	l, err := netns.ListenTCP(slot.NSPath, volumeServer.String())
	if err != nil {
		return fmt.Errorf("volume server: %w", err)
	}
	srv, err := volume.Serve(l, exports)
	if err != nil {
		_ = l.Close()
		return fmt.Errorf("volume server: %w", err)
	}
	sb.mu.Lock()
	sb.volSrv = srv
	sb.mu.Unlock()
	return nil
}

// stopVolumes stops sb's volume server, if it runs.
func (m *Manager) stopVolumes(sb *sandbox) {
	sb.mu.Lock()
	srv := sb.volSrv
	sb.volSrv = nil
	sb.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// CreateVolume makes a volume's directory (idempotent).
func (m *Manager) CreateVolume(id string) error { return volErr(m.volumes().Create(id)) }

// DeleteVolume removes a volume no sandbox of this host mounts.
func (m *Manager) DeleteVolume(id string) error {
	m.mu.Lock()
	var user string
	for sid, sb := range m.sandboxes {
		if slices.ContainsFunc(sb.spec.Volumes, func(v VolumeMount) bool { return v.VolumeID == id }) && sb.currentState() != sbx.StateStopped {
			user = sid
			break
		}
	}
	m.mu.Unlock()
	if user != "" {
		return fmt.Errorf("volume %s is mounted by sandbox %s: %w", id, user, ErrInUse)
	}
	return volErr(m.volumes().Delete(id))
}

func (s *rpcServer) CreateVolume(_ context.Context, req *connect.Request[pb.CreateVolumeRequest]) (*connect.Response[pb.CreateVolumeResponse], error) {
	if err := s.m().CreateVolume(req.Msg.VolumeId); err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.CreateVolumeResponse{}), nil
}

func (s *rpcServer) DeleteVolume(_ context.Context, req *connect.Request[pb.DeleteVolumeRequest]) (*connect.Response[pb.DeleteVolumeResponse], error) {
	if err := s.m().DeleteVolume(req.Msg.VolumeId); err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.DeleteVolumeResponse{}), nil
}

func attrsOf(uid, gid, mode *uint32) volume.Attrs {
	return volume.Attrs{UID: uid, GID: gid, Mode: mode}
}

func entryPB(e volume.Entry) *pb.VolumeEntry {
	return &pb.VolumeEntry{
		Name: e.Name, Path: e.Path, Type: e.Type, Size: e.Size, Mode: e.Mode, Uid: e.UID, Gid: e.GID,
		Atime: timestamppb.New(e.Atime), Mtime: timestamppb.New(e.Mtime), Ctime: timestamppb.New(e.Ctime),
		Target: e.Target,
	}
}

func (s *rpcServer) VolumeFile(_ context.Context, req *connect.Request[pb.VolumeFileRequest]) (*connect.Response[pb.VolumeFileResponse], error) {
	r, d := req.Msg, s.m().volumes()
	var (
		entries []volume.Entry
		e       volume.Entry
		err     error
	)
	switch r.Op {
	case pb.VolumeOp_VOLUME_OP_STAT:
		e, err = d.Stat(r.VolumeId, r.Path)
		entries = []volume.Entry{e}
	case pb.VolumeOp_VOLUME_OP_LIST:
		entries, err = d.List(r.VolumeId, r.Path, int(r.Depth))
	case pb.VolumeOp_VOLUME_OP_MKDIR:
		e, err = d.Mkdir(r.VolumeId, r.Path, r.Force, attrsOf(r.Uid, r.Gid, r.Mode))
		entries = []volume.Entry{e}
	case pb.VolumeOp_VOLUME_OP_REMOVE:
		err = d.Remove(r.VolumeId, r.Path)
	case pb.VolumeOp_VOLUME_OP_SET_ATTRS:
		e, err = d.SetAttrs(r.VolumeId, r.Path, attrsOf(r.Uid, r.Gid, r.Mode))
		entries = []volume.Entry{e}
	default:
		err = &FieldError{Field: "op", Msg: r.Op.String()}
	}
	if err != nil {
		return nil, connectErr(volErr(err))
	}
	out := &pb.VolumeFileResponse{}
	for _, e := range entries {
		out.Entries = append(out.Entries, entryPB(e))
	}
	return connect.NewResponse(out), nil
}

func (s *rpcServer) ReadVolumeFile(_ context.Context, req *connect.Request[pb.ReadVolumeFileRequest], st *connect.ServerStream[pb.ReadFileResponse]) error {
	f, err := s.m().volumes().Open(req.Msg.VolumeId, req.Msg.Path)
	if err != nil {
		return connectErr(volErr(err))
	}
	defer f.Close()
	return sendFile(f, req.Msg.Path, st)
}

func (s *rpcServer) WriteVolumeFile(_ context.Context, st *connect.ClientStream[pb.WriteVolumeFileRequest]) (*connect.Response[pb.VolumeFileResponse], error) {
	h, err := firstHeader(st, (*pb.WriteVolumeFileRequest).GetHeader)
	if err != nil {
		return nil, err
	}
	e, err := s.m().volumes().Write(h.VolumeId, h.Path, &streamReader{st: st}, attrsOf(h.Uid, h.Gid, h.Mode))
	if err != nil {
		return nil, connectErr(volErr(err))
	}
	return connect.NewResponse(&pb.VolumeFileResponse{Entries: []*pb.VolumeEntry{entryPB(e)}}), nil
}

// streamReader reads the data messages of a WriteVolumeFile stream.
type streamReader struct {
	st  *connect.ClientStream[pb.WriteVolumeFileRequest]
	buf []byte
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if !r.st.Receive() {
			if err := r.st.Err(); err != nil {
				return 0, err
			}
			return 0, io.EOF
		}
		r.buf = r.st.Msg().GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func volumesFromPB(in []*pb.VolumeMount) []VolumeMount {
	var out []VolumeMount
	for _, v := range in {
		out = append(out, VolumeMount{VolumeID: v.VolumeId, Path: v.Path})
	}
	return out
}
