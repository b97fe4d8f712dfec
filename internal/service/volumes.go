package service

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Volumes (docs/volumes.md): a team's persistent directory on one host,
// mounted into sandboxes placed on that host, and read and written without
// a sandbox through the content API (authenticated by the volume's own
// token, as E2B's Volume class does).

// VolumesStore is the persistence of volumes; *store.DB implements it.
type VolumesStore interface {
	CreateVolume(ctx context.Context, v store.Volume) (store.Volume, error)
	GetVolume(ctx context.Context, teamID, idOrName string) (store.Volume, error)
	GetVolumeByID(ctx context.Context, id string) (store.Volume, error)
	ListVolumes(ctx context.Context, teamID string) ([]store.Volume, error)
	DeleteVolume(ctx context.Context, teamID, id string) error
	AddSandboxVolumes(ctx context.Context, sandboxID string, mounts []store.SandboxVolume) error
	ListSandboxVolumes(ctx context.Context, sandboxID string) ([]store.SandboxVolume, error)
	ListTeamSandboxVolumes(ctx context.Context, teamID string) (map[string][]store.SandboxVolume, error)
}

var _ VolumesStore = (*store.DB)(nil)

// VolumeHost is implemented by host clients whose hosts keep volumes (the
// agent's client does); the service asks for it with a type assertion.
type VolumeHost interface {
	CreateVolume(ctx context.Context, volumeID string) error
	// DeleteVolume removes the volume's files (idempotent).
	DeleteVolume(ctx context.Context, volumeID string) error
	VolumeFile(ctx context.Context, req VolumeFileRequest) ([]VolumeEntry, error)
	ReadVolumeFile(ctx context.Context, volumeID, path string) (io.ReadCloser, error)
	WriteVolumeFile(ctx context.Context, volumeID, path string, r io.Reader, a VolumeAttrs) (VolumeEntry, error)
}

// VolumeOp is a content API operation on one path.
type VolumeOp int

const (
	VolumeStat VolumeOp = iota + 1
	VolumeList
	VolumeMkdir
	VolumeRemove
	VolumeSetAttrs
)

// VolumeAttrs are optional owner and mode values.
type VolumeAttrs struct{ UID, GID, Mode *uint32 }

// VolumeFileRequest is one content API call but reads and writes.
type VolumeFileRequest struct {
	VolumeID string
	Op       VolumeOp
	Path     string
	Depth    int  // VolumeList
	Force    bool // VolumeMkdir: create parents
	Attrs    VolumeAttrs
}

// VolumeEntry is a file of a volume.
type VolumeEntry struct {
	Name, Path, Type    string
	Size                int64
	Mode, UID, GID      uint32
	Atime, Mtime, Ctime time.Time
	Target              string
}

// VolumeMountInput asks for a volume (by name or ID) at a guest path.
type VolumeMountInput struct {
	Volume string
	Path   string
}

var volumeNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)

// reservedMountDirs are guest paths a volume may not cover.
var reservedMountDirs = []string{"/proc", "/sys", "/dev", "/run", "/etc", "/bin", "/sbin", "/usr", "/lib", "/lib64", "/boot"}

// validMountPath accepts an absolute, clean path that is not / and not in
// a system directory; the guest init gets it on the kernel command line,
// so it has no whitespace.
func validMountPath(p string) error {
	bad := func(why string) error { return InvalidArgument("volumeMounts", "mount path %q: %s", p, why) }
	switch {
	case !strings.HasPrefix(p, "/"):
		return bad("must be absolute")
	case p == "/":
		return bad("cannot be /")
	case path.Clean(p) != p:
		return bad("must be clean (no .., //, or trailing /)")
	case len(p) > 255 || strings.ContainsAny(p, " \t\n\r\x00:\""):
		return bad("at most 255 bytes, without whitespace, quotes or colons")
	}
	for _, d := range reservedMountDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return bad("is a system directory")
		}
	}
	return nil
}

