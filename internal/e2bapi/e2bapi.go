// Package e2bapi serves the E2B-compatible control-plane REST routes, so the
// official E2B SDKs (JS `e2b` ≥ 2.51, Python) run unmodified against hearth
// with E2B_API_URL pointing here. It is a translation layer only: every
// decision about a sandbox's life is made by internal/service; this package
// maps E2B's wire shapes (from E2B's Apache-2.0 OpenAPI contract,
// specs/e2b/openapi.yml, and what the SDK actually sends and reads) onto
// service calls.
//
// Routes (auth: X-API-KEY with a hearth team API key):
//
//	POST   /sandboxes, /v2/sandboxes               create (201)
//	GET    /sandboxes                              running sandboxes (legacy list)
//	GET    /v2/sandboxes                           state/metadata filters, limit, nextToken + X-Next-Token
//	GET    /sandboxes/{id}                         detail
//	DELETE /sandboxes/{id}                         kill (204)
//	POST   /sandboxes/{id}/timeout                 set TTL from now (204)
//	POST   /sandboxes/{id}/pause                   204; 409 when already paused
//	POST   /sandboxes/{id}/resume                  legacy resume (201); 409 when running
//	POST   /sandboxes/{id}/connect, /v2/...        200 running, 201 resumed
//	GET    /sandboxes/{id}/metrics                 current sample from envd
//	GET    /templates, /v2/templates               team + platform templates
//	POST   /v3/templates                           reserve a build (202: templateID, buildID)
//	GET    /templates/{id}/files/{hash}            upload link for a COPY archive; PUT to it
//	POST   /v2/templates/{id}/builds/{buildID}     start the build with its steps (202)
//	GET    /templates/{id}/builds/{buildID}/status status + logs from logsOffset
//	GET    /templates/{id}/builds/{buildID}/logs   logs from cursor
//	GET/PATCH/DELETE /templates/{id}           builds; public (unchangeable); delete
//	GET    /templates/aliases/{alias}              200 or 404 (Template.exists)
//	POST/DELETE /templates/tags, GET /templates/{id}/tags
//	POST   /sandboxes/{id}/snapshots               snapshot template of a sandbox (201)
//	GET    /snapshots                              the team's snapshots, paged (deleted by DELETE /templates/{id})
//	POST   /sandboxes/{id}/fork                    one capture, count sandboxes (201, one result each)
//	POST   /sandboxes/{id}/refreshes               keep alive for duration seconds (204)
//	GET    /sandboxes/metrics                      current samples of the listed sandboxes
//	GET    /teams                                  the key's team
//	GET    /teams/{teamID}/metrics, .../max        usage now (no history)
//	GET    /sandboxes/{id}/logs, /v2/...           guest console lines, paged
//	POST   /secrets, GET /secrets                  create (201), list (paged)
//	GET, POST, DELETE /secrets/{id}                info, new version, delete (204); values never returned
//	POST, GET /volumes; GET, DELETE /volumes/{id}  team volumes (docs/volumes.md); delete of a mounted one 409
//	/volumecontent/{id}/dir|path|file              the Volume class's content API (Bearer: the volume's token)
//
// Choices (see docs/e2b.md): listing is ordered by creation time, oldest
// first, whatever `order` says; a sandbox's startedAt is its creation time;
// pause always keeps memory (a `memory: false` request is honoured as a full
// snapshot, which resumes to the same state and more); network egress rules,
// MCP and IAM tokens are refused with 400 rather than ignored.
package e2bapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/sandboxmetrics"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Service is what this package needs from internal/service. *service.Service
// implements it; the interface keeps the dependency explicit.
type Service interface {
	AuthenticateAPIKey(ctx context.Context, key string) (service.Principal, error)
	CreateSandbox(ctx context.Context, p service.Principal, in service.CreateSandboxInput) (store.Sandbox, error)
	GetSandbox(ctx context.Context, p service.Principal, id string) (store.Sandbox, error)
	// ListSandboxes returns a page and the cursor of the next ("" at the end).
	ListSandboxes(ctx context.Context, p service.Principal, f store.SandboxFilter) ([]store.Sandbox, string, error)
	DestroySandbox(ctx context.Context, p service.Principal, id string) error
	// PauseSandbox reports changed=false when the sandbox was already paused.
	PauseSandbox(ctx context.Context, p service.Principal, id string) (store.Sandbox, bool, error)
	// ConnectSandbox returns the running sandbox, resuming it first when it
	// is paused (resumed = true). timeoutS > 0 extends its end time to at
	// least now+timeoutS; it never shortens it.
	ConnectSandbox(ctx context.Context, p service.Principal, id string, timeoutS int) (sb store.Sandbox, resumed bool, err error)
	SetSandboxTimeout(ctx context.Context, p service.Principal, id string, timeoutS int) (store.Sandbox, error)
	UpdateSandboxNetwork(ctx context.Context, p service.Principal, id string, in service.NetworkInput) (store.Sandbox, error)
	ListTemplates(ctx context.Context, p service.Principal) ([]store.Template, error)
	CreateSnapshot(ctx context.Context, p service.Principal, sandboxID, name string) (store.Template, error)
	ListSnapshots(ctx context.Context, p service.Principal) ([]store.Template, error)
	DeleteSnapshot(ctx context.Context, p service.Principal, idOrName string) error
	// ForkSandbox captures a running sandbox once and spawns count
	// sandboxes from it; each result succeeds or fails on its own.
	ForkSandbox(ctx context.Context, p service.Principal, id string, count, timeoutS int) (store.Template, []service.ForkResult, error)
	GetTeam(ctx context.Context, p service.Principal, teamID string) (store.Team, error)
	TeamUsage(ctx context.Context, p service.Principal, teamID string) (service.TeamUsage, error)
	CreateSecret(ctx context.Context, p service.Principal, name, value string, metadata map[string]string) (store.Secret, error)
	GetSecret(ctx context.Context, p service.Principal, idOrName string) (store.Secret, error)
	ListSecrets(ctx context.Context, p service.Principal, after string, limit int) ([]store.Secret, string, error)
	UpdateSecret(ctx context.Context, p service.Principal, idOrName, value string, metadata map[string]string) (store.Secret, error)
	DeleteSecret(ctx context.Context, p service.Principal, idOrName string) error
	CreateVolume(ctx context.Context, p service.Principal, name string) (store.Volume, error)
	GetVolume(ctx context.Context, p service.Principal, idOrName string) (store.Volume, error)
	ListVolumes(ctx context.Context, p service.Principal) ([]store.Volume, error)
	DeleteVolume(ctx context.Context, p service.Principal, idOrName string) error
	SandboxVolumes(ctx context.Context, p service.Principal, sandboxID string) ([]store.SandboxVolume, error)
	TeamSandboxVolumes(ctx context.Context, p service.Principal) (map[string][]store.SandboxVolume, error)
	// The content API, authenticated by the volume's token.
	VolumeFile(ctx context.Context, token string, req service.VolumeFileRequest) ([]service.VolumeEntry, error)
	ReadVolumeFile(ctx context.Context, volumeID, token, path string) (io.ReadCloser, error)
	WriteVolumeFile(ctx context.Context, volumeID, token, path string, r io.Reader, a service.VolumeAttrs) (service.VolumeEntry, error)
	// SandboxLogLines reads the guest console log through the host agent.
	SandboxLogLines(ctx context.Context, p service.Principal, id string, from, limit int) ([]string, error)
}

