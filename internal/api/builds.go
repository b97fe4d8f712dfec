package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/templatebuild"
)

func buildView(t store.Template, b store.Build) apiwire.Build {
	out := apiwire.Build{
		ID: b.ID, TemplateID: t.ID, Template: t.Name, Status: b.Status, Error: b.Error, Host: b.Host, Kind: string(b.Kind),
		VCPUs: b.VCPUs, MemoryMB: b.MemoryMB, CreatedAt: b.CreatedAt,
	}
	if !b.FinishedAt.IsZero() {
		f := b.FinishedAt
		out.FinishedAt = &f
	}
	if !b.ReclaimedAt.IsZero() {
		r := b.ReclaimedAt
		out.ReclaimedAt = &r
	}
	return out
}

func (s *server) uploadBuildContext(w http.ResponseWriter, r *http.Request) error {
	hash, err := s.svc.PutBuildFiles(r.Context(), principalFrom(r.Context()), "", r.Body)
	if err != nil {
		if tooLarge(err) {
			return &httpError{http.StatusRequestEntityTooLarge, "build context larger than " + strconv.Itoa(service.MaxBuildFilesBytes>>20) + " MiB"}
		}
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]string{"hash": hash})
	return nil
}

func (s *server) createBuild(w http.ResponseWriter, r *http.Request) error {
	var in apiwire.BuildRequest
	if err := decode(r, &in); err != nil {
		return err
	}
	t, b, err := s.svc.BuildDockerfile(r.Context(), principalFrom(r.Context()), service.DockerfileBuildInput{
		NewBuildInput: service.NewBuildInput{Name: r.PathValue("name"), Tags: in.Tags, VCPUs: in.VCPUs, MemoryMB: in.MemoryMB, DiskSizeMB: in.DiskSizeMB, Platform: in.Platform},
		Dockerfile:    in.Dockerfile, ContextHash: in.ContextHash, BuildArgs: in.BuildArgs, SkipCache: in.SkipCache,
		ReadyCmd: in.ReadyCmd, ReadyTimeoutS: in.ReadyTimeoutS, Auth: registryAuth(in.Registry),
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, buildView(t, b))
	return nil
}

func registryAuth(r *apiwire.RegistryAuth) templatebuild.RegistryAuth {
	if r == nil {
		return templatebuild.RegistryAuth{}
	}
	return templatebuild.RegistryAuth{Username: r.Username, Password: r.Password}
}

func (s *server) listBuilds(w http.ResponseWriter, r *http.Request) error {
	t, bs, err := s.svc.ListBuilds(r.Context(), principalFrom(r.Context()), r.PathValue("name"))
	if err != nil {
		return err
	}
	out := make([]apiwire.Build, len(bs))
	for i, b := range bs {
		out[i] = buildView(t, b)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getBuild(w http.ResponseWriter, r *http.Request) error {
	t, b, err := s.svc.GetBuild(r.Context(), principalFrom(r.Context()), r.PathValue("name"), r.PathValue("build_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, buildView(t, b))
	return nil
}

func (s *server) cancelBuild(w http.ResponseWriter, r *http.Request) error {
	p := principalFrom(r.Context())
	b, err := s.svc.CancelBuild(r.Context(), p, r.PathValue("name"), r.PathValue("build_id"))
	if err != nil {
		return err
	}
	t, _, err := s.svc.GetBuild(r.Context(), p, r.PathValue("name"), b.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, buildView(t, b))
	return nil
}

// followLimit bounds how long one log stream follows a build.
const followLimit = 2 * time.Hour

// buildLogs answers the log lines after ?after=SEQ; with ?follow=true it
// streams NDJSON until the build has finished and every line went out.
func (s *server) buildLogs(w http.ResponseWriter, r *http.Request) error {
	p := principalFrom(r.Context())
	name, id := r.PathValue("name"), r.PathValue("build_id")
	after := 0
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return service.InvalidArgument("after", "%q: want a log sequence number", v)
		}
		after = n
	}
	follow := r.URL.Query().Get("follow") == "true"
	if !follow {
		logs, err := s.svc.BuildLogs(r.Context(), p, name, id, after, 1000)
		if err != nil {
			return err
		}
		out := make([]apiwire.BuildLog, len(logs))
		for i, l := range logs {
			out[i] = apiwire.BuildLog{Seq: l.Seq, Time: l.Time, Level: l.Level, Step: l.Step, Message: l.Message}
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	if _, _, err := s.svc.GetBuild(r.Context(), p, name, id); err != nil {
		return err
	}
	w.Header().Set("Content-Type", ndjson)
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	deadline := time.Now().Add(followLimit)
	for time.Now().Before(deadline) {
		_, b, err := s.svc.GetBuild(r.Context(), p, name, id)
		if err != nil {
			return nil // the response has started: end the stream
		}
		logs, err := s.svc.BuildLogs(r.Context(), p, name, id, after, 1000)
		if err != nil {
			return nil
		}
		for _, l := range logs {
			if enc.Encode(apiwire.BuildLog{Seq: l.Seq, Time: l.Time, Level: l.Level, Step: l.Step, Message: l.Message}) != nil {
				return nil
			}
			after = l.Seq
		}
		_ = rc.Flush()
		finished := b.Status != store.BuildStatusWaiting && b.Status != store.BuildStatusBuilding
		if finished && len(logs) == 0 {
			return nil
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
	return nil
}

func (s *server) deleteTemplate(w http.ResponseWriter, r *http.Request) error {
	if err := s.svc.DeleteTemplate(r.Context(), principalFrom(r.Context()), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
