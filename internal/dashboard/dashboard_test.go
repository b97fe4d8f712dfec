package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/hearth-sandbox/hearth/internal/proxy"
	"io"
	"io/fs"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/coder/websocket"

	"github.com/hearth-sandbox/hearth/internal/api"
	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/dashboard"
	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/envd/envdtest"
	"github.com/hearth-sandbox/hearth/internal/envdclient"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/service/servicetest"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/web"
)

// envdHost is the test's host: servicetest.FakeHost for the control-plane
// side, plus a real envd server (internal/envd, on loopback) that every
// sandbox's envd address points to. Creating a sandbox sends /init with the
// sandbox's access token, as the agent does, so envd checks the token that
// ServiceBackend reads from the store.
type envdHost struct {
	*servicetest.FakeHost
	url string

	mu    sync.Mutex
	token string // envd's current access token
}

func (h *envdHost) CreateSandbox(ctx context.Context, req service.CreateSandboxRequest) (service.SandboxRuntime, error) {
	rt, err := h.FakeHost.CreateSandbox(ctx, req)
	if err != nil {
		return rt, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c := envdclient.New(h.url, "", nil)
	if err := c.Init(ctx, envdclient.InitRequest{AccessToken: req.AccessToken}, h.token); err != nil {
		return rt, err
	}
	h.token = req.AccessToken
	rt.Address = strings.TrimPrefix(h.url, "http://")
	return rt, nil
}

func (h *envdHost) ListSandboxes(ctx context.Context) ([]service.SandboxRuntime, error) {
	rts, err := h.FakeHost.ListSandboxes(ctx)
	for i := range rts {
		rts[i].Address = strings.TrimPrefix(h.url, "http://")
	}
	return rts, err
}

// startEnvd runs a real envd on a loopback port, as internal/envd's tests do.
func startEnvd(t *testing.T) string {
	t.Helper()
	return envdtest.Start(t, envd.Config{})
}

type fixture struct {
	url  string
	tr   http.RoundTripper // trusts the test server's certificate
	svc  *service.Service
	host *envdHost
}

// hostAddressRoute sends sandbox traffic to the envd address the host
// reports (the test's envd runs on this host, not behind an agent).
func hostAddressRoute(h service.HostClient) proxy.RouteFunc {
	return func(ctx context.Context, sb store.Sandbox, _ store.Host, _ int) (proxy.Target, error) {
		rts, err := h.ListSandboxes(ctx)
		if err != nil {
			return proxy.Target{}, err
		}
		for _, rt := range rts {
			if rt.SandboxID == sb.ID {
				return proxy.Target{URL: &url.URL{Scheme: "http", Host: rt.Address}}, nil
			}
		}
		return proxy.Target{}, proxy.ErrNotFound
	}
}

// newFixture composes what `hearth server` serves: the real API (SQLite in
// t.TempDir) behind WrapAPI on its paths, the dashboard on the rest.
func newFixture(t *testing.T, tls bool, assets fs.FS) fixture {
	t.Helper()
	ctx := context.Background()
	sealer, err := store.NewAESSealer(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(ctx, store.Options{DSN: filepath.Join(t.TempDir(), "hearth.db"), Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.UpsertPlatformTemplate(ctx, store.Template{Name: "base", Kind: sandbox.KindBase, VCPUs: 1, MemoryMB: 512, DiskSizeMB: 2048}); err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens(bytes.Repeat([]byte{9}, 32), "hearth", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	passwords, err := auth.NewPasswords(4) // bcrypt.MinCost: tests, not security
	if err != nil {
		t.Fatal(err)
	}
	host := &envdHost{FakeHost: servicetest.NewFakeHost("h1"), url: startEnvd(t)}
	pool := service.SingleHost{ID: "h1", Client: host}
	svc, err := service.New(service.Deps{Store: db, Hosts: pool, Passwords: passwords, Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	apiH := api.New(api.Deps{Service: svc, AuthBurst: 1000})
	d := dashboard.Deps{
		API: apiH, Terminal: dashboard.ServiceBackend{Service: svc, Proxy: proxy.New(
			&proxy.StoreResolver{Store: db, Route: hostAddressRoute(host)}, proxy.Options{})},
		// envd runs on this host: keep the host's login files (which may
		// run slow tools) out of the test.
		Shell: []string{"/bin/sh"},
	}
	d.Assets = assets // nil: the embedded build
	mux := http.NewServeMux()
	wrapped := dashboard.WrapAPI(apiH)
	for _, p := range api.Paths() {
		mux.Handle(p, wrapped)
	}
	mux.Handle("/", dashboard.New(d))
	var srv *httptest.Server
	if tls {
		srv = httptest.NewTLSServer(mux)
	} else {
		srv = httptest.NewServer(mux)
	}
	t.Cleanup(srv.Close)
	return fixture{url: srv.URL, tr: srv.Client().Transport, svc: svc, host: host}
}

// browser is a cookie-keeping client that behaves like the SPA.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (f fixture) browser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Transport: f.tr}
	return &browser{t: t, base: f.url, c: c}
}

func (b *browser) cookie(name string) *http.Cookie {
	u, _ := url.Parse(b.base)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

type reqOpt func(*http.Request)

func withCSRF(token string) reqOpt {
	return func(r *http.Request) { r.Header.Set(dashboard.CSRFHeader, token) }
}
func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func (b *browser) do(method, path string, body any, opts ...reqOpt) (*http.Response, []byte) {
	b.t.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			b.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.base+path, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp, out
}

func (b *browser) csrf() string {
	c := b.cookie(dashboard.CSRFCookie)
	if c == nil {
		b.t.Fatal("no CSRF cookie")
	}
	return c.Value
}

func (b *browser) signup(email string) {
	b.t.Helper()
	resp, body := b.do(http.MethodPost, "/auth/signup", map[string]string{"email": email, "password": "correct horse"})
	if resp.StatusCode != http.StatusCreated {
		b.t.Fatalf("signup: %d %s", resp.StatusCode, body)
	}
}

func setCookie(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func TestSessionCookies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		tls    bool
		secure bool
	}{
		{"plain HTTP", false, false},
		{"TLS", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.tls, nil)
			b := f.browser(t)
			check := func(resp *http.Response, body []byte) {
				t.Helper()
				sess, csrf := setCookie(resp, dashboard.SessionCookie), setCookie(resp, dashboard.CSRFCookie)
				if sess == nil || csrf == nil {
					t.Fatalf("cookies missing: %v", resp.Header.Values("Set-Cookie"))
				}
				if !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Path != "/" || sess.Secure != tc.secure {
					t.Errorf("session cookie attributes: %+v", sess)
				}
				if csrf.HttpOnly || csrf.SameSite != http.SameSiteStrictMode || csrf.Secure != tc.secure || len(csrf.Value) != 64 {
					t.Errorf("csrf cookie attributes: %+v", csrf)
				}
				if sess.Expires.Before(time.Now().Add(30 * time.Minute)) {
					t.Errorf("session cookie expires %v, want the JWT's expiry (1h)", sess.Expires)
				}
				// The JWT never reaches page scripts.
				if bytes.Contains(body, []byte(sess.Value)) || bytes.Contains(body, []byte(`"token"`)) {
					t.Errorf("response body leaks the token: %s", body)
				}
			}

			resp, body := b.do(http.MethodPost, "/auth/signup", map[string]string{"email": "a@example.com", "password": "correct horse"})
			if resp.StatusCode != http.StatusCreated || !bytes.Contains(body, []byte(`"a@example.com"`)) {
				t.Fatalf("signup: %d %s", resp.StatusCode, body)
			}
			check(resp, body)

			resp, body = b.do(http.MethodPost, "/auth/session", map[string]string{"email": "a@example.com", "password": "correct horse"})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("login: %d %s", resp.StatusCode, body)
			}
			check(resp, body)

			resp, body = b.do(http.MethodGet, "/v1/me", nil)
			if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("a@example.com")) {
				t.Fatalf("GET /v1/me with the cookie: %d %s", resp.StatusCode, body)
			}
		})
	}
}

func TestSessionErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	b := f.browser(t)
	b.signup("a@example.com")
	for _, tc := range []struct {
		name   string
		path   string
		body   string
		ctype  string
		origin string
		want   int
	}{
		{"wrong password: the API's 401", "/auth/session", `{"email":"a@example.com","password":"wrong password"}`, "application/json", "", http.StatusUnauthorized},
		{"unknown email: the API's 401", "/auth/session", `{"email":"b@example.com","password":"correct horse"}`, "application/json", "", http.StatusUnauthorized},
		{"duplicate signup: the API's 409", "/auth/signup", `{"email":"a@example.com","password":"correct horse"}`, "application/json", "", http.StatusConflict},
		{"weak password: the API's 400", "/auth/signup", `{"email":"c@example.com","password":"short"}`, "application/json", "", http.StatusBadRequest},
		{"form post (login CSRF)", "/auth/session", `email=a@example.com&password=correct+horse`, "application/x-www-form-urlencoded", "", http.StatusUnsupportedMediaType},
		{"foreign origin", "/auth/session", `{"email":"a@example.com","password":"correct horse"}`, "application/json", "https://evil.example", http.StatusForbidden},
		{"not JSON", "/auth/session", `{`, "application/json", "", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, f.url+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tc.ctype)
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatalf("error body is not JSON: %v", err)
			}
			if resp.StatusCode != tc.want || e.Code != tc.want || e.Message == "" {
				t.Errorf("status %d body %+v, want %d", resp.StatusCode, e, tc.want)
			}
			if len(resp.Cookies()) != 0 {
				t.Errorf("a failed login set cookies: %v", resp.Cookies())
			}
		})
	}
}