// volumeHost returns the VolumeHost of hostID.
func (s *Service) volumeHost(ctx context.Context, hostID string) (VolumeHost, error) {
	hc, err := s.hosts.Get(ctx, hostID)
	if err != nil {
		return nil, err
	}
	vh, ok := hc.(VolumeHost)
	if !ok {
		return nil, Unimplemented("the volume's host does not keep volumes", nil)
	}
	return vh, nil
}

// CreateVolume makes a volume of p's team on a host of the pool.
func (s *Service) CreateVolume(ctx context.Context, p Principal, name string) (store.Volume, error) {
	if !volumeNameRE.MatchString(name) {
		return store.Volume{}, InvalidArgument("name", "must be 1-128 of a-z, A-Z, 0-9, _ and -")
	}
	token, err := auth.NewAccessToken()
	if err != nil {
		return store.Volume{}, err
	}
	hostID, hc, err := s.hosts.Pick(ctx, PlacementRequest{})
	if err != nil {
		return store.Volume{}, err
	}
	vh, ok := hc.(VolumeHost)
	if !ok {
		return store.Volume{}, Unimplemented("host "+hostID+" does not keep volumes", nil)
	}
	v, err := s.store.CreateVolume(ctx, store.Volume{ID: store.NewShortID(), TeamID: p.TeamID, Name: name, Host: hostID, Token: token})
	if err != nil {
		return store.Volume{}, fromStore(err, "volume", fmt.Sprintf("a volume named %q already exists", name))
	}
	if err := vh.CreateVolume(ctx, v.ID); err != nil {
		if derr := s.store.DeleteVolume(context.WithoutCancel(ctx), p.TeamID, v.ID); derr != nil {
			s.log.ErrorContext(ctx, "drop volume its host could not create", "volume_id", v.ID, "err", derr)
		}
		return store.Volume{}, hostErrFor("create the volume", err)
	}
	s.log.InfoContext(ctx, "volume created", "volume_id", v.ID, "team_id", p.TeamID, "host", hostID)
	return v, nil
}

// GetVolume finds a volume of p's team by ID or name.
func (s *Service) GetVolume(ctx context.Context, p Principal, idOrName string) (store.Volume, error) {
	v, err := s.store.GetVolume(ctx, p.TeamID, idOrName)
	if err != nil {
		return store.Volume{}, fromStore(err, "volume", "")
	}
	return v, nil
}

// ListVolumes returns p's team's volumes by name.
func (s *Service) ListVolumes(ctx context.Context, p Principal) ([]store.Volume, error) {
	vs, err := s.store.ListVolumes(ctx, p.TeamID)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	return vs, nil
}

// DeleteVolume removes a volume of p's team and its files; a volume that
// a sandbox (not stopped) mounts is a conflict.
func (s *Service) DeleteVolume(ctx context.Context, p Principal, idOrName string) error {
	v, err := s.GetVolume(ctx, p, idOrName)
	if err != nil {
		return err
	}
	if err := s.store.DeleteVolume(ctx, p.TeamID, v.ID); err != nil {
		if errors.Is(err, store.ErrVolumeInUse) {
			return Conflict("volume %s is mounted by a sandbox; destroy the sandbox first", v.Name)
		}
		return fromStore(err, "volume", "")
	}
	// The row is gone: a host that cannot remove the files now leaves a
	// directory nothing refers to, which is logged for the operator.
	vh, err := s.volumeHost(ctx, v.Host)
	if err == nil {
		err = vh.DeleteVolume(ctx, v.ID)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "volume deleted but its files were not removed", "volume_id", v.ID, "host", v.Host, "err", err)
	}
	s.log.InfoContext(ctx, "volume deleted", "volume_id", v.ID, "team_id", p.TeamID)
	return nil
}