var _ Service = (*service.Service)(nil)

// MetricsSource reads a running sandbox's current resource usage.
// EnvdMetrics implements it by asking envd through the sandbox proxy.
type MetricsSource interface {
	SandboxMetrics(ctx context.Context, sb store.Sandbox) (Metric, error)
}

// Metric is one resource-usage sample of a sandbox.
type Metric = sandboxmetrics.Sample

// Deps configure the handler.
type Deps struct {
	Service Service
	// Metrics, when nil, makes the metrics route answer an empty list.
	Metrics MetricsSource
	// Domain is the sandbox domain reported to SDKs (hosts are
	// <port>-<sandboxID>.<Domain>); empty reports none.
	Domain string
	// ClientID is reported as the (deprecated) clientID; default "hearth".
	ClientID string
	Logger   *slog.Logger // nil: discard
	// MaxJSONBytes bounds request bodies (default 1 MiB).
	MaxJSONBytes int64
	Now          func() time.Time
}

// EnvdVersion is what the API reports as envdVersion: the version whose
// features hearth's envd really implements (the SDK gates features on it).
const EnvdVersion = envd.Version

// Paths are the path patterns this handler serves, for composing it with
// the native API, the sandbox proxy and the dashboard on one mux.
func Paths() []string {
	return []string{"/sandboxes", "/sandboxes/", "/v2/sandboxes", "/v2/sandboxes/", "/templates", "/templates/",
		"/v2/templates", "/v2/templates/", "/v3/templates", "/snapshots", "/teams", "/teams/", "/secrets", "/secrets/",
		"/volumes", "/volumes/", "/volumecontent/"}
}

