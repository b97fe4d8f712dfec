package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/templatebuild"
)

// BuildStore is the persistence template builds need (store.DB).
type BuildStore interface {
	CreateBuild(ctx context.Context, b store.Build) (store.Build, error)
	GetBuild(ctx context.Context, id string) (store.Build, error)
	ListBuilds(ctx context.Context, templateID string) ([]store.Build, error)
	ListBuildsByStatus(ctx context.Context, statuses ...string) ([]store.Build, error)
	UpdateBuildStatus(ctx context.Context, id string, from []string, to, host, errMsg string) (store.Build, error)
	FinishBuild(ctx context.Context, b store.Build, config string) error
	SetTemplateBuildStatus(ctx context.Context, templateID, status string) error
	AppendBuildLogs(ctx context.Context, buildID string, lines []store.BuildLog) (int, error)
	ListBuildLogs(ctx context.Context, buildID string, after, limit int) ([]store.BuildLog, error)
	SetTemplateTags(ctx context.Context, templateID, buildID string, tags []string) error
	DeleteTemplateTags(ctx context.Context, templateID string, tags []string) error
	ListTemplateTags(ctx context.Context, templateID string) ([]store.TemplateTag, error)
	MarkBuildReclaimed(ctx context.Context, id string) error
}

// MaxBuildFilesBytes bounds one uploaded build context or COPY archive.
const MaxBuildFilesBytes = 256 << 20

// builds tracks the builds this process runs, so they can be cancelled.
type builds struct {
	mu     sync.Mutex
	cancel map[string]context.CancelCauseFunc
	wg     sync.WaitGroup
}

// errBuildCancelled is the cause a cancelled build's context ends with.
var errBuildCancelled = errors.New("build cancelled")

// BuildSpec is what a build runs: stored as the build's spec.
type BuildSpec struct {
	Plan          templatebuild.Plan `json:"plan"`
	SkipCache     bool               `json:"skip_cache,omitempty"`
	Tags          []string           `json:"tags,omitempty"`
	ReadyTimeoutS int                `json:"ready_timeout_s,omitempty"`
	// FilesHashes are the uploaded archives the COPY steps use.
	FilesHashes []string `json:"files_hashes,omitempty"`
	// DiskSizeMB (explicit) or MinFreeDiskMB (E2B's minFreeDiskMb) decide
	// the template's disk; the host computes it once the file system is
	// built (the build's DiskSizeMB is then that result).
	DiskSizeMB    int  `json:"disk_size_mb,omitempty"`
	MinFreeDiskMB *int `json:"min_free_disk_mb,omitempty"`
}

// TemplateConfig is what a built template carries (the template's Config
// column, JSON).
type TemplateConfig struct {
	templatebuild.Config
	StartCmd string `json:"start_cmd,omitempty"`
	ReadyCmd string `json:"ready_cmd,omitempty"`
}

// NewBuildInput asks for a build of a (new or existing) template.
type NewBuildInput struct {
	Name     string
	Tags     []string
	VCPUs    int
	MemoryMB int
	// DiskSizeMB is the template's root disk (0: the default, or the
	// built file system plus MinFreeDiskMB when that is set).
	DiskSizeMB    int
	MinFreeDiskMB *int
	// Platform makes a template every team can use (platform admins only).
	Platform bool
}

var tagRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// SplitNameTag splits "name:tag" ("" tag when none).
func SplitNameTag(s string) (string, string) {
	name, tag, _ := strings.Cut(s, ":")
	return name, tag
}

