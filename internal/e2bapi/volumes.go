package e2bapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Volumes: E2B's Volume API over hearth's volumes (docs/volumes.md).
// Management routes take the team's API key; the content API
// (/volumecontent/{volumeID}/...) takes the volume's own token as a
// bearer token, as the SDK's Volume class sends it to api.<domain> (or
// E2B_VOLUME_API_URL).

// MaxVolumeFileBytes bounds one content API upload (streamed to the host,
// never buffered).
const MaxVolumeFileBytes = 16 << 30

// volumeJSON is E2B's Volume; volumeTokenJSON its VolumeAndToken.
type volumeJSON struct {
	VolumeID string `json:"volumeID"`
	Name     string `json:"name"`
}

type volumeTokenJSON struct {
	VolumeID string `json:"volumeID"`
	Name     string `json:"name"`
	Token    string `json:"token"`
}

// volumeMountJSON is E2B's SandboxVolumeMount.
type volumeMountJSON struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// volumeEntryJSON is the content API's VolumeEntryStat.
type volumeEntryJSON struct {
	Name   string    `json:"name"`
	Path   string    `json:"path"`
	Type   string    `json:"type"`
	Size   int64     `json:"size"`
	Mode   uint32    `json:"mode"`
	UID    uint32    `json:"uid"`
	GID    uint32    `json:"gid"`
	Atime  time.Time `json:"atime"`
	Mtime  time.Time `json:"mtime"`
	Ctime  time.Time `json:"ctime"`
	Target string    `json:"target,omitempty"`
}

func entryView(e service.VolumeEntry) volumeEntryJSON {
	return volumeEntryJSON{
		Name: e.Name, Path: e.Path, Type: e.Type, Size: e.Size, Mode: e.Mode, UID: e.UID, GID: e.GID,
		Atime: e.Atime.UTC(), Mtime: e.Mtime.UTC(), Ctime: e.Ctime.UTC(), Target: e.Target,
	}
}

func mountsView(ms []store.SandboxVolume) []volumeMountJSON {
	out := make([]volumeMountJSON, len(ms))
	for i, m := range ms {
		out[i] = volumeMountJSON{Name: m.Name, Path: m.Path}
	}
	return out
}

// mountsInput reads create's volumeMounts: {name, path}, the name being a
// volume's name or ID.
func mountsInput(raw []json.RawMessage) ([]service.VolumeMountInput, error) {
	out := make([]service.VolumeMountInput, 0, len(raw))
	for _, r := range raw {
		var m volumeMountJSON
		if err := json.Unmarshal(r, &m); err != nil {
			return nil, errStatus(http.StatusBadRequest, "volumeMounts: want [{name, path}]")
		}
		out = append(out, service.VolumeMountInput{Volume: m.Name, Path: m.Path})
	}
	return out, nil
}

func (s *server) volumeRoutes() []route {
	return []route{
		{"POST /volumes", s.createVolume},
		{"GET /volumes", s.listVolumes},
		{"GET /volumes/{id}", s.getVolume},
		{"DELETE /volumes/{id}", s.deleteVolume},
	}
}