type server struct {
	svc      Service
	tpl      TemplateService
	metrics  MetricsSource
	domain   string
	clientID string
	log      *slog.Logger
	maxJSON  int64
	now      func() time.Time
}

// New returns the E2B-compatible handler. It panics without a Service (a
// wiring bug).
func New(d Deps) http.Handler {
	if d.Service == nil {
		panic("e2bapi.New: nil Service")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.ClientID == "" {
		d.ClientID = "hearth"
	}
	if d.MaxJSONBytes == 0 {
		d.MaxJSONBytes = 1 << 20
	}
	s := &server{
		svc: d.Service, metrics: d.Metrics, domain: d.Domain,
		clientID: d.ClientID, log: d.Logger, maxJSON: d.MaxJSONBytes, now: d.Now,
	}
	mux := http.NewServeMux()
	for _, rt := range s.allRoutes() {
		mux.Handle(rt.pattern, s.endpoint(rt.handle))
	}
	s.contentRoutes(mux)
	// Template routes need a service that builds; uploads get their own
	// body limit.
	if ts, ok := d.Service.(TemplateService); ok {
		s.tpl = ts
		for _, rt := range s.templateRoutes() {
			mux.Handle(rt.pattern, s.endpoint(rt.handle))
		}
		mux.Handle("PUT /templates/{templateID}/files/{hash}", s.endpointLimit(s.uploadFiles, service.MaxBuildFilesBytes))
	}
	// Unknown paths and methods under this handler answer in E2B's error
	// shape, never the mux's plain text.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

type route struct {
	pattern string
	handle  handlerFunc
}

func (s *server) routes() []route {
	return []route{
		{"POST /sandboxes", s.create},
		{"POST /v2/sandboxes", s.create},
		{"GET /sandboxes", s.listV1},
		{"GET /v2/sandboxes", s.listV2},
		{"GET /sandboxes/{id}", s.get},
		{"DELETE /sandboxes/{id}", s.kill},
		{"POST /sandboxes/{id}/timeout", s.setTimeout},
		{"PUT /sandboxes/{id}/network", s.updateNetwork},
		{"POST /sandboxes/{id}/pause", s.pause},
		{"POST /sandboxes/{id}/resume", s.resume},
		{"POST /sandboxes/{id}/connect", s.connect},
		{"POST /v2/sandboxes/{id}/connect", s.connect},
		{"GET /sandboxes/{id}/metrics", s.sandboxMetrics},
		{"GET /templates", s.templates},
	}
}

// allRoutes adds the routes kept in their own files.
func (s *server) allRoutes() []route {
	return slices.Concat(s.routes(), s.snapshotRoutes(), s.usageRoutes(), s.secretRoutes(), s.logRoutes(), s.volumeRoutes())
}

// handlerFunc writes its success response and returns errors for
// respondError to map.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p service.Principal) error

// endpoint authenticates with X-API-KEY and bounds the body.
func (s *server) endpoint(h handlerFunc) http.Handler { return s.endpointLimit(h, s.maxJSON) }

// endpointLimit is endpoint with a body limit of its own.
func (s *server) endpointLimit(h handlerFunc, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !limitBody(w, r, limit) {
			return
		}
		key := r.Header.Get("X-API-Key")
		if key == "" {
			s.respondError(w, r, service.Unauthenticated("missing X-API-KEY header (a hearth team API key)"))
			return
		}
		p, err := s.svc.AuthenticateAPIKey(r.Context(), key)
		if err != nil {
			s.respondError(w, r, err)
			return
		}
		if err := h(w, r, p); err != nil {
			s.respondError(w, r, err)
		}
	})
}

// limitBody bounds r's body to limit bytes, answering 413 (false) when its
// declared length is over.
func limitBody(w http.ResponseWriter, r *http.Request, limit int64) bool {
	if r.ContentLength > limit {
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	return true
}