// NewBuild reserves a build of template in.Name (creating the template,
// not yet usable, when it does not exist). The build waits for StartBuild.
func (s *Service) NewBuild(ctx context.Context, p Principal, in NewBuildInput) (store.Template, store.Build, error) {
	name, tag := SplitNameTag(in.Name)
	if err := validName("name", name); err != nil {
		return store.Template{}, store.Build{}, err
	}
	if tag != "" {
		in.Tags = append(in.Tags, tag)
	}
	for _, t := range in.Tags {
		if !tagRE.MatchString(t) {
			return store.Template{}, store.Build{}, InvalidArgument("tags", "%q: want letters, digits, '.', '_', '-'", t)
		}
	}
	team := p.TeamID
	if in.Platform {
		if !p.IsAdmin {
			return store.Template{}, store.Build{}, PermissionDenied("platform templates are built by platform admins")
		}
		team = store.PlatformTeamID
	}
	shape := sandbox.Shape{VCPUs: in.VCPUs, MemoryMB: in.MemoryMB, DiskSizeMB: in.DiskSizeMB}.WithDefaults()
	if in.VCPUs == 0 {
		shape.VCPUs = 2
	}
	if in.MemoryMB == 0 {
		shape.MemoryMB = 1024
	}
	if err := validShape(shape); err != nil {
		return store.Template{}, store.Build{}, err
	}
	if in.MinFreeDiskMB != nil {
		if err := inRange("minFreeDiskMb", *in.MinFreeDiskMB, 0, sandbox.Public().DiskSizeMB.Max); err != nil {
			return store.Template{}, store.Build{}, err
		}
	}
	tpl, err := s.store.GetTemplateByTeam(ctx, team, name)
	switch {
	case errors.Is(err, store.ErrNotFound) || err == nil && tpl.TeamID != team:
		tpl, err = s.store.CreateTemplate(ctx, store.Template{
			ID: store.NewShortID(), TeamID: team, Name: name, Kind: sandbox.KindBase,
			VCPUs: shape.VCPUs, MemoryMB: shape.MemoryMB, DiskSizeMB: shape.DiskSizeMB,
			BuildStatus: store.BuildStatusBuilding,
		})
		if err != nil {
			return store.Template{}, store.Build{}, fromStore(err, "template", fmt.Sprintf("a template named %q already exists", name))
		}
	case err != nil:
		return store.Template{}, store.Build{}, fmt.Errorf("look up template: %w", err)
	case tpl.Kind == sandbox.KindSnapshot && tpl.ArtifactID == "" && tpl.SourceSandboxID != "":
		return store.Template{}, store.Build{}, Conflict("%q is a snapshot of a sandbox, not a built template; pick another name", name)
	}
	spec, _ := json.Marshal(BuildSpec{Tags: in.Tags, DiskSizeMB: in.DiskSizeMB, MinFreeDiskMB: in.MinFreeDiskMB})
	newBuild := func() (store.Build, error) {
		return s.store.CreateBuild(ctx, store.Build{
			TemplateID: tpl.ID, TeamID: team, Spec: string(spec), CreatedAt: s.now(),
			VCPUs: shape.VCPUs, MemoryMB: shape.MemoryMB, DiskSizeMB: shape.DiskSizeMB,
		})
	}
	b, err := newBuild()
	if errors.Is(err, store.ErrConflict) && s.dropAbandonedBuilds(ctx, tpl.ID) {
		b, err = newBuild()
	}
	if errors.Is(err, store.ErrConflict) {
		return store.Template{}, store.Build{}, Conflict("template %q already has a build in progress; wait for it or cancel it", name)
	}
	if err != nil {
		return store.Template{}, store.Build{}, fmt.Errorf("create build: %w", err)
	}
	return tpl, b, nil
}

// buildOf returns a build of a template p may see (write: and change):
// another team's (and, to change, a platform template's for non-admins) is
// not found.
func (s *Service) buildOf(ctx context.Context, p Principal, templateID, buildID string, write bool) (store.Template, store.Build, error) {
	tpl, err := s.templateOf(ctx, p, templateID, write)
	if err != nil {
		return store.Template{}, store.Build{}, err
	}
	b, err := s.store.GetBuild(ctx, buildID)
	if err != nil || b.TemplateID != tpl.ID {
		return store.Template{}, store.Build{}, NotFound("build")
	}
	return tpl, b, nil
}

