// Package metrics exposes the control plane's Prometheus metrics: HTTP
// traffic by route, and sandboxes and hosts by status read from the store at
// scrape time (so every control plane sharing a database reports the same
// numbers). Each Metrics has its own registry: no global state.
package metrics

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Counts is a snapshot of resource counts by status.
type Counts struct {
	Sandboxes map[string]int // status → count
	Hosts     map[string]int // status → count
}

// CountFunc reads Counts from the store; it is called on every scrape.
type CountFunc func(ctx context.Context) (Counts, error)

// Metrics owns a registry and the control plane's collectors.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	token    string
}

// New registers the collectors. count may be nil (no resource gauges).
// token, when set, must be sent as a Bearer token to scrape; without it
// only loopback clients may scrape.
func New(count CountFunc, token string, log *slog.Logger) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), token: token}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_http_requests_total",
		Help: "HTTP requests answered by the control plane, by method, route and status code.",
	}, []string{"method", "route", "code"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hearth_http_request_duration_seconds",
		Help:    "Time to answer HTTP requests (until the handler returns; streams count whole).",
		Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"method", "route"})
	m.reg.MustRegister(m.requests, m.duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if count != nil {
		m.reg.MustRegister(&storeCollector{count: count, log: log})
	}
	return m
}

// Handler serves the metrics, guarded as New describes.
func (m *Metrics) Handler() http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !m.allowed(r) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"code":403,"message":"metrics are served to loopback clients or with the metrics token (HEARTH_METRICS_TOKEN)"}`))
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (m *Metrics) allowed(r *http.Request) bool {
	if m.token != "" {
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		return subtle.ConstantTimeCompare([]byte(got), []byte(m.token)) == 1
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Middleware counts and times every request by a low-cardinality route.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := Route(r.URL.Path)
		m.requests.WithLabelValues(r.Method, route, strconv.Itoa(sw.code)).Inc()
		m.duration.WithLabelValues(r.Method, route).Observe(time.Since(start).Seconds())
	})
}

// Route maps a path to a bounded label: IDs become {id}, and only known
// top-level prefixes keep their shape (anything else is "other").
func Route(path string) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	switch segs[0] {
	case "v1", "v2", "sandboxes", "templates", "healthz", "metrics", "openapi.yaml", "docs", "auth", "ws":
	default:
		return "other"
	}
	if len(segs) > 5 {
		segs = segs[:5]
	}
	for i, s := range segs {
		if looksLikeID(s) {
			segs[i] = "{id}"
		}
	}
	return "/" + strings.Join(segs, "/")
}

// looksLikeID: sandbox/template IDs (lowercase letters and digits with at
// least one digit and 8+ characters), UUIDs and numbers.
func looksLikeID(s string) bool {
	if len(s) == 36 && strings.Count(s, "-") == 4 {
		return true
	}
	if len(s) < 8 {
		_, err := strconv.Atoi(s)
		return err == nil && s != ""
	}
	digit := false
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digit = true
		case c >= 'a' && c <= 'z':
		default:
			return false
		}
	}
	return digit
}

type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

// Flush keeps streaming responses streaming.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer (hijacking for
// WebSocket upgrades, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var (
	sandboxesDesc = prometheus.NewDesc("hearth_sandboxes", "Sandboxes in the store, by status.", []string{"status"}, nil)
	hostsDesc     = prometheus.NewDesc("hearth_hosts", "Hosts in the store, by status.", []string{"status"}, nil)
)

// storeCollector reads counts on scrape, bounded by a short timeout.
type storeCollector struct {
	count CountFunc
	log   *slog.Logger
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sandboxesDesc
	ch <- hostsDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.count(ctx)
	if err != nil {
		if c.log != nil {
			c.log.Warn("metrics: read counts", "err", err)
		}
		ch <- prometheus.NewInvalidMetric(sandboxesDesc, err)
		return
	}
	for st, n := range counts.Sandboxes {
		ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(n), st)
	}
	for st, n := range counts.Hosts {
		ch <- prometheus.MustNewConstMetric(hostsDesc, prometheus.GaugeValue, float64(n), st)
	}
}