func (s *server) createVolume(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Name string `json:"name"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	v, err := s.svc.CreateVolume(r.Context(), p, in.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, volumeTokenJSON{VolumeID: v.ID, Name: v.Name, Token: v.Token})
	return nil
}

func (s *server) listVolumes(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	vs, err := s.svc.ListVolumes(r.Context(), p)
	if err != nil {
		return err
	}
	out := make([]volumeJSON, len(vs))
	for i, v := range vs {
		out[i] = volumeJSON{VolumeID: v.ID, Name: v.Name}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getVolume(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	v, err := s.svc.GetVolume(r.Context(), p, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, volumeTokenJSON{VolumeID: v.ID, Name: v.Name, Token: v.Token})
	return nil
}

func (s *server) deleteVolume(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	if err := s.svc.DeleteVolume(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// contentFunc handles a content API call with the caller's volume token.
type contentFunc func(w http.ResponseWriter, r *http.Request, token string) error

// contentEndpoint takes the bearer token and bounds the body.
func (s *server) contentEndpoint(h contentFunc, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !limitBody(w, r, limit) {
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			s.respondError(w, r, service.Unauthenticated("missing Authorization: Bearer <volume token>"))
			return
		}
		if err := h(w, r, token); err != nil {
			s.respondError(w, r, err)
		}
	})
}

func (s *server) contentRoutes(mux *http.ServeMux) {
	for _, rt := range []struct {
		pattern string
		h       contentFunc
		limit   int64
	}{
		{"GET /volumecontent/{id}/dir", s.contentOp(service.VolumeList), s.maxJSON},
		{"POST /volumecontent/{id}/dir", s.contentOp(service.VolumeMkdir), s.maxJSON},
		{"GET /volumecontent/{id}/path", s.contentOp(service.VolumeStat), s.maxJSON},
		{"PATCH /volumecontent/{id}/path", s.contentOp(service.VolumeSetAttrs), s.maxJSON},
		{"DELETE /volumecontent/{id}/path", s.contentOp(service.VolumeRemove), s.maxJSON},
		{"GET /volumecontent/{id}/file", s.readVolumeFile, s.maxJSON},
		{"PUT /volumecontent/{id}/file", s.writeVolumeFile, MaxVolumeFileBytes},
	} {
		mux.Handle(rt.pattern, s.contentEndpoint(rt.h, rt.limit))
	}
}

// queryAttrs reads the optional uid, gid and mode query parameters.
func queryAttrs(r *http.Request) (service.VolumeAttrs, error) {
	var a service.VolumeAttrs
	for name, dst := range map[string]**uint32{"uid": &a.UID, "gid": &a.GID, "mode": &a.Mode} {
		v := r.URL.Query().Get(name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return a, errStatus(http.StatusBadRequest, "%s: must be a non-negative integer", name)
		}
		u := uint32(n)
		*dst = &u
	}
	return a, nil
}

func queryPath(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	if p == "" {
		return "", errStatus(http.StatusBadRequest, "path: is required")
	}
	return p, nil
}

// contentOp serves the content API's operations on one path.
func (s *server) contentOp(op service.VolumeOp) contentFunc {
	return func(w http.ResponseWriter, r *http.Request, token string) error {
		p, err := queryPath(r)
		if err != nil {
			return err
		}
		req := service.VolumeFileRequest{VolumeID: r.PathValue("id"), Op: op, Path: p, Force: r.URL.Query().Get("force") == "true"}
		switch op {
		case service.VolumeList:
			if d := r.URL.Query().Get("depth"); d != "" {
				if req.Depth, err = strconv.Atoi(d); err != nil {
					return errStatus(http.StatusBadRequest, "depth: must be an integer")
				}
			}
		case service.VolumeMkdir:
			if req.Attrs, err = queryAttrs(r); err != nil {
				return err
			}
		case service.VolumeSetAttrs:
			var in struct {
				UID  *uint32 `json:"uid"`
				GID  *uint32 `json:"gid"`
				Mode *uint32 `json:"mode"`
			}
			if err := decode(r, &in); err != nil {
				return err
			}
			req.Attrs = service.VolumeAttrs{UID: in.UID, GID: in.GID, Mode: in.Mode}
		}
		entries, err := s.svc.VolumeFile(r.Context(), token, req)
		if err != nil {
			return err
		}
		switch op {
		case service.VolumeRemove:
			w.WriteHeader(http.StatusNoContent)
		case service.VolumeList:
			out := make([]volumeEntryJSON, len(entries))
			for i, e := range entries {
				out[i] = entryView(e)
			}
			writeJSON(w, http.StatusOK, out)
		default:
			if len(entries) != 1 {
				return errors.New("volume content: the host answered no entry")
			}
			status := http.StatusOK
			if op == service.VolumeMkdir {
				status = http.StatusCreated
			}
			writeJSON(w, status, entryView(entries[0]))
		}
		return nil
	}
}

func (s *server) readVolumeFile(w http.ResponseWriter, r *http.Request, token string) error {
	p, err := queryPath(r)
	if err != nil {
		return err
	}
	rc, err := s.svc.ReadVolumeFile(r.Context(), r.PathValue("id"), token, p)
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	// Headers are sent: a failure now can only cut the body short, and the
	// client must see it as a failure, not as a shorter file: the
	// connection is aborted (no final chunk, an HTTP/2 stream reset).
	if _, err := io.Copy(w, rc); err != nil {
		s.log.WarnContext(r.Context(), "volume file read cut short", "volume_id", r.PathValue("id"), "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

func (s *server) writeVolumeFile(w http.ResponseWriter, r *http.Request, token string) error {
	p, err := queryPath(r)
	if err != nil {
		return err
	}
	a, err := queryAttrs(r)
	if err != nil {
		return err
	}
	e, err := s.svc.WriteVolumeFile(r.Context(), r.PathValue("id"), token, p, r.Body, a)
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return errStatus(http.StatusRequestEntityTooLarge, "file larger than %d bytes", maxErr.Limit)
		}
		return err
	}
	writeJSON(w, http.StatusCreated, entryView(e))
	return nil
}
