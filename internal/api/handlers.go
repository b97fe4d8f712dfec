package api

import (
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/egress"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

func (s *server) signup(w http.ResponseWriter, r *http.Request) error {
	var in apiwire.Credentials
	if err := decode(r, &in); err != nil {
		return err
	}
	res, err := s.svc.Signup(r.Context(), in.Email, in.Password)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apiwire.Signup{
		Token: res.Token,
		User:  apiwire.Account{ID: res.User.ID, Email: res.User.Email},
		Team:  apiwire.Team{ID: res.Team.ID, Name: res.Team.Name},
	})
	return nil
}

func (s *server) login(w http.ResponseWriter, r *http.Request) error {
	var in apiwire.Credentials
	if err := decode(r, &in); err != nil {
		return err
	}
	tok, _, err := s.svc.Login(r.Context(), in.Email, in.Password)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiwire.Token{Token: tok})
	return nil
}

func (s *server) me(w http.ResponseWriter, r *http.Request) error {
	u, teams, err := s.svc.Me(r.Context(), principalFrom(r.Context()))
	if err != nil {
		return err
	}
	ts := make([]apiwire.Team, len(teams))
	for i, t := range teams {
		ts[i] = apiwire.Team{ID: t.ID, Name: t.Name, Role: string(t.Role)}
	}
	writeJSON(w, http.StatusOK, apiwire.Me{
		User:  apiwire.User{ID: u.ID, Email: u.Email, IsAdmin: u.IsAdmin, CreatedAt: u.CreatedAt},
		Teams: ts,
	})
	return nil
}

func apiKeyView(k store.APIKey) apiwire.APIKey {
	return apiwire.APIKey{ID: k.ID, Name: k.Name, Prefix: k.Prefix, CreatedAt: k.CreatedAt, LastUsedAt: k.LastUsedAt}
}

