package e2bapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/templatebuild"
)

// TemplateService is the part of the service the template routes use.
type TemplateService interface {
	NewBuild(ctx context.Context, p service.Principal, in service.NewBuildInput) (store.Template, store.Build, error)
	HasBuildFiles(hash string) bool
	PutBuildFiles(ctx context.Context, p service.Principal, hash string, r io.Reader) (string, error)
	StartBuild(ctx context.Context, p service.Principal, templateID, buildID string, in service.StartBuildInput) (store.Build, error)
	GetBuild(ctx context.Context, p service.Principal, templateID, buildID string) (store.Template, store.Build, error)
	BuildLogs(ctx context.Context, p service.Principal, templateID, buildID string, after, limit int) ([]store.BuildLog, error)
	ListBuilds(ctx context.Context, p service.Principal, templateID string) (store.Template, []store.Build, error)
	DeleteTemplate(ctx context.Context, p service.Principal, idOrName string) error
	TagTemplate(ctx context.Context, p service.Principal, ref string, tags []string) (store.Template, string, error)
	UntagTemplate(ctx context.Context, p service.Principal, name string, tags []string) error
	TemplateTags(ctx context.Context, p service.Principal, name string) ([]store.TemplateTag, error)
}

var _ TemplateService = (*service.Service)(nil)

func (s *server) templateRoutes() []route {
	return []route{
		{"GET /v2/templates", s.templates},
		{"POST /v3/templates", s.requestBuild},
		{"GET /templates/{templateID}/files/{hash}", s.fileUploadLink},
		{"POST /v2/templates/{templateID}/builds/{buildID}", s.triggerBuild},
		{"GET /templates/{templateID}/builds/{buildID}/status", s.buildStatus},
		{"GET /templates/{templateID}/builds/{buildID}/logs", s.buildLogs},
		{"GET /templates/{templateID}", s.templateWithBuilds},
		{"PATCH /templates/{templateID}", s.updateTemplate},
		{"DELETE /templates/{templateID}", s.deleteTemplate},
		// /templates/aliases/{alias} and /templates/{templateID}/tags
		// overlap (aliases/tags): one pattern, split by hand.
		{"GET /templates/{first}/{second}", s.aliasOrTags},
		{"POST /templates/tags", s.assignTags},
		{"DELETE /templates/tags", s.removeTags},
	}
}

type requestBuildBody struct {
	Name     string   `json:"name"`
	Alias    string   `json:"alias"`
	Tags     []string `json:"tags"`
	CPUCount int      `json:"cpuCount"`
	MemoryMB int      `json:"memoryMB"`
	// MinFreeDiskMb: free space on the template's disk after the steps
	// (omitted: hearth's default disk size).
	MinFreeDiskMb *int `json:"minFreeDiskMb"`
}

func (s *server) requestBuild(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in requestBuildBody
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Name == "" {
		in.Name = in.Alias
	}
	tpl, b, err := s.tpl.NewBuild(r.Context(), p, service.NewBuildInput{Name: in.Name, Tags: in.Tags, VCPUs: in.CPUCount, MemoryMB: in.MemoryMB, MinFreeDiskMB: in.MinFreeDiskMb})
	if err != nil {
		return err
	}
	var spec service.BuildSpec
	_ = json.Unmarshal([]byte(b.Spec), &spec)
	tags := spec.Tags
	if tags == nil {
		tags = []string{}
	}
	writeJSON(w, http.StatusAccepted, map[string]any{
		"templateID": tpl.ID, "buildID": b.ID, "public": tpl.TeamID == store.PlatformTeamID,
		"names": []string{tpl.Name}, "aliases": []string{tpl.Name}, "tags": tags,
	})
	return nil
}

// fileUploadLink answers whether an archive is already here and, if not,
// where to PUT it: this same path (with the caller's key, which the SDK
// sends back as the given headers).
func (s *server) fileUploadLink(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	hash := r.PathValue("hash")
	if _, _, err := s.tpl.ListBuilds(r.Context(), p, r.PathValue("templateID")); err != nil {
		return err
	}
	if s.tpl.HasBuildFiles(hash) {
		writeJSON(w, http.StatusCreated, map[string]any{"present": true})
		return nil
	}
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	writeJSON(w, http.StatusCreated, map[string]any{
		"present": false,
		"url":     scheme + "://" + r.Host + r.URL.Path,
		"headers": map[string]string{"X-API-KEY": r.Header.Get("X-API-Key")},
	})
	return nil
}

// uploadFiles receives an archive PUT to the link above.
func (s *server) uploadFiles(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	if _, _, err := s.tpl.ListBuilds(r.Context(), p, r.PathValue("templateID")); err != nil {
		return err
	}
	if _, err := s.tpl.PutBuildFiles(r.Context(), p, r.PathValue("hash"), r.Body); err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return service.TooLarge("build files are larger than %d MiB", service.MaxBuildFilesBytes>>20)
		}
		return err
	}
	w.WriteHeader(http.StatusCreated)
	return nil
}