// templateOf finds a template of p's team by ID or name; write access to a
// platform template needs a platform admin.
func (s *Service) templateOf(ctx context.Context, p Principal, idOrName string, write bool) (store.Template, error) {
	tpl, err := s.store.GetTemplateByTeam(ctx, p.TeamID, idOrName)
	if err != nil {
		return store.Template{}, fromStore(err, "template", "")
	}
	if write && tpl.TeamID != p.TeamID && !(tpl.TeamID == store.PlatformTeamID && p.IsAdmin) {
		return store.Template{}, NotFound("template")
	}
	return tpl, nil
}

// HasBuildFiles reports whether the archive with this hash was uploaded.
func (s *Service) HasBuildFiles(hash string) bool {
	if !validFilesHash(hash) || s.buildFilesDir == "" {
		return false
	}
	// Touched: a build asked for soon after uses them (BuildFilesTTL).
	now := s.now()
	return os.Chtimes(filepath.Join(s.buildFilesDir, hash), now, now) == nil
}

var filesHashRE = regexp.MustCompile(`^[A-Za-z0-9]{8,128}$`)

func validFilesHash(h string) bool { return filesHashRE.MatchString(h) }

// PutBuildFiles stores an uploaded archive (tar.gz) under hash; with an
// empty hash, under its SHA-256, which it returns. Over
// MaxBuildFilesBytes: TooLarge.
func (s *Service) PutBuildFiles(ctx context.Context, p Principal, hash string, r io.Reader) (string, error) {
	if s.buildFilesDir == "" {
		return "", Unimplemented("this server keeps no build files", nil)
	}
	if hash != "" && !validFilesHash(hash) {
		return "", InvalidArgument("hash", "%q: want 8-128 letters and digits", hash)
	}
	if err := os.MkdirAll(s.buildFilesDir, 0o700); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(s.buildFilesDir, ".upload-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, MaxBuildFilesBytes+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	if n > MaxBuildFilesBytes {
		return "", TooLarge("build files are larger than %d MiB", MaxBuildFilesBytes>>20)
	}
	if hash == "" {
		hash = hex.EncodeToString(h.Sum(nil))
	}
	// Its age (BuildFilesTTL) runs on the service's clock.
	now := s.now()
	if err := os.Chtimes(tmp.Name(), now, now); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.buildFilesDir, hash)); err != nil {
		return "", err
	}
	return hash, nil
}

// StartBuildInput is the build's content.
type StartBuildInput struct {
	Plan          templatebuild.Plan
	SkipCache     bool
	Auth          templatebuild.RegistryAuth
	ReadyTimeoutS int
}

