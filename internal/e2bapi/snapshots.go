package e2bapi

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Snapshots and forks. An E2B snapshot is a hearth snapshot template (the
// same objects as /v1/snapshots): its snapshotID is the template ID and its
// only name is the template's name. hearth has no template tags, so IDs and
// names carry none; a ":tag" or "team/" qualifier in a name filter is
// ignored.

// snapshotJSON is E2B's SnapshotInfo.
type snapshotJSON struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

func snapshotView(t store.Template) snapshotJSON {
	return snapshotJSON{SnapshotID: t.ID, Names: []string{t.Name}}
}

// forkResultJSON is E2B's SandboxForkResult: exactly one field is set.
type forkResultJSON struct {
	Sandbox *sandboxJSON `json:"sandbox,omitempty"`
	Error   *errorBody   `json:"error,omitempty"`
}

func (s *server) snapshotRoutes() []route {
	return []route{
		{"POST /sandboxes/{id}/snapshots", s.createSnapshot},
		{"GET /snapshots", s.listSnapshots},
		{"POST /sandboxes/{id}/fork", s.fork},
	}
}

// createSnapshot captures a sandbox; a running one is paused only for the
// capture and keeps running with its ID, processes and end time.
func (s *server) createSnapshot(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Name string `json:"name"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Name == "" {
		in.Name = "snapshot-" + strings.ToLower(store.NewShortID())
	}
	tpl, err := s.svc.CreateSnapshot(r.Context(), p, r.PathValue("id"), in.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, snapshotView(tpl))
	return nil
}

// listSnapshots pages the team's own snapshots (by name); nextToken is the
// ID of the last snapshot of the previous page.
func (s *server) listSnapshots(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	q := r.URL.Query()
	limit, err := pageLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	ts, err := s.svc.ListSnapshots(r.Context(), p)
	if err != nil {
		return err
	}
	name := q.Get("name")
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	name, _, _ = strings.Cut(name, ":")
	src := q.Get("sandboxID")
	ts = slices.DeleteFunc(ts, func(t store.Template) bool {
		return t.TeamID != p.TeamID || (src != "" && t.SourceSandboxID != src) ||
			(name != "" && t.Name != name && t.ID != name)
	})
	if after := q.Get("nextToken"); after != "" {
		i := slices.IndexFunc(ts, func(t store.Template) bool { return t.ID == after })
		if i < 0 {
			return errStatus(http.StatusBadRequest, "nextToken: unknown or expired")
		}
		ts = ts[i+1:]
	}
	if len(ts) > limit {
		ts = ts[:limit]
		w.Header().Set("X-Next-Token", ts[limit-1].ID)
	}
	out := make([]snapshotJSON, len(ts))
	for i, t := range ts {
		out[i] = snapshotView(t)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// pageLimit parses E2B's limit query parameter (1–100, default 100).
func pageLimit(v string) (int, error) {
	if v == "" {
		return defaultPageSize, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxPageSize {
		return 0, errStatus(http.StatusBadRequest, "limit: must be between 1 and %d", maxPageSize)
	}
	return n, nil
}

// fork answers 201 with one entry per requested fork once the capture
// worked; a failure before that (bad count, unknown or paused source) is
// the request's own error.
func (s *server) fork(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Timeout *int `json:"timeout"`
		Count   *int `json:"count"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	count, timeout := 1, defaultTimeoutS
	if in.Count != nil {
		count = *in.Count
	}
	if in.Timeout != nil {
		timeout = *in.Timeout
	}
	_, results, err := s.svc.ForkSandbox(r.Context(), p, r.PathValue("id"), count, timeout)
	if err != nil {
		return err
	}
	out := make([]forkResultJSON, len(results))
	for i, res := range results {
		if res.Err != nil {
			status, msg := s.errorFor(r, res.Err)
			out[i].Error = &errorBody{Code: status, Message: msg}
			continue
		}
		sb := s.sandboxView(res.Sandbox, "")
		out[i].Sandbox = &sb
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}