type stepBody struct {
	Type      string   `json:"type"`
	Args      []string `json:"args"`
	FilesHash string   `json:"filesHash"`
	Force     bool     `json:"force"`
}

type triggerBody struct {
	FromImage         string        `json:"fromImage"`
	FromTemplate      string        `json:"fromTemplate"`
	FromImageRegistry *registryBody `json:"fromImageRegistry"`
	Force             bool          `json:"force"`
	Steps             []stepBody    `json:"steps"`
	StartCmd          string        `json:"startCmd"`
	ReadyCmd          string        `json:"readyCmd"`
}

type registryBody struct {
	Type     string `json:"type"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// planFromSteps maps the SDK's steps onto a build plan.
func planFromSteps(in triggerBody) (templatebuild.Plan, templatebuild.RegistryAuth, error) {
	p := templatebuild.Plan{FromImage: in.FromImage, FromTemplate: in.FromTemplate, StartCmd: in.StartCmd, ReadyCmd: in.ReadyCmd}
	var auth templatebuild.RegistryAuth
	if in.FromImageRegistry != nil {
		if in.FromImageRegistry.Type != "registry" {
			return p, auth, service.InvalidArgument("fromImageRegistry", "type %q is not supported here (only \"registry\" with username and password)", in.FromImageRegistry.Type)
		}
		auth = templatebuild.RegistryAuth{Username: in.FromImageRegistry.Username, Password: in.FromImageRegistry.Password}
	}
	arg := func(a []string, i int) string {
		if i < len(a) {
			return a[i]
		}
		return ""
	}
	for i, st := range in.Steps {
		bad := func(msg string) error {
			return service.InvalidArgument("steps", "step %d (%s): %s", i+1, st.Type, msg)
		}
		s := templatebuild.Step{Type: st.Type, Force: st.Force}
		switch st.Type {
		case templatebuild.StepRun:
			if arg(st.Args, 0) == "" {
				return p, auth, bad("needs a command")
			}
			s.Args, s.User = []string{st.Args[0]}, arg(st.Args, 1)
		case templatebuild.StepCopy:
			if arg(st.Args, 0) == "" || arg(st.Args, 1) == "" || st.FilesHash == "" {
				return p, auth, bad("needs a source, a destination and a filesHash")
			}
			s.Args, s.Chown, s.Mode, s.FilesHash = []string{st.Args[0], st.Args[1]}, arg(st.Args, 2), arg(st.Args, 3), st.FilesHash
		case templatebuild.StepEnv:
			if len(st.Args) == 0 || len(st.Args)%2 != 0 {
				return p, auth, bad("wants key, value pairs")
			}
			s.Args = st.Args
		case templatebuild.StepWorkdir, templatebuild.StepUser:
			if arg(st.Args, 0) == "" {
				return p, auth, bad("needs one argument")
			}
			s.Args = st.Args[:1]
		default:
			return p, auth, bad("unknown step type; supported: RUN, COPY, ENV, WORKDIR, USER")
		}
		p.Steps = append(p.Steps, s)
	}
	return p, auth, nil
}

func (s *server) triggerBuild(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in triggerBody
	if err := decode(r, &in); err != nil {
		return err
	}
	plan, auth, err := planFromSteps(in)
	if err != nil {
		return err
	}
	if _, err := s.tpl.StartBuild(r.Context(), p, r.PathValue("templateID"), r.PathValue("buildID"),
		service.StartBuildInput{Plan: plan, SkipCache: in.Force, Auth: auth}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

type logEntryJSON struct {
	Timestamp time.Time `json:"timestamp"`
	Message   string    `json:"message"`
	Level     string    `json:"level"`
	Step      string    `json:"step,omitempty"`
}

func logEntries(ls []store.BuildLog) []logEntryJSON {
	out := make([]logEntryJSON, len(ls))
	for i, l := range ls {
		out[i] = logEntryJSON{Timestamp: l.Time.UTC(), Message: l.Message, Level: l.Level}
		if l.Step > 0 {
			out[i].Step = strconv.Itoa(l.Step)
		}
	}
	return out
}

// e2bBuildStatus maps build statuses onto E2B's (cancelled is an error).
func e2bBuildStatus(st string) string {
	if st == store.BuildStatusCancelled {
		return "error"
	}
	return st
}

func queryInt(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, service.InvalidArgument(name, "%q: want a non-negative integer", v)
	}
	return n, nil
}

func (s *server) buildStatus(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	offset, err := queryInt(r, "logsOffset", 0)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 100)
	if err != nil {
		return err
	}
	tid, bid := r.PathValue("templateID"), r.PathValue("buildID")
	tpl, b, err := s.tpl.GetBuild(r.Context(), p, tid, bid)
	if err != nil {
		return err
	}
	logs, err := s.tpl.BuildLogs(r.Context(), p, tid, bid, offset, limit)
	if err != nil {
		return err
	}
	lines := make([]string, len(logs))
	for i, l := range logs {
		lines[i] = l.Time.UTC().Format(time.RFC3339) + " " + l.Message
	}
	out := map[string]any{
		"templateID": tpl.ID, "buildID": b.ID, "status": e2bBuildStatus(b.Status),
		"logs": lines, "logEntries": logEntries(logs),
	}
	if b.Error != "" {
		out["reason"] = map[string]any{"message": b.Error}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) buildLogs(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	cursor, err := queryInt(r, "cursor", 0)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 100)
	if err != nil {
		return err
	}
	logs, err := s.tpl.BuildLogs(r.Context(), p, r.PathValue("templateID"), r.PathValue("buildID"), cursor, limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"logs": logEntries(logs)})
	return nil
}

func (s *server) templateWithBuilds(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	tpl, bs, err := s.tpl.ListBuilds(r.Context(), p, r.PathValue("templateID"))
	if err != nil {
		return err
	}
	builds := make([]map[string]any, 0, len(bs))
	for _, b := range bs {
		m := map[string]any{
			"buildID": b.ID, "status": e2bBuildStatus(b.Status), "createdAt": b.CreatedAt.UTC(), "updatedAt": b.CreatedAt.UTC(),
			"cpuCount": b.VCPUs, "memoryMB": b.MemoryMB, "diskSizeMB": b.DiskSizeMB, "envdVersion": EnvdVersion,
		}
		if !b.FinishedAt.IsZero() {
			m["finishedAt"], m["updatedAt"] = b.FinishedAt.UTC(), b.FinishedAt.UTC()
		}
		builds = append(builds, m)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"templateID": tpl.ID, "public": tpl.TeamID == store.PlatformTeamID, "aliases": []string{tpl.Name}, "names": []string{tpl.Name},
		"createdAt": tpl.CreatedAt.UTC(), "updatedAt": tpl.CreatedAt.UTC(), "lastSpawnedAt": nil, "spawnCount": 0, "builds": builds,
	})
	return nil
}

// updateTemplate accepts what it can honour: templates stay with their
// team (public: true would publish them to every team, which only a
// platform admin's platform template is).
func (s *server) updateTemplate(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Public *bool `json:"public"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	tpl, _, err := s.tpl.ListBuilds(r.Context(), p, r.PathValue("templateID"))
	if err != nil {
		return err
	}
	if in.Public != nil && *in.Public != (tpl.TeamID == store.PlatformTeamID) {
		return service.InvalidArgument("public", "cannot change here: a platform admin builds platform templates (hearth template build --platform)")
	}
	writeJSON(w, http.StatusOK, map[string]any{"names": []string{tpl.Name}})
	return nil
}