// StartBuild validates a waiting build's plan and runs it in the
// background; follow it with GetBuild and BuildLogs.
func (s *Service) StartBuild(ctx context.Context, p Principal, templateID, buildID string, in StartBuildInput) (_ store.Build, err error) {
	tpl, b, err := s.buildOf(ctx, p, templateID, buildID, true)
	if err != nil {
		return store.Build{}, err
	}
	if b.Status != store.BuildStatusWaiting {
		return store.Build{}, Conflict("build %s is %s; it can be started once", b.ID, b.Status)
	}
	defer func() {
		if err != nil {
			s.dropUnstarted(ctx, tpl, b, err)
		}
	}()
	var spec BuildSpec
	_ = json.Unmarshal([]byte(b.Spec), &spec)
	spec.Plan, spec.SkipCache, spec.ReadyTimeoutS = in.Plan, in.SkipCache, in.ReadyTimeoutS
	req := BuildTemplateRequest{
		ArtifactID: b.ID, Plan: in.Plan, VCPUs: b.VCPUs, MemoryMB: b.MemoryMB, DiskSizeMB: 4096,
		TemplateDiskMB: spec.DiskSizeMB, MinFreeDiskMB: spec.MinFreeDiskMB,
		SkipCache: in.SkipCache, Auth: in.Auth, Files: map[string][]byte{}, ReadyTimeoutS: in.ReadyTimeoutS,
	}
	// FROM: a template this team can use wins over an OCI image.
	from := in.Plan.FromTemplate
	if from == "" {
		from = in.Plan.FromImage
	}
	place := PlacementRequest{TemplateID: "", VCPUs: b.VCPUs, MemoryMB: b.MemoryMB, DiskSizeMB: req.DiskSizeMB}
	var fromTpl store.Template // FROM a template: its files must be on the build's host
	if from == "" {
		return store.Build{}, InvalidArgument("fromImage", "a build needs a base: a template (fromTemplate) or an image (fromImage)")
	}
	if base, err := s.resolveTemplate(ctx, p, from); err == nil {
		if base.ID == tpl.ID && base.BuildStatus != store.BuildStatusReady {
			return store.Build{}, InvalidArgument("fromTemplate", "%q has no finished build to start from", from)
		}
		req.Plan.FromTemplate, req.Plan.FromImage = base.HostTemplateID(), ""
		place.TemplateID = base.HostTemplateID()
		if place.TemplateHosts, err = s.templateHolders(ctx, base); err != nil {
			return store.Build{}, err
		}
		fromTpl = base
	} else if in.Plan.FromTemplate != "" {
		return store.Build{}, InvalidArgument("fromTemplate", "no template %q", in.Plan.FromTemplate)
	} else if err := checkRegistryAccess(ctx, in.Plan.FromImage, in.Auth); err != nil {
		return store.Build{}, err
	}
	for i, st := range req.Plan.Steps {
		if st.Type != templatebuild.StepCopy {
			continue
		}
		if !s.HasBuildFiles(st.FilesHash) {
			return store.Build{}, InvalidArgument("steps", "step %d (%s): files %q were not uploaded", i+1, st, st.FilesHash)
		}
		if _, ok := req.Files[st.FilesHash]; !ok {
			data, err := os.ReadFile(filepath.Join(s.buildFilesDir, st.FilesHash))
			if err != nil {
				return store.Build{}, err
			}
			req.Files[st.FilesHash] = data
			spec.FilesHashes = append(spec.FilesHashes, st.FilesHash)
		}
	}
	specJSON, _ := json.Marshal(spec)
	b.Spec = string(specJSON)
	bctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	s.builds.mu.Lock()
	s.builds.cancel[b.ID] = cancel
	s.builds.mu.Unlock()
	b, err = s.store.UpdateBuildStatus(ctx, b.ID, []string{store.BuildStatusWaiting}, store.BuildStatusBuilding, "", "")
	if err != nil {
		s.dropBuild(b.ID)
		return store.Build{}, fmt.Errorf("start build: %w", err)
	}
	s.builds.wg.Add(1)
	go func() {
		defer s.builds.wg.Done()
		defer s.dropBuild(b.ID)
		s.runBuild(bctx, tpl, b, spec, req, place, fromTpl)
	}()
	return b, nil
}

// registryCheckTimeout bounds the look at a private image's manifest
// before a build starts.
const registryCheckTimeout = 10 * time.Second

// checkRegistryAccess refuses a build whose image the registry will not
// serve with the credentials given (wrong, or none for a private image):
// a 400 naming the registry now, not a failed build later. A registry
// this process cannot reach is left to the build's host.
func checkRegistryAccess(ctx context.Context, ref string, auth templatebuild.RegistryAuth) error {
	ctx, cancel := context.WithTimeout(ctx, registryCheckTimeout)
	defer cancel()
	var ae *templatebuild.AccessError
	if err := templatebuild.CheckAccess(ctx, ref, auth); errors.As(err, &ae) {
		return InvalidArgument("fromImageRegistry", "%s", ae.Error())
	}
	return nil
}

// dropUnstarted ends a reserved build refused at its start (bad input):
// it fails with the reason, so a corrected build of the template can be
// asked for at once.
func (s *Service) dropUnstarted(ctx context.Context, tpl store.Template, b store.Build, reason error) {
	ctx = context.WithoutCancel(ctx)
	if _, err := s.store.UpdateBuildStatus(ctx, b.ID, []string{store.BuildStatusWaiting}, store.BuildStatusError, "", reason.Error()); err != nil {
		s.log.WarnContext(ctx, "drop unstarted build", "build_id", b.ID, "err", err)
	}
	if tpl.BuildStatus != store.BuildStatusReady {
		if err := s.store.SetTemplateBuildStatus(ctx, tpl.ID, store.BuildStatusError); err != nil {
			s.log.WarnContext(ctx, "record template build failure", "template_id", tpl.ID, "err", err)
		}
	}
}