func TestCSRF(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	b := f.browser(t)
	b.signup("a@example.com")
	token := b.csrf()

	for _, tc := range []struct {
		name string
		opts []reqOpt
		want int
	}{
		{"no token", nil, http.StatusForbidden},
		{"wrong token", []reqOpt{withCSRF(strings.Repeat("0", 64))}, http.StatusForbidden},
		{"token prefix", []reqOpt{withCSRF(token[:32])}, http.StatusForbidden},
		{"right token, foreign origin", []reqOpt{withCSRF(token), withHeader("Origin", "https://evil.example")}, http.StatusForbidden},
		{"right token", []reqOpt{withCSRF(token)}, http.StatusCreated},
		{"right token, same origin", []reqOpt{withCSRF(token), withHeader("Origin", f.url)}, http.StatusCreated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := b.do(http.MethodPost, "/v1/api-keys", map[string]string{"name": "k1"}, tc.opts...)
			if resp.StatusCode != tc.want {
				t.Fatalf("POST /v1/api-keys: %d %s, want %d", resp.StatusCode, body, tc.want)
			}
			if tc.want == http.StatusForbidden {
				var e struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				}
				if json.Unmarshal(body, &e) != nil || e.Code != http.StatusForbidden || !strings.Contains(e.Message, "CSRF") {
					t.Errorf("403 body: %s", body)
				}
			}
		})
	}

	t.Run("safe methods need no token", func(t *testing.T) {
		resp, body := b.do(http.MethodGet, "/v1/api-keys", nil)
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"k1"`)) {
			t.Fatalf("GET /v1/api-keys: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("explicit credentials bypass the cookie layer", func(t *testing.T) {
		// An API key in the header is used as is: no CSRF token needed, and
		// a bad key is not rescued by the cookie.
		resp, body := b.do(http.MethodPost, "/v1/sandboxes", map[string]string{"template": "base"}, withHeader("X-API-Key", "e2b_"+strings.Repeat("0", 40)))
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bad API key with a session cookie: %d %s, want 401", resp.StatusCode, body)
		}
	})
	t.Run("no cookie: the API's own 401", func(t *testing.T) {
		resp, err := http.Post(f.url+"/v1/api-keys", "application/json", strings.NewReader(`{"name":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("no cookie: %d, want 401", resp.StatusCode)
		}
	})
	t.Run("logout", func(t *testing.T) {
		resp, _ := b.do(http.MethodDelete, "/auth/session", nil)
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("logout: %d", resp.StatusCode)
		}
		if c := setCookie(resp, dashboard.SessionCookie); c == nil || c.MaxAge >= 0 || !c.HttpOnly {
			t.Fatalf("logout did not expire the session cookie: %v", resp.Header.Values("Set-Cookie"))
		}
		if resp, _ := b.do(http.MethodGet, "/v1/me", nil); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("after logout GET /v1/me: %d, want 401", resp.StatusCode)
		}
	})
}

