// Package api is hearth's HTTP front door: routing, middleware, the native
// /v1 handlers, the OpenAPI spec and the /docs test UI. Handlers are thin:
// decode, call the service, encode. Statuses come from service error kinds,
// mapped once in errors.go.
//
// The handler owns only /v1/, /healthz, /openapi.yaml and /docs; the server
// composes it with the sandbox proxy and dashboard, which use the rest.
package api

import (
	"context"
	"embed"
	"log/slog"
	"net/http"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandboxmetrics"
	"github.com/hearth-sandbox/hearth/internal/service"
	"golang.org/x/time/rate"
)

//go:embed openapi.yaml
var openapiYAML []byte

//go:embed docs
var docsFS embed.FS

// Deps configure the handler.
type Deps struct {
	Service *service.Service
	Logger  *slog.Logger // nil: discard
	// AuthRate and AuthBurst limit signup and login attempts per client IP
	// (each route separately). Zero: 10 per minute, burst 10.
	AuthRate  rate.Limit
	AuthBurst int
	// MaxJSONBytes bounds JSON request bodies (default 1 MiB);
	// MaxUploadBytes bounds file uploads (default 1 GiB).
	MaxJSONBytes   int64
	MaxUploadBytes int64
	Now            func() time.Time
	// Hosts serves /v1/admin/hosts (fleet mode); nil: those routes answer 503.
	Hosts HostAdmin
	// Metrics reads a running sandbox's usage for /v1/sandboxes/{id}/metrics
	// (sandboxmetrics.Reader over the sandbox proxy); nil: that route answers 503.
	Metrics sandboxmetrics.Source
}

// Paths are the path prefixes this handler serves, for composing it with
// other handlers on one mux.
func Paths() []string { return []string{"/v1/", "/healthz", "/openapi.yaml", "/docs", "/docs/"} }

type server struct {
	svc            *service.Service
	log            *slog.Logger
	maxJSONBytes   int64
	maxUploadBytes int64
	now            func() time.Time
	hosts          HostAdmin
	metrics        sandboxmetrics.Source
}

// New returns the API handler. It panics without a Service (a wiring bug).
func New(d Deps) http.Handler {
	if d.Service == nil {
		panic("api.New: nil Service")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.AuthRate == 0 {
		d.AuthRate = rate.Every(6 * time.Second)
	}
	if d.AuthBurst == 0 {
		d.AuthBurst = 10
	}
	if d.MaxJSONBytes == 0 {
		d.MaxJSONBytes = 1 << 20
	}
	if d.MaxUploadBytes == 0 {
		d.MaxUploadBytes = 1 << 30
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &server{svc: d.Service, log: d.Logger, maxJSONBytes: d.MaxJSONBytes, maxUploadBytes: d.MaxUploadBytes, now: d.Now, hosts: d.Hosts, metrics: d.Metrics}

	mux := http.NewServeMux()
	pathOnly := http.NewServeMux() // answers "which paths exist" for 405s
	seen := map[string]bool{}
	for _, rt := range s.routes() {
		var h http.Handler = s.endpoint(rt)
		if rt.authLimited {
			h = rateLimit(newIPLimiter(d.AuthRate, d.AuthBurst, d.Now), h)
		}
		mux.Handle(rt.method+" "+rt.path, h)
		if !seen[rt.path] {
			seen[rt.path] = true
			pathOnly.Handle(rt.path, http.NotFoundHandler())
		}
	}
	mux.Handle("GET /docs/", http.FileServerFS(docsFS))
	mux.HandleFunc("GET /docs", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/docs/", http.StatusMovedPermanently)
	})
	// Anything else under this handler is a JSON 404 (or 405 when the path
	// exists with other methods), never the mux's plain-text answers.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, pat := pathOnly.Handler(r); pat != "" {
			writeError(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		writeError(w, http.StatusNotFound, "not found")
	})
	return requestID(accessLog(d.Logger, recoverPanics(d.Logger, mux)))
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.svc.Ping(ctx); err != nil {
		return service.Unavailable("store unreachable", err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *server) openapi(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/yaml")
	_, err := w.Write(openapiYAML)
	return err
}