func (s *server) createAPIKey(w http.ResponseWriter, r *http.Request) error {
	var in apiwire.NewAPIKey
	if err := decode(r, &in); err != nil {
		return err
	}
	k, key, err := s.svc.CreateAPIKey(r.Context(), principalFrom(r.Context()), in.Name)
	if err != nil {
		return err
	}
	v := apiKeyView(k)
	v.Key = key
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (s *server) listAPIKeys(w http.ResponseWriter, r *http.Request) error {
	ks, err := s.svc.ListAPIKeys(r.Context(), principalFrom(r.Context()))
	if err != nil {
		return err
	}
	out := make([]apiwire.APIKey, len(ks))
	for i, k := range ks {
		out[i] = apiKeyView(k)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) deleteAPIKey(w http.ResponseWriter, r *http.Request) error {
	if err := s.svc.DeleteAPIKey(r.Context(), principalFrom(r.Context()), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// sandboxView never includes the access token or env values: only the
// create response adds the token, and env values are never echoed.
func sandboxView(sb store.Sandbox) apiwire.Sandbox {
	md := sb.Metadata
	if md == nil {
		md = map[string]string{}
	}
	var keys []string
	if len(sb.Env) > 0 {
		keys = slices.Sorted(maps.Keys(sb.Env))
	}
	return apiwire.Sandbox{
		ID: sb.ID, TemplateID: sb.TemplateID, Status: string(sb.Status), Host: sb.Host,
		VCPUs: sb.VCPUs, MemoryMB: sb.MemoryMB, DiskSizeMB: sb.DiskSizeMB,
		Metadata: md, EnvKeys: keys, TimeoutS: sb.TimeoutS, EndAt: sb.EndAt, CreatedAt: sb.CreatedAt,
		AutoPause: sb.AutoPause, AutoResume: sb.AutoResume, AllowInternet: sb.AllowInternet,
		AllowOut: sb.AllowOut, DenyOut: sb.DenyOut, Error: sb.Error,
	}
}

func (s *server) createSandbox(w http.ResponseWriter, r *http.Request) error {
	var in apiwire.CreateSandbox
	if err := decode(r, &in); err != nil {
		return err
	}
	sb, err := s.svc.CreateSandbox(r.Context(), principalFrom(r.Context()), service.CreateSandboxInput{
		Template: in.Template, VCPUs: in.VCPUs, MemoryMB: in.MemoryMB, DiskSizeMB: in.DiskSizeMB,
		TimeoutS: in.TimeoutS, Env: in.Env, Metadata: in.Metadata,
		AutoPause: in.AutoPause, AutoResume: in.AutoResume, AllowInternet: in.AllowInternet,
		AllowOut: in.AllowOut, DenyOut: in.DenyOut, Volumes: mountsInput(in.Volumes),
		EgressRules: egressRulesInput(in.EgressRules),
	})
	if err != nil {
		return err
	}
	v := sandboxView(sb)
	v.EnvdAccessToken = sb.AccessToken
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// listSandboxes supports ?status=running,paused, ?metadata=<url-encoded
// k=v&k2=v2> (E2B's form) and ?limit=N.
func (s *server) listSandboxes(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var f store.SandboxFilter
	if v := q.Get("status"); v != "" {
		for _, st := range strings.Split(v, ",") {
			f.Statuses = append(f.Statuses, sbx.State(strings.TrimSpace(st)))
		}
	}
	if v := q.Get("metadata"); v != "" {
		md, err := url.ParseQuery(v)
		if err != nil {
			return service.InvalidArgument("metadata", "must be URL-encoded key=value pairs")
		}
		f.Metadata = map[string]string{}
		for k, vs := range md {
			f.Metadata[k] = vs[0]
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return service.InvalidArgument("limit", "must be between 1 and 10000")
		}
		f.Limit = n
	}
	sbs, _, err := s.svc.ListSandboxes(r.Context(), principalFrom(r.Context()), f)
	if err != nil {
		return err
	}
	out := make([]apiwire.Sandbox, len(sbs))
	for i, sb := range sbs {
		out[i] = sandboxView(sb)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getSandbox(w http.ResponseWriter, r *http.Request) error {
	sb, err := s.svc.GetSandbox(r.Context(), principalFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sandboxView(sb))
	return nil
}

func (s *server) deleteSandbox(w http.ResponseWriter, r *http.Request) error {
	if err := s.svc.DestroySandbox(r.Context(), principalFrom(r.Context()), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) exec(w http.ResponseWriter, r *http.Request) error {
	var in apiwire.ExecRequest
	if err := decode(r, &in); err != nil {
		return err
	}
	req := service.ExecRequest{Cmd: in.Cmd, Args: in.Args, Env: in.Env, Cwd: in.Cwd, TimeoutS: in.TimeoutS}
	if wantsNDJSON(r) {
		return s.execStream(w, r, req)
	}
	res, err := s.svc.Exec(r.Context(), principalFrom(r.Context()), r.PathValue("id"), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiwire.ExecResult{Stdout: res.Stdout, Stderr: res.Stderr, ExitCode: res.ExitCode})
	return nil
}

func (s *server) pauseSandbox(w http.ResponseWriter, r *http.Request) error {
	// Idempotent: pausing a paused sandbox answers 200 like the first time.
	sb, _, err := s.svc.PauseSandbox(r.Context(), principalFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sandboxView(sb))
	return nil
}

func (s *server) resumeSandbox(w http.ResponseWriter, r *http.Request) error {
	sb, err := s.svc.ResumeSandbox(r.Context(), principalFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sandboxView(sb))
	return nil
}

func (s *server) setTimeout(w http.ResponseWriter, r *http.Request) error {
	var in apiwire.SetTimeout
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.TimeoutS == nil {
		return service.InvalidArgument("timeout_s", "is required")
	}
	sb, err := s.svc.SetSandboxTimeout(r.Context(), principalFrom(r.Context()), r.PathValue("id"), *in.TimeoutS)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sandboxView(sb))
	return nil
}

// setNetwork replaces the sandbox's egress policy (omitted fields are
// cleared: allow_internet back to true, no rules); a running sandbox gets
// it at once.
func (s *server) setNetwork(w http.ResponseWriter, r *http.Request) error {
	var in apiwire.Network
	if err := decode(r, &in); err != nil {
		return err
	}
	sb, err := s.svc.UpdateSandboxNetwork(r.Context(), principalFrom(r.Context()), r.PathValue("id"), service.NetworkInput{
		AllowInternet: in.AllowInternet, AllowOut: in.AllowOut, DenyOut: in.DenyOut,
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sandboxView(sb))
	return nil
}

// readFile streams the file; errors can only be reported before the first
// byte, after that a broken copy aborts the response, so the client sees a
// failure rather than a shorter file.
func (s *server) readFile(w http.ResponseWriter, r *http.Request) error {
	rc, err := s.svc.ReadFile(r.Context(), principalFrom(r.Context()), r.PathValue("id"), r.URL.Query().Get("path"))
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		s.log.WarnContext(r.Context(), "file download interrupted", "err", err, "request_id", requestIDFrom(r.Context()))
		panic(http.ErrAbortHandler)
	}
	return nil
}

func (s *server) writeFile(w http.ResponseWriter, r *http.Request) error {
	err := s.svc.WriteFile(r.Context(), principalFrom(r.Context()), r.PathValue("id"), r.URL.Query().Get("path"), r.Body)
	if err != nil {
		if tooLarge(err) {
			return &httpError{http.StatusRequestEntityTooLarge, "upload larger than " + strconv.FormatInt(s.maxUploadBytes, 10) + " bytes"}
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func templateView(t store.Template) apiwire.Template {
	return apiwire.Template{
		ID: t.ID, TeamID: t.TeamID, Name: t.Name, Kind: string(t.Kind), VCPUs: t.VCPUs, MemoryMB: t.MemoryMB,
		DiskSizeMB: t.DiskSizeMB, Host: t.Host, SourceSandboxID: t.SourceSandboxID,
		Platform: t.TeamID == store.PlatformTeamID, CreatedAt: t.CreatedAt, BuildStatus: t.BuildStatus,
		Built:    t.ArtifactID != "" || t.BuildStatus != store.BuildStatusReady,
		StartCmd: service.TemplateStartCmd(t),
	}
}

func writeTemplates(w http.ResponseWriter, ts []store.Template) {
	out := make([]apiwire.Template, len(ts))
	for i, t := range ts {
		out[i] = templateView(t)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) listTemplates(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.svc.ListTemplates(r.Context(), principalFrom(r.Context()))
	if err != nil {
		return err
	}
	writeTemplates(w, ts)
	return nil
}

func (s *server) adminTemplates(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.svc.ListAllTemplates(r.Context(), principalFrom(r.Context()))
	if err != nil {
		return err
	}
	writeTemplates(w, ts)
	return nil
}

func (s *server) createSnapshot(w http.ResponseWriter, r *http.Request) error {
	var in apiwire.CreateSnapshot
	if err := decode(r, &in); err != nil {
		return err
	}
	t, err := s.svc.CreateSnapshot(r.Context(), principalFrom(r.Context()), in.SandboxID, in.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, templateView(t))
	return nil
}

func (s *server) listSnapshots(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.svc.ListSnapshots(r.Context(), principalFrom(r.Context()))
	if err != nil {
		return err
	}
	writeTemplates(w, ts)
	return nil
}

func (s *server) deleteSnapshot(w http.ResponseWriter, r *http.Request) error {
	if err := s.svc.DeleteSnapshot(r.Context(), principalFrom(r.Context()), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func mountsInput(in []apiwire.VolumeMount) []service.VolumeMountInput {
	var out []service.VolumeMountInput
	for _, m := range in {
		out = append(out, service.VolumeMountInput{Volume: m.Volume, Path: m.Path})
	}
	return out
}

func egressRulesInput(in []apiwire.EgressRule) []egress.HeaderRule {
	var out []egress.HeaderRule
	for _, r := range in {
		out = append(out, egress.HeaderRule{Domain: r.Domain, Headers: r.Headers})
	}
	return out
}

func volumeView(v store.Volume) apiwire.Volume {
	return apiwire.Volume{ID: v.ID, Name: v.Name, Host: v.Host, Token: v.Token, CreatedAt: v.CreatedAt}
}

func (s *server) createVolume(w http.ResponseWriter, r *http.Request) error {
	var in apiwire.CreateVolume
	if err := decode(r, &in); err != nil {
		return err
	}
	v, err := s.svc.CreateVolume(r.Context(), principalFrom(r.Context()), in.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, volumeView(v))
	return nil
}

func (s *server) listVolumes(w http.ResponseWriter, r *http.Request) error {
	vs, err := s.svc.ListVolumes(r.Context(), principalFrom(r.Context()))
	if err != nil {
		return err
	}
	out := make([]apiwire.Volume, len(vs))
	for i, v := range vs {
		out[i] = volumeView(v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getVolume(w http.ResponseWriter, r *http.Request) error {
	v, err := s.svc.GetVolume(r.Context(), principalFrom(r.Context()), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, volumeView(v))
	return nil
}

func (s *server) deleteVolume(w http.ResponseWriter, r *http.Request) error {
	if err := s.svc.DeleteVolume(r.Context(), principalFrom(r.Context()), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