func TestSPA(t *testing.T) {
	t.Parallel()
	assets := fstest.MapFS{
		"index.html":          {Data: []byte("<!doctype html><title>hearth</title><div id=root></div>")},
		"assets/app-1a2b.js":  {Data: []byte("console.log('app')")},
		"assets/app-1a2b.css": {Data: []byte("body{}")},
		"favicon.svg":         {Data: []byte("<svg xmlns='http://www.w3.org/2000/svg'/>")},
	}
	f := newFixture(t, false, assets)
	// Redirects are checked, not followed.
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		path, method string
		status       int
		ctype, body  string
		cache        string
		location     string // the redirect's target, when status is 3xx
	}{
		// The root sends people to the app.
		{"/", "GET", 302, "", "", "", "/app/"},
		{"/", "HEAD", 302, "", "", "", "/app/"},
		{"/app", "GET", 307, "", "", "", "/app/"},
		{"/app/", "GET", 200, "text/html", "<div id=root>", "no-cache", ""},
		{"/app/sandboxes", "GET", 200, "text/html", "<div id=root>", "no-cache", ""},
		{"/app/sandboxes/abc123", "GET", 200, "text/html", "<div id=root>", "no-cache", ""},
		{"/app/admin/templates", "GET", 200, "text/html", "<div id=root>", "no-cache", ""},
		{"/app/login?next=%2Fkeys", "GET", 200, "text/html", "<div id=root>", "no-cache", ""},
		{"/app/index.html", "GET", 301, "", "", "", "./"},
		{"/app/assets/app-1a2b.js", "GET", 200, "javascript", "console.log", "immutable", ""},
		{"/app/assets/app-1a2b.css", "GET", 200, "text/css", "body{}", "immutable", ""},
		{"/app/favicon.svg", "GET", 200, "image/svg+xml", "<svg", "no-cache", ""},
		{"/app/assets/gone-0000.js", "GET", 404, "", "", "", ""},
		{"/app/robots.txt", "GET", 404, "", "", "", ""},
		{"/app/sandboxes", "POST", 405, "", "", "", ""},
		// Outside /app/ nothing is the app: the root paths that are client
		// routes under /app/ belong to the E2B API in `hearth server`, and
		// assets are not served from the root.
		{"/sandboxes", "GET", 404, "application/json", `"code":404`, "", ""},
		{"/login", "GET", 404, "application/json", `"code":404`, "", ""},
		{"/assets/app-1a2b.js", "GET", 404, "application/json", `"code":404`, "", ""},
		{"/favicon.svg", "GET", 404, "application/json", `"code":404`, "", ""},
		{"/auth/unknown", "GET", 404, "application/json", `"code":404`, "", ""},
		// The API keeps its own paths.
		{"/v1/nope", "GET", 404, "application/json", `"code":404`, "", ""},
		{"/healthz", "GET", 200, "", "", "", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, f.url+tc.path, nil)
			resp, err := noRedirects.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if loc := resp.Header.Get("Location"); loc != tc.location {
				t.Errorf("Location %q, want %q", loc, tc.location)
			}
			if !strings.Contains(resp.Header.Get("Content-Type"), tc.ctype) || !strings.Contains(string(body), tc.body) {
				t.Errorf("content type %q body %q", resp.Header.Get("Content-Type"), body)
			}
			if !strings.Contains(resp.Header.Get("Cache-Control"), tc.cache) {
				t.Errorf("Cache-Control %q, want %q", resp.Header.Get("Cache-Control"), tc.cache)
			}
			if tc.ctype == "text/html" && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
				t.Errorf("index.html without CSP")
			}
		})
	}
}

