package e2bapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Refreshes, teams and usage metrics. hearth keeps no metric history: team
// metrics are one sample computed now, whatever start and end say (both are
// still checked), and sandbox metrics are each running sandbox's current
// sample from its envd.

type teamJSON struct {
	TeamID    string `json:"teamID"`
	Name      string `json:"name"`
	APIKey    string `json:"apiKey"`
	IsDefault bool   `json:"isDefault"`
}

type teamMetricJSON struct {
	Timestamp           time.Time `json:"timestamp"`
	TimestampUnix       int64     `json:"timestampUnix"`
	ConcurrentSandboxes int       `json:"concurrentSandboxes"`
	SandboxStartRate    float64   `json:"sandboxStartRate"`
}

type maxTeamMetricJSON struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	Value         float64   `json:"value"`
}

// maxMetricsIDs bounds GET /sandboxes/metrics (E2B's maxItems).
const maxMetricsIDs = 100

func (s *server) usageRoutes() []route {
	return []route{
		{"POST /sandboxes/{id}/refreshes", s.refresh},
		{"GET /sandboxes/metrics", s.manyMetrics},
		{"GET /teams", s.teams},
		{"GET /teams/{teamID}/metrics", s.teamMetrics},
		{"GET /teams/{teamID}/metrics/max", s.teamMetricsMax},
	}
}

// refresh keeps a sandbox alive for duration seconds from now (E2B's
// default when absent: its default timeout).
func (s *server) refresh(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Duration *int `json:"duration"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	d := defaultTimeoutS
	if in.Duration != nil {
		d = *in.Duration
	}
	if d < 0 || d > 3600 {
		return errStatus(http.StatusBadRequest, "duration: must be between 0 and 3600 seconds")
	}
	if _, err := s.svc.SetSandboxTimeout(r.Context(), p, r.PathValue("id"), d); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// manyMetrics answers {sandboxes: {id: metric}} for the listed sandboxes
// that run (paused ones have no current sample and are left out); an
// unknown or another team's ID is a 404.
func (s *server) manyMetrics(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var ids []string
	for _, v := range r.URL.Query()["sandbox_ids"] {
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); id != "" {
				ids = append(ids, id)
			}
		}
	}
	if len(ids) == 0 || len(ids) > maxMetricsIDs {
		return errStatus(http.StatusBadRequest, "sandbox_ids: give 1 to %d sandbox IDs", maxMetricsIDs)
	}
	out := map[string]metricJSON{}
	for _, id := range ids {
		sb, err := s.svc.GetSandbox(r.Context(), p, id)
		if err != nil {
			return err
		}
		if s.metrics == nil || sb.Status != sandbox.StateRunning {
			continue
		}
		m, err := s.currentMetric(r, sb)
		if err != nil {
			return err
		}
		out[id] = m
	}
	writeJSON(w, http.StatusOK, map[string]any{"sandboxes": out})
	return nil
}

func (s *server) currentMetric(r *http.Request, sb store.Sandbox) (metricJSON, error) {
	m, err := s.metrics.SandboxMetrics(r.Context(), sb)
	if err != nil {
		return metricJSON{}, service.Unavailable("sandbox metrics unavailable", err)
	}
	return metricJSON{
		Timestamp: m.Timestamp.UTC(), TimestampUnix: m.Timestamp.Unix(), CPUCount: m.CPUCount,
		CPUUsedPct: m.CPUUsedPct, MemUsed: m.MemUsed, MemTotal: m.MemTotal, MemCache: m.MemCache,
		DiskUsed: m.DiskUsed, DiskTotal: m.DiskTotal,
	}, nil
}

// teams lists the API key's team: a hearth key belongs to exactly one. The
// key reported is the one the caller sent.
func (s *server) teams(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	t, err := s.svc.GetTeam(r.Context(), p, p.TeamID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, []teamJSON{{TeamID: t.ID, Name: t.Name, APIKey: r.Header.Get("X-API-Key"), IsDefault: true}})
	return nil
}

// checkRange validates the optional start/end (Unix seconds) of the team
// metric routes.
func checkRange(r *http.Request) error {
	q := r.URL.Query()
	var bounds [2]int64
	for i, k := range []string{"start", "end"} {
		v := q.Get(k)
		if v == "" {
			continue
		}
		n, err := parseNonNegInt(v)
		if err != nil {
			return errStatus(http.StatusBadRequest, "%s: must be a Unix time in seconds", k)
		}
		bounds[i] = n
	}
	if bounds[0] != 0 && bounds[1] != 0 && bounds[1] < bounds[0] {
		return errStatus(http.StatusBadRequest, "end: must not be before start")
	}
	return nil
}

func (s *server) usage(r *http.Request, p service.Principal) (service.TeamUsage, error) {
	if err := checkRange(r); err != nil {
		return service.TeamUsage{}, err
	}
	return s.svc.TeamUsage(r.Context(), p, r.PathValue("teamID"))
}

func startRate(u service.TeamUsage) float64 { return float64(u.StartedLastMinute) / 60 }

func (s *server) teamMetrics(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	u, err := s.usage(r, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, []teamMetricJSON{{
		Timestamp: u.At.UTC(), TimestampUnix: u.At.Unix(),
		ConcurrentSandboxes: u.Concurrent, SandboxStartRate: startRate(u),
	}})
	return nil
}

func (s *server) teamMetricsMax(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	metric := r.URL.Query().Get("metric")
	if metric != "concurrent_sandboxes" && metric != "sandbox_start_rate" {
		return errStatus(http.StatusBadRequest, "metric: must be concurrent_sandboxes or sandbox_start_rate")
	}
	u, err := s.usage(r, p)
	if err != nil {
		return err
	}
	v := float64(u.Concurrent)
	if metric == "sandbox_start_rate" {
		v = startRate(u)
	}
	writeJSON(w, http.StatusOK, maxTeamMetricJSON{Timestamp: u.At.UTC(), TimestampUnix: u.At.Unix(), Value: v})
	return nil
}

func parseNonNegInt(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err == nil && n < 0 {
		err = strconv.ErrRange
	}
	return n, err
}