func (s *Service) dropBuild(id string) {
	s.builds.mu.Lock()
	defer s.builds.mu.Unlock()
	if c, ok := s.builds.cancel[id]; ok {
		c(nil)
		delete(s.builds.cancel, id)
	}
}

// runBuild places the build on a host and records its log and outcome.
func (s *Service) runBuild(ctx context.Context, tpl store.Template, b store.Build, spec BuildSpec, req BuildTemplateRequest, place PlacementRequest, from store.Template) {
	logLine := func(level, msg string) {
		if _, err := s.store.AppendBuildLogs(context.WithoutCancel(ctx), b.ID, []store.BuildLog{{Time: s.now(), Level: level, Message: msg}}); err != nil {
			s.log.WarnContext(ctx, "build log", "build_id", b.ID, "err", err)
		}
	}
	fail := func(err error) {
		status := store.BuildStatusError
		msg := err.Error()
		if errors.Is(context.Cause(ctx), errBuildCancelled) {
			status, msg = store.BuildStatusCancelled, "build cancelled"
		}
		logLine("error", msg)
		if _, uerr := s.store.UpdateBuildStatus(context.WithoutCancel(ctx), b.ID, []string{store.BuildStatusBuilding}, status, "", msg); uerr != nil {
			s.log.ErrorContext(ctx, "record build failure", "build_id", b.ID, "err", uerr)
		}
		if tpl.BuildStatus != store.BuildStatusReady {
			if err := s.store.SetTemplateBuildStatus(context.WithoutCancel(ctx), tpl.ID, store.BuildStatusError); err != nil {
				s.log.ErrorContext(ctx, "record template build failure", "template_id", tpl.ID, "err", err)
			}
		}
		s.log.InfoContext(ctx, "build failed", "build_id", b.ID, "template", tpl.Name, "status", status, "err", msg)
	}
	hostID, hc, err := s.hosts.Pick(ctx, place)
	if err != nil {
		fail(fmt.Errorf("no host for the build: %w", err))
		return
	}
	tb, ok := hc.(TemplateBuilder)
	if !ok {
		fail(fmt.Errorf("host %s cannot build templates", hostID))
		return
	}
	if err := s.ensureTemplate(ctx, from, place.TemplateHosts, hostID, hc); err != nil {
		fail(err)
		return
	}
	if _, err := s.store.UpdateBuildStatus(ctx, b.ID, []string{store.BuildStatusBuilding}, store.BuildStatusBuilding, hostID, ""); err != nil {
		s.log.WarnContext(ctx, "record build host", "build_id", b.ID, "err", err)
	}
	logLine("info", fmt.Sprintf("building %s on host %s", tpl.Name, hostID))
	res, err := tb.BuildTemplate(ctx, req, func(l templatebuild.Log) {
		if _, err := s.store.AppendBuildLogs(context.WithoutCancel(ctx), b.ID, []store.BuildLog{{Time: l.Time, Level: l.Level, Step: l.Step, Message: l.Message}}); err != nil {
			s.log.WarnContext(ctx, "build log", "build_id", b.ID, "err", err)
		}
	})
	if err != nil {
		fail(err)
		return
	}
	b.Host, b.Kind = hostID, sandbox.KindBase
	if res.DiskSizeMB > 0 {
		b.DiskSizeMB = res.DiskSizeMB
	}
	if res.Snapshot {
		b.Kind = sandbox.KindSnapshot
	}
	cfg, _ := json.Marshal(TemplateConfig{Config: res.Result.Config, StartCmd: res.Result.StartCmd, ReadyCmd: res.Result.ReadyCmd})
	if err := s.store.FinishBuild(context.WithoutCancel(ctx), b, string(cfg)); err != nil {
		// Cancelled after the host finished: the artefact goes.
		if derr := tb.DeleteBuild(context.WithoutCancel(ctx), b.ID); derr != nil {
			s.log.ErrorContext(ctx, "drop unrecorded build", "build_id", b.ID, "err", derr)
		}
		fail(err)
		return
	}
	if len(spec.Tags) > 0 {
		if err := s.store.SetTemplateTags(context.WithoutCancel(ctx), tpl.ID, b.ID, spec.Tags); err != nil {
			s.log.ErrorContext(ctx, "tag build", "build_id", b.ID, "err", err)
		}
	}
	logLine("info", "build ready")
	// The version this one replaces goes from its hosts (unless tagged or
	// in use: then a later reclaim pass retries).
	s.reclaimSuperseded(context.WithoutCancel(ctx), tpl.TeamID, tpl.ID)
	s.log.InfoContext(ctx, "build ready", "build_id", b.ID, "template", tpl.Name, "host", hostID, "snapshot", res.Snapshot)
}