// A binary built before the front end serves a page saying how to build
// it, wherever in the app one lands.
func TestSPANotBuilt(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, web.NotBuilt())
	for _, p := range []string{"/", "/app/", "/app/sandboxes/abc123"} {
		t.Run(p, func(t *testing.T) {
			resp, err := http.Get(f.url + p) // follows / to /app/
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Dashboard not built") || resp.Request.URL.Path == "/" {
				t.Fatalf("%s: %d at %s: %.200s", p, resp.StatusCode, resp.Request.URL.Path, body)
			}
		})
	}
	resp, err := http.Get(f.url + "/app/assets/index-0000.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("an asset of the missing build: %d, want 404", resp.StatusCode)
	}
}

// createSandbox creates a sandbox through the cookie layer, as the SPA does.
func (b *browser) createSandbox() string {
	b.t.Helper()
	resp, body := b.do(http.MethodPost, "/v1/sandboxes", map[string]any{"template": "base"}, withCSRF(b.csrf()))
	if resp.StatusCode != http.StatusCreated {
		b.t.Fatalf("create sandbox: %d %s", resp.StatusCode, body)
	}
	var sb struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &sb); err != nil || sb.ID == "" {
		b.t.Fatalf("create sandbox: %s", body)
	}
	return sb.ID
}

