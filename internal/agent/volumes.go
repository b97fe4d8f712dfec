package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
	"github.com/hearth-sandbox/hearth/internal/guestinit"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/volume"
)

// Volumes (docs/volumes.md): DATA/volumes/<id>/data on this host, shared
// into a sandbox's guest by one virtiofsd per (sandbox, volume), started
// before the VMM and stopped with it (and killed by crash recovery with
// the VMM it served). A sandbox with volumes cannot pause or be
// snapshotted: QEMU 7.2 refuses to migrate a vhost-user-fs device.

// VolumeMount is one volume in a sandbox's spec.
type VolumeMount struct {
	VolumeID string `json:"volume_id"`
	Path     string `json:"path"` // absolute, in the guest
}

// errVolumesPause is why a sandbox with volumes does not pause.
var errVolumesPause = fmt.Errorf("%w: the sandbox mounts volumes and QEMU 7.2 cannot save a virtio-fs device's state; destroy it instead (its volumes keep their files)", ErrInUse)

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
	if !m.d.Driver.Capabilities().FileShares {
		return fmt.Errorf("volumes: %w: the %s VMM has no shared file system device (virtio-fs); volumes need a QEMU host", ErrUnimplemented, m.d.Driver.Name())
	}
	if spec.TemplateKind == sbx.KindSnapshot {
		return &FieldError{Field: "volumes", Msg: "a snapshot template restores a machine that cannot gain devices: mount volumes in sandboxes of a base template"}
	}
	if m.d.Virtiofsd == "" {
		return fmt.Errorf("volumes: %w: no virtiofsd on this host (install qemu-system-common)", ErrUnimplemented)
	}
	for _, v := range spec.Volumes {
		p, err := m.volumes().DataPath(v.VolumeID)
		if err != nil {
			return volErr(err)
		}
		if !exists(p) {
			return fmt.Errorf("volume %s: %w", v.VolumeID, ErrNotFound)
		}
		if !strings.HasPrefix(v.Path, "/") || strings.ContainsAny(v.Path, " \t\n") {
			return &FieldError{Field: "volumes", Msg: fmt.Sprintf("mount path %q: want an absolute path without spaces", v.Path)}
		}
	}
	return nil
}

// startShares starts a virtiofsd per volume of sb and adds the devices
// and the guest's mount parameters to cfg. Each daemon is recorded on sb
// as soon as it runs, for cleanup.
func (m *Manager) startShares(ctx context.Context, sb *sandbox, cfg *vmm.Config) error {
	if len(sb.spec.Volumes) == 0 {
		return nil
	}
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		return err
	}
	for i, v := range sb.spec.Volumes {
		dir, err := m.volumes().DataPath(v.VolumeID)
		if err != nil {
			return volErr(err)
		}
		name := "virtiofsd-" + strconv.Itoa(i)
		d, err := volume.StartDaemon(ctx, volume.DaemonSpec{
			Binary: m.d.Virtiofsd, Dir: dir,
			Socket:  filepath.Join(cfg.RunDir, name+".sock"),
			PIDFile: filepath.Join(cfg.RunDir, name+".pid"),
			Log:     filepath.Join(cfg.RunDir, name+".log"),
		})
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.VolumeID, err)
		}
		sb.mu.Lock()
		sb.shares = append(sb.shares, d)
		sb.mu.Unlock()
		tag := "vol" + strconv.Itoa(i)
		cfg.FileShares = append(cfg.FileShares, vmm.FileShare{Tag: tag, Socket: filepath.Join(cfg.RunDir, name+".sock")})
		cfg.KernelArgs += " " + guestinit.VolumeArg(tag, v.Path)
	}
	return nil
}

// stopShares stops sb's virtiofsd daemons: the ones this agent started
// and, after a crash, the ones a previous agent recorded in pid files.
func (m *Manager) stopShares(sb *sandbox) {
	sb.mu.Lock()
	shares := sb.shares
	sb.shares = nil
	sb.mu.Unlock()
	for _, d := range shares {
		d.Stop()
	}
	killShares(sb.runDir)
}

// killShares kills the daemons named by the pid files of a sandbox's
// run dir (a previous agent's; they are checked to be this sandbox's).
func killShares(runDir string) {
	for _, pf := range volume.PIDFiles(filepath.Join(runDir, "vm")) {
		if pid := readPIDFile(pf); pid > 0 {
			killStale(pid, runDir)
		}
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