// CancelBuild stops a waiting or running build; it ends as cancelled and
// leaves nothing behind.
func (s *Service) CancelBuild(ctx context.Context, p Principal, templateID, buildID string) (store.Build, error) {
	_, b, err := s.buildOf(ctx, p, templateID, buildID, true)
	if err != nil {
		return store.Build{}, err
	}
	if b.Status == store.BuildStatusWaiting {
		return s.store.UpdateBuildStatus(ctx, b.ID, []string{store.BuildStatusWaiting}, store.BuildStatusCancelled, "", "build cancelled")
	}
	s.builds.mu.Lock()
	cancel, ok := s.builds.cancel[b.ID]
	s.builds.mu.Unlock()
	if !ok {
		return b, Conflict("build %s is %s; only a waiting or running build can be cancelled", b.ID, b.Status)
	}
	cancel(errBuildCancelled)
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if b, err = s.store.GetBuild(ctx, b.ID); err != nil || b.Status != store.BuildStatusBuilding {
			return b, err
		}
		select {
		case <-ctx.Done():
			return b, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return b, Unavailable("the build did not stop within 2 minutes", nil)
}

// GetBuild returns a build of a template p can see.
func (s *Service) GetBuild(ctx context.Context, p Principal, templateID, buildID string) (store.Template, store.Build, error) {
	return s.buildOf(ctx, p, templateID, buildID, false)
}

// BuildLogs returns up to limit log lines after seq `after`.
func (s *Service) BuildLogs(ctx context.Context, p Principal, templateID, buildID string, after, limit int) ([]store.BuildLog, error) {
	if _, _, err := s.GetBuild(ctx, p, templateID, buildID); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	return s.store.ListBuildLogs(ctx, buildID, after, limit)
}

// ListBuilds returns a template's builds, newest first.
func (s *Service) ListBuilds(ctx context.Context, p Principal, templateID string) (store.Template, []store.Build, error) {
	tpl, err := s.templateOf(ctx, p, templateID, false)
	if err != nil {
		return store.Template{}, nil, err
	}
	bs, err := s.store.ListBuilds(ctx, tpl.ID)
	return tpl, bs, err
}

// resolveTemplate finds a template by ID, name or name:tag. With a tag the
// result is the tagged build's version of the template.
func (s *Service) resolveTemplate(ctx context.Context, p Principal, ref string) (store.Template, error) {
	name, tag := SplitNameTag(ref)
	tpl, err := s.store.GetTemplateByTeam(ctx, p.TeamID, name)
	if err != nil {
		return store.Template{}, fromStore(err, "template", "")
	}
	if tag == "" || tag == "latest" {
		return tpl, nil
	}
	tags, err := s.store.ListTemplateTags(ctx, tpl.ID)
	if err != nil {
		return store.Template{}, err
	}
	for _, t := range tags {
		if t.Tag != tag {
			continue
		}
		b, err := s.store.GetBuild(ctx, t.BuildID)
		if err != nil || b.Status != store.BuildStatusReady {
			break
		}
		tpl.ArtifactID, tpl.Kind, tpl.Host = b.ID, b.Kind, b.Host
		tpl.VCPUs, tpl.MemoryMB = b.VCPUs, b.MemoryMB
		return tpl, nil
	}
	return store.Template{}, NotFound(fmt.Sprintf("tag %q of template %s", tag, name))
}

// TagTemplate points tags at a template's build (its current version when
// buildID is empty).
func (s *Service) TagTemplate(ctx context.Context, p Principal, ref string, tags []string) (store.Template, string, error) {
	tpl, err := s.resolveTemplate(ctx, p, ref)
	if err != nil {
		return store.Template{}, "", err
	}
	if tpl.TeamID != p.TeamID && !(tpl.TeamID == store.PlatformTeamID && p.IsAdmin) {
		return store.Template{}, "", NotFound("template")
	}
	if tpl.ArtifactID == "" {
		return store.Template{}, "", InvalidArgument("target", "%s has no build to tag", ref)
	}
	for _, t := range tags {
		if !tagRE.MatchString(t) {
			return store.Template{}, "", InvalidArgument("tags", "%q: want letters, digits, '.', '_', '-'", t)
		}
	}
	return tpl, tpl.ArtifactID, s.store.SetTemplateTags(ctx, tpl.ID, tpl.ArtifactID, tags)
}

// UntagTemplate removes tags of a template.
func (s *Service) UntagTemplate(ctx context.Context, p Principal, name string, tags []string) error {
	tpl, err := s.templateOf(ctx, p, name, true)
	if err != nil {
		return err
	}
	return s.store.DeleteTemplateTags(ctx, tpl.ID, tags)
}

// TemplateTags lists a template's tags.
func (s *Service) TemplateTags(ctx context.Context, p Principal, name string) ([]store.TemplateTag, error) {
	tpl, err := s.templateOf(ctx, p, name, false)
	if err != nil {
		return nil, err
	}
	return s.store.ListTemplateTags(ctx, tpl.ID)
}

// DeleteTemplate removes a built template of p's team with every build's
// artefacts, unless sandboxes use it.
func (s *Service) DeleteTemplate(ctx context.Context, p Principal, idOrName string) error {
	tpl, err := s.templateOf(ctx, p, idOrName, true)
	if err != nil {
		return err
	}
	if tpl.ArtifactID == "" && tpl.BuildStatus == store.BuildStatusReady {
		if tpl.Kind == sandbox.KindSnapshot {
			return s.DeleteSnapshot(ctx, p, tpl.ID)
		}
		return PermissionDenied("built-in templates cannot be deleted")
	}
	n, err := s.store.CountSandboxesUsingTemplate(ctx, tpl.ID)
	if err != nil {
		return fmt.Errorf("count dependent sandboxes: %w", err)
	}
	if n > 0 {
		return Conflict("template %s is used by %d sandbox(es); destroy them first", tpl.Name, n)
	}
	bs, err := s.store.ListBuilds(ctx, tpl.ID)
	if err != nil {
		return err
	}
	// Every holder's client first: an unavailable host fails the deletion
	// before any host lost its files.
	type holder struct {
		build string
		hc    HostClient
	}
	var targets []holder
	for _, b := range bs {
		if b.Status == store.BuildStatusBuilding || b.Status == store.BuildStatusWaiting {
			return Conflict("template %s has a build in progress; cancel it first", tpl.Name)
		}
		if b.Status != store.BuildStatusReady || b.Host == "" {
			continue
		}
		clients, err := s.holderClients(ctx, b.Host, b.ID)
		if err != nil {
			return err
		}
		for _, hc := range clients { // the build's host and every copy
			targets = append(targets, holder{b.ID, hc})
		}
	}
	for _, t := range targets {
		if tb, ok := t.hc.(TemplateBuilder); ok {
			if err := tb.DeleteBuild(ctx, t.build); err != nil {
				return hostErrFor("delete the template's files", err)
			}
		}
	}
	if err := s.store.DeleteTemplate(ctx, tpl.TeamID, tpl.ID); err != nil {
		return fromStore(err, "template", "")
	}
	s.log.InfoContext(ctx, "template deleted", "template_id", tpl.ID, "name", tpl.Name)
	return nil
}

// Wait blocks until the builds this service runs have ended (tests,
// shutdown).
func (s *Service) WaitBuilds() { s.builds.wg.Wait() }

// RecoverBuilds marks builds a previous process left waiting or running
// as failed: their host stream is gone with it.
func (s *Service) RecoverBuilds(ctx context.Context) error {
	bs, err := s.store.ListBuildsByStatus(ctx, store.BuildStatusBuilding)
	if err != nil {
		return err
	}
	for _, b := range bs {
		s.builds.mu.Lock()
		_, mine := s.builds.cancel[b.ID]
		s.builds.mu.Unlock()
		if mine {
			continue
		}
		if _, err := s.store.UpdateBuildStatus(ctx, b.ID, []string{store.BuildStatusBuilding}, store.BuildStatusError, "", "the server restarted during the build"); err != nil {
			return err
		}
	}
	return nil
}

// DockerfileBuildInput is a build from a Dockerfile and an uploaded build
// context (PutBuildFiles; "" when the Dockerfile copies nothing).
type DockerfileBuildInput struct {
	NewBuildInput
	Dockerfile    string
	ContextHash   string
	BuildArgs     map[string]string
	SkipCache     bool
	ReadyCmd      string
	ReadyTimeoutS int
	// Auth are the credentials of FROM's registry (never stored).
	Auth templatebuild.RegistryAuth
}

// BuildDockerfile parses a Dockerfile (a syntax error is InvalidArgument
// naming the line), reserves a build and starts it.
func (s *Service) BuildDockerfile(ctx context.Context, p Principal, in DockerfileBuildInput) (store.Template, store.Build, error) {
	plan, err := templatebuild.ParseDockerfile([]byte(in.Dockerfile), "", in.BuildArgs)
	var se *templatebuild.SyntaxError
	if errors.As(err, &se) {
		return store.Template{}, store.Build{}, InvalidArgument("dockerfile", "%s", se.Error())
	}
	if err != nil {
		return store.Template{}, store.Build{}, err
	}
	for i, st := range plan.Steps {
		if st.Type == templatebuild.StepCopy {
			if in.ContextHash == "" {
				return store.Template{}, store.Build{}, InvalidArgument("context", "Dockerfile line %d copies files: upload a build context", st.Line)
			}
			plan.Steps[i].FilesHash = in.ContextHash
		}
	}
	plan.ReadyCmd = in.ReadyCmd
	tpl, b, err := s.NewBuild(ctx, p, in.NewBuildInput)
	if err != nil {
		return store.Template{}, store.Build{}, err
	}
	// A refused start ends the reservation (StartBuild drops it).
	started, err := s.StartBuild(ctx, p, tpl.ID, b.ID, StartBuildInput{Plan: plan, SkipCache: in.SkipCache, ReadyTimeoutS: in.ReadyTimeoutS, Auth: in.Auth})
	if err != nil {
		return store.Template{}, store.Build{}, err
	}
	return tpl, started, nil
}

// TemplateStartCmd is a built template's start command ("" for others).
func TemplateStartCmd(t store.Template) string {
	var c TemplateConfig
	if t.Config == "" || json.Unmarshal([]byte(t.Config), &c) != nil {
		return ""
	}
	return c.StartCmd
}

// AbandonedBuildAfter is how long a reserved build may wait for its start
// (the E2B SDK reserves, uploads files, then starts) before a new build of
// the template replaces it.
const AbandonedBuildAfter = 15 * time.Minute

// dropAbandonedBuilds cancels the template's builds still waiting for
// their start after AbandonedBuildAfter (a client that went away between
// reserving and starting); it reports whether it cancelled any.
func (s *Service) dropAbandonedBuilds(ctx context.Context, templateID string) bool {
	bs, err := s.store.ListBuilds(ctx, templateID)
	if err != nil {
		return false
	}
	dropped := false
	for _, b := range bs {
		if b.Status == store.BuildStatusWaiting && s.now().Sub(b.CreatedAt) > AbandonedBuildAfter {
			_, err := s.store.UpdateBuildStatus(ctx, b.ID, []string{store.BuildStatusWaiting}, store.BuildStatusCancelled, "", "never started: replaced by a new build")
			dropped = dropped || err == nil
		}
	}
	return dropped
}