func (b *browser) dialTerminal(ctx context.Context, id, query, origin string) (*websocket.Conn, *http.Response, error) {
	u := strings.Replace(b.base, "http", "ws", 1) + "/ws/sandboxes/" + id + "/terminal?" + query
	return websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: b.c,
		HTTPHeader: http.Header{"Origin": {origin}},
	})
}

// term reads terminal output and control messages.
type term struct {
	t    *testing.T
	conn *websocket.Conn
	out  strings.Builder
}

// output reads until the terminal output contains want.
func (tm *term) output(ctx context.Context, want string) {
	tm.t.Helper()
	tm.read(ctx, want, func(*term, map[string]any) bool { return strings.Contains(tm.out.String(), want) })
}

// control reads until a control message of type typ arrives and returns it.
func (tm *term) control(ctx context.Context, typ string) map[string]any {
	tm.t.Helper()
	var got map[string]any
	tm.read(ctx, typ+" message", func(_ *term, m map[string]any) bool {
		if m != nil && m["type"] == typ {
			got = m
			return true
		}
		return false
	})
	return got
}

// read feeds output and control messages to done until it says so.
func (tm *term) read(ctx context.Context, what string, done func(*term, map[string]any) bool) {
	tm.t.Helper()
	for {
		typ, data, err := tm.conn.Read(ctx)
		if err != nil {
			tm.t.Fatalf("waiting for %s: %v; output so far: %q", what, err, tm.out.String())
		}
		var m map[string]any
		if typ == websocket.MessageText {
			if err := json.Unmarshal(data, &m); err != nil {
				tm.t.Fatalf("bad control message %q", data)
			}
			if m["type"] == "error" {
				tm.t.Fatalf("terminal error: %v", m["message"])
			}
		} else {
			tm.out.Write(data)
		}
		if done(tm, m) {
			return
		}
	}
}

func (tm *term) send(ctx context.Context, s string) {
	tm.t.Helper()
	if err := tm.conn.Write(ctx, websocket.MessageBinary, []byte(s)); err != nil {
		tm.t.Fatal(err)
	}
}

func testCtx(t *testing.T) context.Context {
	// A safety net against hangs, not a timing assertion.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTerminalBridge(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	b := f.browser(t)
	b.signup("a@example.com")
	id := b.createSandbox()
	ctx := testCtx(t)

	conn, _, err := b.dialTerminal(ctx, id, "cols=90&rows=20&csrf="+b.csrf(), f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	tm := &term{t: t, conn: conn}
	if m := tm.control(ctx, "ready"); m["pid"].(float64) <= 0 {
		t.Fatalf("ready without a pid: %v", m)
	}
	// The command's output differs from its echo, so seeing it proves the
	// shell ran it.
	tm.send(ctx, "printf 'he%sllo\\n' ''\r")
	tm.output(ctx, "hello")
	tm.send(ctx, "stty size\r")
	tm.output(ctx, "20 90")

	resize, _ := json.Marshal(map[string]any{"type": "resize", "cols": 132, "rows": 43})
	if err := conn.Write(ctx, websocket.MessageText, resize); err != nil {
		t.Fatal(err)
	}
	input, _ := json.Marshal(map[string]any{"type": "input", "data": "stty size\r"})
	if err := conn.Write(ctx, websocket.MessageText, input); err != nil {
		t.Fatal(err)
	}
	tm.output(ctx, "43 132")

	tm.send(ctx, "exit 3\r")
	end := tm.control(ctx, "exit")
	if end["exit_code"].(float64) != 3 {
		t.Fatalf("exit message %v, want exit_code 3", end)
	}
	if _, _, err := conn.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after exit: %v, want a normal close", err)
	}
}

