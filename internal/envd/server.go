// Package envd is the daemon inside every sandbox VM: it serves the E2B envd
// wire protocol (the process and filesystem Connect services plus the REST
// /health, /init, /files, /envs and /metrics routes) on one HTTP listener.
package envd

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	filesystempb "github.com/hearth-sandbox/hearth/gen/envd/filesystem"
	"github.com/hearth-sandbox/hearth/gen/envd/filesystem/filesystemconnect"
	processpb "github.com/hearth-sandbox/hearth/gen/envd/process"
	"github.com/hearth-sandbox/hearth/gen/envd/process/processconnect"
	"github.com/hearth-sandbox/hearth/internal/envd/fssvc"
	"github.com/hearth-sandbox/hearth/internal/envd/procsvc"
	"github.com/hearth-sandbox/hearth/internal/envd/userenv"
	"github.com/hearth-sandbox/hearth/internal/httplimit"
)

// Version is the E2B envd version whose SDK-visible features this daemon
// implements. The E2B SDK (e2b 2.51.0 on npm) gates features on it:
// recursive watch 0.1.4, stdin option 0.3.0, default user
// chosen by envd 0.4.0, closeStdin 0.5.2, octet-stream (and gzip) upload
// 0.5.7, file metadata 0.6.2, watch includeEntry 0.6.3, allowNetworkMounts
// 0.6.4. The control plane reports this constant as envdVersion.
const Version = "0.6.4"

// AccessTokenHeader carries the sandbox's envd access token.
const AccessTokenHeader = "X-Access-Token"

// VersionHeader is set on /health responses so a client can learn the version.
const VersionHeader = "X-Envd-Version"

// Config tunes a Server.
type Config struct {
	Logger *slog.Logger
	// SetClock sets the system clock from /init's timestamp. Nil means the
	// real CLOCK_REALTIME; tests pass a recorder so the host clock stays put.
	SetClock func(time.Time) error
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// InitHash, when set, is the SHA-256 of the one-time boot secret the
	// first /init must carry (X-Access-Token): the host agent put the hash
	// on the guest's kernel command line (see InitHashFromCmdline) and
	// keeps the secret, so neither guest processes nor host users who can
	// read the command line can initialise envd before the agent.
	InitHash []byte
	// Limits bound requests (zero: httplimit.Defaults()): process and
	// watch streams are exempt, file transfers may not stall.
	Limits httplimit.Limits
}

// Server wires the services, the REST routes and access-token checks.
type Server struct {
	log      *slog.Logger
	state    *userenv.State
	proc     *procsvc.Service
	fs       *fssvc.Service
	setClock func(time.Time) error
	now      func() time.Time
	metrics  cpuSampler
	limits   httplimit.Limits

	tokenMu  sync.RWMutex
	token    string
	initHash []byte // nil once spent (or when none was given)
}

// New returns a Server; call Close to stop its processes and watchers.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	state := &userenv.State{}
	s := &Server{
		log:      log,
		state:    state,
		proc:     procsvc.New(state, log),
		fs:       fssvc.New(state, log),
		setClock: cfg.SetClock,
		now:      cfg.Now,
		initHash: cfg.InitHash,
		limits:   cfg.Limits,
	}
	if s.limits == (httplimit.Limits{}) {
		s.limits = httplimit.Defaults()
	}
	if s.setClock == nil {
		s.setClock = setSystemClock
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// Close kills the processes envd started and stops its watchers.
func (s *Server) Close() {
	s.proc.Close()
	s.fs.Close()
}

// Handler returns the HTTP handler for every envd route.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	opts := []connect.HandlerOption{}
	path, h := processconnect.NewProcessHandler(s.proc, opts...)
	mux.Handle(path, h)
	path, h = filesystemconnect.NewFilesystemHandler(s.fs, opts...)
	mux.Handle(path, h)
	mux.HandleFunc("GET /health", s.handleHealth)
	mux.HandleFunc("POST /init", s.handleInit)
	mux.HandleFunc("GET /envs", s.handleEnvs)
	mux.HandleFunc("GET /metrics", s.handleMetrics)
	mux.HandleFunc("GET /files", s.handleDownload)
	mux.HandleFunc("POST /files", s.handleUpload)
	return s.limits.Handler(requestKind(), cors(s.auth(mux)))
}

// requestKind exempts process and watch streams from the per-request
// deadlines (a process may be silent for as long as it likes) and lets
// file transfers last as long as their size needs without stalling.
func requestKind() func(*http.Request) httplimit.Kind {
	streaming := httplimit.StreamingRPCs(
		processpb.File_envd_process_process_proto.Services().ByName("Process"),
		filesystempb.File_envd_filesystem_filesystem_proto.Services().ByName("Filesystem"),
	)
	return func(r *http.Request) httplimit.Kind {
		switch {
		case streaming(r):
			return httplimit.Stream
		case r.URL.Path == "/files":
			return httplimit.Transfer
		}
		return httplimit.Bounded
	}
}

// HTTPServer returns an *http.Server for addr that speaks HTTP/1.1 and
// cleartext HTTP/2 (h2c, for gRPC clients), with the header and idle
// timeouts of its Limits (the Handler bounds each request).
func (s *Server) HTTPServer(addr string) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return s.limits.Apply(&http.Server{Addr: addr, Handler: s.Handler(), Protocols: &protocols})
}

// currentAuth returns the access token and, while no token is set, the
// boot secret's hash.
func (s *Server) currentAuth() (token string, initHash []byte) {
	s.tokenMu.RLock()
	defer s.tokenMu.RUnlock()
	return s.token, s.initHash
}

func tokenEqual(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// auth enforces the access token. /health is open; /init is open only until
// the first token is set (the host agent calls it right after boot), after
// which it needs the current token so a restored snapshot can be re-keyed
// only by whoever knew the old key. /files also accepts E2B signed URLs.
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" || r.Method == http.MethodOptions {
			next.ServeHTTP(w, r)
			return
		}
		want, initHash := s.currentAuth()
		if want == "" {
			if r.URL.Path == "/init" {
				sum := sha256.Sum256([]byte(r.Header.Get(AccessTokenHeader)))
				if initHash != nil && subtle.ConstantTimeCompare(sum[:], initHash) != 1 {
					writeError(w, http.StatusUnauthorized, "envd expects the boot secret in "+AccessTokenHeader+" on its first /init")
					return
				}
				next.ServeHTTP(w, r)
				return
			}
			writeError(w, http.StatusUnauthorized, "envd has no access token yet: call /init first")
			return
		}
		if got := r.Header.Get(AccessTokenHeader); got != "" {
			if tokenEqual(got, want) {
				next.ServeHTTP(w, r)
				return
			}
			writeError(w, http.StatusUnauthorized, "invalid access token")
			return
		}
		if r.URL.Path == "/files" && r.URL.Query().Get("signature") != "" {
			if err := s.checkSignature(r, want); err != nil {
				writeError(w, http.StatusUnauthorized, err.Error())
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		writeError(w, http.StatusUnauthorized, "missing access token ("+AccessTokenHeader+" header)")
	})
}

// cors makes envd usable from browsers (the E2B SDK runs there too).
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", strings.Join([]string{
			"Connect-Protocol-Version", "Connect-Content-Encoding", "Connect-Accept-Encoding",
			"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin", "Content-Encoding",
			"Content-Disposition", "Content-Length", "Location", "Cache-Control", VersionHeader,
		}, ", "))
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS")
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", req)
			} else {
				h.Set("Access-Control-Allow-Headers", "*")
			}
			h.Set("Access-Control-Max-Age", "7200")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func setSystemClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}