func (s *server) deleteTemplate(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	if err := s.tpl.DeleteTemplate(r.Context(), p, r.PathValue("templateID")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) aliasOrTags(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	first, second := r.PathValue("first"), r.PathValue("second")
	switch {
	case first == "aliases":
		return s.alias(w, r, p, second)
	case second == "tags":
		return s.tags(w, r, p, first)
	}
	return errStatus(http.StatusNotFound, "not found: %s %s", r.Method, r.URL.Path)
}

func (s *server) alias(w http.ResponseWriter, r *http.Request, p service.Principal, alias string) error {
	tpl, _, err := s.tpl.ListBuilds(r.Context(), p, alias)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"templateID": tpl.ID, "public": tpl.TeamID == store.PlatformTeamID})
	return nil
}

func (s *server) assignTags(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Target string   `json:"target"`
		Tags   []string `json:"tags"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Target == "" || len(in.Tags) == 0 {
		return service.InvalidArgument("target", "target (name or name:tag) and tags are required")
	}
	_, buildID, err := s.tpl.TagTemplate(r.Context(), p, in.Target, in.Tags)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"tags": in.Tags, "buildID": buildID})
	return nil
}

func (s *server) removeTags(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if err := s.tpl.UntagTemplate(r.Context(), p, in.Name, in.Tags); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) tags(w http.ResponseWriter, r *http.Request, p service.Principal, templateID string) error {
	ts, err := s.tpl.TemplateTags(r.Context(), p, templateID)
	if err != nil {
		return err
	}
	out := make([]map[string]any, len(ts))
	for i, t := range ts {
		out[i] = map[string]any{"tag": t.Tag, "buildID": t.BuildID, "createdAt": time.Time{}}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
