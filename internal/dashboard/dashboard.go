// Package dashboard serves hearth's web dashboard: the embedded single-page
// app (under /app/; GET / redirects there), the browser session (cookies + CSRF), and the two things the REST API
// cannot give a browser: a terminal over WebSocket and a directory listing,
// both bridged to the sandbox's envd.
//
// How a browser is authenticated:
//   - POST /auth/session {email,password} (log in) and POST /auth/signup
//     {email,password} (sign up) call the API's own /v1/auth/login and
//     /v1/auth/signup routes in-process, so validation, rate limits and error
//     bodies are exactly the API's. The JWT they return never reaches the
//     page: it goes into the httpOnly, SameSite=Strict cookie hearth_session
//     (Secure over TLS). A second, readable cookie hearth_csrf holds a random
//     token for double-submit CSRF protection. DELETE /auth/session clears
//     both (the JWT itself stays valid until it expires: tokens are stateless).
//   - WrapAPI sits in front of the API handler: a request without
//     Authorization/X-API-Key but with the session cookie gets
//     "Authorization: Bearer <jwt>" added. Unsafe methods (POST, PUT, PATCH,
//     DELETE) must carry X-CSRF-Token equal to the hearth_csrf cookie, else
//     403. Safe methods need no token (they change nothing, and the
//     SameSite=Strict cookie is not sent cross-site), so a plain link can
//     download a sandbox file.
//   - The API accepts a Bearer JWT on the team routes (sandboxes, templates,
//     snapshots; X-Team-ID picks a team, default the user's own), so the
//     dashboard needs no API key of its own.
//   - GET /ws/sandboxes/{id}/terminal (WebSocket) and GET
//     /ui/sandboxes/{id}/dir?path= authenticate with the cookie; the
//     WebSocket also checks Origin against Host and takes the CSRF token as
//     ?csrf=. Both reach envd through a TerminalBackend.
package dashboard

import (
	"io/fs"
	"log/slog"
	"net/http"

	"github.com/hearth-sandbox/hearth/web"
)

// Deps configure the dashboard.
type Deps struct {
	// API is the REST API handler (api.New), unwrapped. The session
	// endpoints call its /v1/auth/login and /v1/auth/signup. Required.
	API http.Handler
	// Terminal finds a sandbox's envd for the terminal and file browser.
	// nil: those endpoints answer 501.
	Terminal TerminalBackend
	// Assets is the built front end (index.html at the root). nil: the
	// assets embedded in package web.
	Assets fs.FS
	// SecureCookies forces the Secure cookie attribute even on plain HTTP
	// requests (for a TLS-terminating proxy in front). Over TLS it is always
	// set.
	SecureCookies bool
	// Shell is the command a terminal runs. Default: bash -l when the guest
	// has bash, else sh -l.
	Shell  []string
	Logger *slog.Logger // nil: discard
}

type handler struct {
	api      http.Handler
	term     TerminalBackend
	assets   fs.FS
	secure   bool
	shell    []string
	log      *slog.Logger
	mux      *http.ServeMux
	hasIndex bool
}

// Prefix is where the single-page app lives. Not at the root: the
// E2B-compatible API owns /sandboxes, /sandboxes/{id} and /templates there,
// which are also the app's own page paths.
const Prefix = "/app/"

// Paths are the path prefixes the dashboard serves (for composing it with
// the API on one mux). Besides them it answers "/" itself with a redirect
// to Prefix and any other path with a JSON 404, so mounting it at "/" after
// the API's paths covers everything.
func Paths() []string { return []string{Prefix, "/auth/", "/ws/", "/ui/"} }

// New returns the dashboard handler: mount it at "/" after the API's paths.
// It panics without an API handler (a wiring bug).
func New(d Deps) http.Handler {
	if d.API == nil {
		panic("dashboard.New: nil API handler")
	}
	if d.Assets == nil {
		d.Assets, _ = web.Assets()
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if len(d.Shell) == 0 {
		d.Shell = []string{"/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"}
	}
	h := &handler{api: d.API, term: d.Terminal, assets: d.Assets, secure: d.SecureCookies, shell: d.Shell, log: d.Logger}
	_, err := fs.Stat(d.Assets, "index.html")
	h.hasIndex = err == nil

	mux := http.NewServeMux()
	mux.HandleFunc("POST /auth/session", h.login)
	mux.HandleFunc("POST /auth/signup", h.signup)
	mux.HandleFunc("DELETE /auth/session", h.logout)
	mux.HandleFunc("GET /ws/sandboxes/{id}/terminal", h.terminal)
	mux.HandleFunc("GET /ui/sandboxes/{id}/dir", h.listDir)
	mux.HandleFunc("/auth/", notFound)
	mux.HandleFunc("/ws/", notFound)
	mux.HandleFunc("/ui/", notFound)
	mux.HandleFunc(Prefix, h.spa)
	// The root is where people type the server's address: send them to the
	// app. Not permanent, so the app may move again without stale caches.
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix, http.StatusFound)
	})
	mux.HandleFunc("/", notFound)
	h.mux = mux
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "same-origin")
	h.mux.ServeHTTP(w, r)
}

func notFound(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusNotFound, "not found")
}
