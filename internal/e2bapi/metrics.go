package e2bapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// EnvdMetrics reads metrics from envd's GET /metrics inside the sandbox,
// sent in-process through Proxy (the sandbox traffic handler, routed by the
// E2b-Sandbox-Id/-Port headers) with the sandbox's access token.
type EnvdMetrics struct {
	Proxy http.Handler
}

var _ MetricsSource = EnvdMetrics{}

// envdMetricsJSON is envd's /metrics body (E2B envd.yaml, Metrics).
type envdMetricsJSON struct {
	TS         int64   `json:"ts"`
	CPUCount   int     `json:"cpu_count"`
	CPUUsedPct float64 `json:"cpu_used_pct"`
	MemTotal   int64   `json:"mem_total"`
	MemUsed    int64   `json:"mem_used"`
	MemCache   int64   `json:"mem_cache"`
	DiskUsed   int64   `json:"disk_used"`
	DiskTotal  int64   `json:"disk_total"`
}

func (m EnvdMetrics) SandboxMetrics(ctx context.Context, sb store.Sandbox) (Metric, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://envd/metrics", nil)
	if err != nil {
		return Metric{}, err
	}
	req.Header.Set("E2b-Sandbox-Id", sb.ID)
	req.Header.Set("E2b-Sandbox-Port", strconv.Itoa(envdPort))
	req.Header.Set(envd.AccessTokenHeader, sb.AccessToken)
	rec := &memWriter{header: http.Header{}} // a few hundred bytes of JSON
	m.Proxy.ServeHTTP(rec, req)
	if rec.status != http.StatusOK {
		return Metric{}, fmt.Errorf("envd /metrics: status %d: %.200s", rec.status, rec.body.String())
	}
	var in envdMetricsJSON
	if err := json.Unmarshal(rec.body.Bytes(), &in); err != nil {
		return Metric{}, fmt.Errorf("envd /metrics: %w", err)
	}
	ts := time.Unix(in.TS, 0)
	if in.TS == 0 {
		ts = time.Now()
	}
	return Metric{
		Timestamp: ts, CPUCount: in.CPUCount, CPUUsedPct: in.CPUUsedPct,
		MemUsed: in.MemUsed, MemTotal: in.MemTotal, MemCache: in.MemCache,
		DiskUsed: in.DiskUsed, DiskTotal: in.DiskTotal,
	}, nil
}

// envdPort is where envd listens in every guest.
const envdPort = 49983

// memWriter collects a small in-process response.
type memWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *memWriter) Header() http.Header { return w.header }

func (w *memWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *memWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

func (w *memWriter) Flush() {}