// A browser that goes away must not leave its shell running in the sandbox.
func TestTerminalKillsShellOnDisconnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	b := f.browser(t)
	b.signup("a@example.com")
	id := b.createSandbox()
	ctx := testCtx(t)

	marker := filepath.Join(t.TempDir(), "alive")
	conn, _, err := b.dialTerminal(ctx, id, "csrf="+b.csrf(), f.url)
	if err != nil {
		t.Fatal(err)
	}
	tm := &term{t: t, conn: conn}
	tm.control(ctx, "ready")
	// The shell's pid goes to the marker file, then the shell waits.
	tm.send(ctx, "echo $$ > "+marker+"; echo sta''rted\r")
	tm.output(ctx, "started")
	conn.Close(websocket.StatusGoingAway, "tab closed")

	pidBytes, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(pidBytes))
	for { // until the process is gone (the context bounds the wait)
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(st), ") Z ") {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("shell %s still running after the socket closed", pid)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestTerminalRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	owner := f.browser(t)
	owner.signup("a@example.com")
	id := owner.createSandbox()
	other := f.browser(t)
	other.signup("b@example.com")
	anon := f.browser(t)
	ctx := testCtx(t)

	for _, tc := range []struct {
		name   string
		b      *browser
		id     string
		query  string
		origin string
		want   int
	}{
		{"no session", anon, id, "csrf=x", f.url, http.StatusUnauthorized},
		{"no CSRF token", owner, id, "", f.url, http.StatusForbidden},
		{"wrong CSRF token", owner, id, "csrf=" + strings.Repeat("a", 64), f.url, http.StatusForbidden},
		{"foreign origin", owner, id, "csrf=" + owner.csrf(), "https://evil.example", http.StatusForbidden},
		{"another team's sandbox", other, id, "csrf=" + other.csrf(), f.url, http.StatusNotFound},
		{"unknown sandbox", owner, "nosuchsandbox", "csrf=" + owner.csrf(), f.url, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, resp, err := tc.b.dialTerminal(ctx, tc.id, tc.query, tc.origin)
			if err == nil {
				conn.CloseNow()
				t.Fatal("handshake succeeded")
			}
			if resp == nil || resp.StatusCode != tc.want {
				t.Fatalf("handshake: %v (response %v), want HTTP %d", err, resp, tc.want)
			}
		})
	}

	t.Run("paused sandbox", func(t *testing.T) {
		resp, body := owner.do(http.MethodPost, "/v1/sandboxes/"+id+"/pause", nil, withCSRF(owner.csrf()))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("pause: %d %s", resp.StatusCode, body)
		}
		_, hresp, err := owner.dialTerminal(ctx, id, "csrf="+owner.csrf(), f.url)
		if err == nil || hresp == nil || hresp.StatusCode != http.StatusConflict {
			t.Fatalf("terminal on a paused sandbox: %v %v, want 409", err, hresp)
		}
	})
}

func TestListDir(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	b := f.browser(t)
	b.signup("a@example.com")
	id := b.createSandbox()
	// envd runs on this host, so the sandbox's file system is this one.
	dir := t.TempDir()
	for _, p := range []string{"b.txt", "a.txt", "zdir/inner.txt"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte("hello"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	resp, body := b.do(http.MethodGet, "/ui/sandboxes/"+id+"/dir?path="+url.QueryEscape(dir), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	var out struct {
		Path    string `json:"path"`
		Entries []struct {
			Name, Path, Type string
			Size             int64
		} `json:"entries"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range out.Entries {
		got = append(got, e.Type+":"+e.Name)
	}
	if strings.Join(got, ",") != "dir:zdir,file:a.txt,file:b.txt" || out.Entries[1].Size != 5 || out.Entries[1].Path != filepath.Join(dir, "a.txt") {
		t.Fatalf("entries %v (%s)", got, body)
	}

	for _, tc := range []struct {
		name, path string
		b          *browser
		want       int
	}{
		{"missing directory", filepath.Join(dir, "nope"), b, http.StatusNotFound},
		{"relative path", "etc", b, http.StatusBadRequest},
		{"no session", dir, f.browser(t), http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := tc.b.do(http.MethodGet, "/ui/sandboxes/"+id+"/dir?path="+url.QueryEscape(tc.path), nil)
			if resp.StatusCode != tc.want {
				t.Fatalf("%d %s, want %d", resp.StatusCode, body, tc.want)
			}
		})
	}
}
