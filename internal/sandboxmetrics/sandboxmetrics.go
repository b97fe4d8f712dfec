// Package sandboxmetrics reads a running sandbox's current resource usage
// from envd's GET /metrics (E2B envd spec), sent in-process through the
// sandbox traffic proxy with the sandbox's access token. Both the native API
// and the E2B-compatible API use it.
package sandboxmetrics

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

// Source reads a running sandbox's current resource usage.
type Source interface {
	SandboxMetrics(ctx context.Context, sb store.Sandbox) (Sample, error)
}

// Sample is one resource-usage sample of a sandbox. Memory and disk are in
// bytes, as envd reports them.
type Sample struct {
	Timestamp  time.Time
	CPUCount   int
	CPUUsedPct float64
	MemUsed    int64
	MemTotal   int64
	MemCache   int64
	DiskUsed   int64
	DiskTotal  int64
}

// Reader implements Source by asking envd through Proxy (the sandbox
// traffic handler, routed by the E2b-Sandbox-Id/-Port headers).
type Reader struct {
	Proxy http.Handler
}

var _ Source = Reader{}

// EnvdPort is where envd listens in every guest.
const EnvdPort = 49983

// timeout bounds one read.
const timeout = 10 * time.Second

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

// SandboxMetrics reads the current sample of a running sandbox.
func (m Reader) SandboxMetrics(ctx context.Context, sb store.Sandbox) (Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://envd/metrics", nil)
	if err != nil {
		return Sample{}, err
	}
	req.Header.Set("E2b-Sandbox-Id", sb.ID)
	req.Header.Set("E2b-Sandbox-Port", strconv.Itoa(EnvdPort))
	req.Header.Set(envd.AccessTokenHeader, sb.AccessToken)
	rec := &memWriter{header: http.Header{}} // a few hundred bytes of JSON
	m.Proxy.ServeHTTP(rec, req)
	if rec.status != http.StatusOK {
		return Sample{}, fmt.Errorf("envd /metrics: status %d: %.200s", rec.status, rec.body.String())
	}
	var in envdMetricsJSON
	if err := json.Unmarshal(rec.body.Bytes(), &in); err != nil {
		return Sample{}, fmt.Errorf("envd /metrics: %w", err)
	}
	ts := time.Unix(in.TS, 0)
	if in.TS == 0 {
		ts = time.Now()
	}
	return Sample{
		Timestamp: ts, CPUCount: in.CPUCount, CPUUsedPct: in.CPUUsedPct,
		MemUsed: in.MemUsed, MemTotal: in.MemTotal, MemCache: in.MemCache,
		DiskUsed: in.DiskUsed, DiskTotal: in.DiskTotal,
	}, nil
}

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
