package servicetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/volume"
)

// Volumes are real directories (volume.Dir) under VolumesDir: the content
// API's file handling is the host's own code, not a copy of it.

var _ service.VolumeHost = (*FakeHost)(nil)

func (h *FakeHost) volumes() (volume.Dir, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.VolumesDir == "" {
		return volume.Dir{}, service.Unimplemented("fake host "+h.ID+" has no VolumesDir", nil)
	}
	return volume.Dir{Root: h.VolumesDir}, nil
}

// volErr maps the volume package's errors as the agent and its client do.
func volErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, volume.ErrInvalid):
		return &service.Error{Kind: service.KindInvalidArgument, Message: err.Error(), Err: err}
	case errors.Is(err, fs.ErrNotExist):
		return &service.Error{Kind: service.KindNotFound, Message: err.Error(), Err: err}
	case errors.Is(err, fs.ErrExist):
		return &service.Error{Kind: service.KindConflict, Message: err.Error(), Err: err}
	}
	return err
}

func (h *FakeHost) CreateVolume(_ context.Context, id string) error {
	d, err := h.volumes()
	if err != nil {
		return err
	}
	return volErr(d.Create(id))
}

func (h *FakeHost) DeleteVolume(_ context.Context, id string) error {
	d, err := h.volumes()
	if err != nil {
		return err
	}
	return volErr(d.Delete(id))
}

func attrs(a service.VolumeAttrs) volume.Attrs {
	return volume.Attrs{UID: a.UID, GID: a.GID, Mode: a.Mode}
}

func entryOf(e volume.Entry) service.VolumeEntry {
	return service.VolumeEntry{
		Name: e.Name, Path: e.Path, Type: e.Type, Size: e.Size, Mode: e.Mode, UID: e.UID, GID: e.GID,
		Atime: e.Atime, Mtime: e.Mtime, Ctime: e.Ctime, Target: e.Target,
	}
}

func (h *FakeHost) VolumeFile(_ context.Context, req service.VolumeFileRequest) ([]service.VolumeEntry, error) {
	d, err := h.volumes()
	if err != nil {
		return nil, err
	}
	var (
		es []volume.Entry
		e  volume.Entry
	)
	switch req.Op {
	case service.VolumeStat:
		e, err = d.Stat(req.VolumeID, req.Path)
		es = []volume.Entry{e}
	case service.VolumeList:
		es, err = d.List(req.VolumeID, req.Path, req.Depth)
	case service.VolumeMkdir:
		e, err = d.Mkdir(req.VolumeID, req.Path, req.Force, attrs(req.Attrs))
		es = []volume.Entry{e}
	case service.VolumeRemove:
		err = d.Remove(req.VolumeID, req.Path)
	case service.VolumeSetAttrs:
		e, err = d.SetAttrs(req.VolumeID, req.Path, attrs(req.Attrs))
		es = []volume.Entry{e}
	default:
		err = fmt.Errorf("fake host: volume op %d", req.Op)
	}
	if err != nil {
		return nil, volErr(err)
	}
	out := make([]service.VolumeEntry, len(es))
	for i, e := range es {
		out[i] = entryOf(e)
	}
	return out, nil
}

func (h *FakeHost) ReadVolumeFile(_ context.Context, id, path string) (io.ReadCloser, error) {
	d, err := h.volumes()
	if err != nil {
		return nil, err
	}
	f, err := d.Open(id, path)
	if err != nil {
		return nil, volErr(err)
	}
	return h.cut(f), nil
}

// cut applies ReadCut to a file being read.
func (h *FakeHost) cut(rc io.ReadCloser) io.ReadCloser {
	if n := h.ReadCut.Load(); n > 0 {
		return cutReader{io.LimitReader(rc, n), rc}
	}
	return rc
}

// cutReader ends in an error where its limit cuts the file short.
type cutReader struct {
	r io.Reader
	io.Closer
}

func (c cutReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		err = errors.New("host went away")
	}
	return n, err
}

func (h *FakeHost) WriteVolumeFile(_ context.Context, id, path string, r io.Reader, a service.VolumeAttrs) (service.VolumeEntry, error) {
	d, err := h.volumes()
	if err != nil {
		return service.VolumeEntry{}, err
	}
	e, err := d.Write(id, path, r, attrs(a))
	return entryOf(e), volErr(err)
}