// resolveMounts checks a create's volume mounts: each volume of p's team
// (404 otherwise), valid distinct paths, all volumes on one host (returned).
func (s *Service) resolveMounts(ctx context.Context, p Principal, in []VolumeMountInput) ([]store.SandboxVolume, string, error) {
	var (
		out  []store.SandboxVolume
		host string
		seen = map[string]bool{}
	)
	for _, m := range in {
		if err := validMountPath(m.Path); err != nil {
			return nil, "", err
		}
		if seen[m.Path] {
			return nil, "", InvalidArgument("volumeMounts", "mount path %q is given twice", m.Path)
		}
		seen[m.Path] = true
		if m.Volume == "" {
			return nil, "", InvalidArgument("volumeMounts", "the volume at %q has no name", m.Path)
		}
		v, err := s.store.GetVolume(ctx, p.TeamID, m.Volume)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, "", &Error{Kind: KindNotFound, Message: fmt.Sprintf("volume %q not found", m.Volume), Err: err}
			}
			return nil, "", fmt.Errorf("volume: %w", err)
		}
		if host != "" && v.Host != host {
			return nil, "", InvalidArgument("volumeMounts", "volumes %s and %s live on different hosts; a sandbox mounts volumes of one host", out[0].Name, v.Name)
		}
		host = v.Host
		out = append(out, store.SandboxVolume{VolumeID: v.ID, Name: v.Name, Path: m.Path})
	}
	return out, host, nil
}

// SandboxVolumes lists a sandbox's mounts (p's team's sandbox).
func (s *Service) SandboxVolumes(ctx context.Context, p Principal, sandboxID string) ([]store.SandboxVolume, error) {
	if _, err := s.GetSandbox(ctx, p, sandboxID); err != nil {
		return nil, err
	}
	mounts, err := s.store.ListSandboxVolumes(ctx, sandboxID)
	if err != nil {
		return nil, fmt.Errorf("sandbox volumes: %w", err)
	}
	return mounts, nil
}

// TeamSandboxVolumes returns the mounts of p's team's sandboxes by sandbox
// ID, for listings.
func (s *Service) TeamSandboxVolumes(ctx context.Context, p Principal) (map[string][]store.SandboxVolume, error) {
	m, err := s.store.ListTeamSandboxVolumes(ctx, p.TeamID)
	if err != nil {
		return nil, fmt.Errorf("sandbox volumes: %w", err)
	}
	return m, nil
}

// volumeByToken authenticates a content API call: the volume's own token.
// An unknown volume and a wrong token are both 401, so the API does not
// reveal which volume IDs exist.
func (s *Service) volumeByToken(ctx context.Context, volumeID, token string) (store.Volume, VolumeHost, error) {
	deny := Unauthenticated("invalid volume token (use the token of Volume.create or Volume.getInfo)")
	if token == "" {
		return store.Volume{}, nil, deny
	}
	v, err := s.store.GetVolumeByID(ctx, volumeID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Volume{}, nil, deny
	}
	if err != nil {
		return store.Volume{}, nil, fmt.Errorf("volume: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(v.Token), []byte(token)) != 1 {
		return store.Volume{}, nil, deny
	}
	vh, err := s.volumeHost(ctx, v.Host)
	if err != nil {
		return store.Volume{}, nil, err
	}
	return v, vh, nil
}

// VolumeFile runs one content API operation (stat, list, mkdir, remove,
// set attributes) on a volume, authenticated by its token.
func (s *Service) VolumeFile(ctx context.Context, token string, req VolumeFileRequest) ([]VolumeEntry, error) {
	_, vh, err := s.volumeByToken(ctx, req.VolumeID, token)
	if err != nil {
		return nil, err
	}
	if req.Depth < 0 || req.Depth > 32 {
		return nil, InvalidArgument("depth", "must be 1-32")
	}
	return vh.VolumeFile(ctx, req)
}

// ReadVolumeFile streams a volume file, authenticated by its token.
func (s *Service) ReadVolumeFile(ctx context.Context, volumeID, token, path string) (io.ReadCloser, error) {
	_, vh, err := s.volumeByToken(ctx, volumeID, token)
	if err != nil {
		return nil, err
	}
	return vh.ReadVolumeFile(ctx, volumeID, path)
}

// WriteVolumeFile replaces a volume file with r, authenticated by its token.
func (s *Service) WriteVolumeFile(ctx context.Context, volumeID, token, path string, r io.Reader, a VolumeAttrs) (VolumeEntry, error) {
	_, vh, err := s.volumeByToken(ctx, volumeID, token)
	if err != nil {
		return VolumeEntry{}, err
	}
	return vh.WriteVolumeFile(ctx, volumeID, path, r, a)
}
