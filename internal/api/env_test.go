package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/envd/envdtest"
	"github.com/hearth-sandbox/hearth/internal/proxy"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/sandboxmetrics"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/service/servicetest"
	"github.com/hearth-sandbox/hearth/internal/store"
)

const testHostID = "host-1"

// env is one control plane over a real store and real HTTP, with the fake
// host at the VM boundary.
type env struct {
	tb     testing.TB
	db     *store.DB
	svc    *service.Service
	host   *servicetest.FakeHost
	srv    *httptest.Server
	router routers.Router
	// baseTpl is the platform "base" template every team sees.
	baseTpl store.Template
	// envd is a real envd every sandbox's traffic reaches through the real
	// sandbox proxy (envOpts.envd), for the metrics route.
	envd string
}

type envOpts struct {
	noHosts   bool
	authRate  rate.Limit
	authBurst int
	maxJSON   int64
	hosts     HostAdmin
	envd      bool // serve metrics from a real envd behind the real proxy
}

func loadSpec(tb testing.TB) *openapi3.T {
	tb.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openapiYAML)
	if err != nil {
		tb.Fatalf("load openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		tb.Fatalf("openapi.yaml invalid: %v", err)
	}
	return doc
}

func newEnv(tb testing.TB, db *store.DB, o envOpts) *env {
	tb.Helper()
	ctx := context.Background()
	pw, err := auth.NewPasswords(bcrypt.MinCost)
	if err != nil {
		tb.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	tokens, err := auth.NewTokens(key, "hearth", time.Hour, nil)
	if err != nil {
		tb.Fatal(err)
	}
	host := servicetest.NewFakeHost(testHostID)
	var pool service.HostPool = service.SingleHost{ID: testHostID, Client: host}
	if o.noHosts {
		pool = service.SingleHost{}
	}
	svc, err := service.New(service.Deps{Store: db, Hosts: pool, Passwords: pw, Tokens: tokens, Logger: testLogger(tb), BuildFilesDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	base, err := db.UpsertPlatformTemplate(ctx, store.Template{Name: "base", Kind: sbx.KindBase, VCPUs: 2, MemoryMB: 512})
	if err != nil {
		tb.Fatal(err)
	}
	if o.authRate == 0 {
		o.authRate, o.authBurst = rate.Inf, 1
	}
	var envdURL string
	var metrics sandboxmetrics.Source
	if o.envd {
		envdURL = envdtest.Start(tb, envd.Config{})
		metrics = sandboxmetrics.Reader{Proxy: proxy.New(staticResolver{envdURL}, proxy.Options{})}
	}
	h := New(Deps{Service: svc, Logger: testLogger(tb), AuthRate: o.authRate, AuthBurst: o.authBurst, MaxJSONBytes: o.maxJSON, MaxUploadBytes: 1 << 20, Hosts: o.hosts, Metrics: metrics})
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	doc := loadSpec(tb)
	doc.Servers = openapi3.Servers{{URL: srv.URL}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		tb.Fatal(err)
	}
	return &env{tb: tb, db: db, svc: svc, host: host, srv: srv, router: router, baseTpl: base, envd: envdURL}
}

// resp is a response with its body read.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		tb.Fatalf("decode %s: %v", r.body, err)
	}
}

// hdr builds header lists: hdr("X-API-Key", k, "X-Team-ID", t).
type hdr []string

func bearer(tok string) hdr { return hdr{"Authorization", "Bearer " + tok} }
func apiKey(k string) hdr   { return hdr{"X-API-Key", k} }

// do sends a request. body: nil, []byte/string (sent raw) or a value sent
// as JSON. Every response is checked: errors must be {code,message} with
// code = status, and responses of routes in the spec must match it.
func (e *env) do(method, path string, body any, h hdr) resp {
	e.tb.Helper()
	var rd io.Reader
	ctype := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
		ctype = "application/octet-stream"
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.tb.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.tb.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.tb.Fatal(err)
	}
	out := resp{status: res.StatusCode, header: res.Header, body: b}
	if res.StatusCode >= 400 {
		var eb apiwire.Error
		if err := json.Unmarshal(b, &eb); err != nil || eb.Code != res.StatusCode || eb.Message == "" {
			e.tb.Errorf("%s %s: error body %q is not {code:%d, message}", method, path, b, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			e.tb.Errorf("%s %s: error content type %q", method, path, ct)
		}
	}
	e.checkSpec(req, out)
	return out
}

// checkSpec validates a response against openapi.yaml (status documented,
// body matches its schema).
func (e *env) checkSpec(req *http.Request, r resp) {
	e.tb.Helper()
	if !strings.HasPrefix(req.URL.Path, "/v1/") && req.URL.Path != "/healthz" {
		return
	}
	route, params, err := e.router.FindRoute(req)
	if err != nil {
		if r.status != http.StatusNotFound && r.status != http.StatusMethodNotAllowed {
			e.tb.Errorf("%s %s answered %d but is not in the spec: %v", req.Method, req.URL.Path, r.status, err)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status: r.status,
		Header: r.header,
		Body:   io.NopCloser(bytes.NewReader(r.body)),
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true,
			AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		e.tb.Errorf("%s %s → %d does not match the spec: %v\nbody: %.300s", req.Method, req.URL.Path, r.status, err, r.body)
	}
}

func (e *env) want(r resp, status int, what string) {
	e.tb.Helper()
	if r.status != status {
		e.tb.Fatalf("%s: status %d, want %d; body %s", what, r.status, status, r.body)
	}
}

// account is a signed-up user with an API key.
type account struct {
	email, token, userID, teamID, key, keyID string
}

func (e *env) signup(email string) account {
	e.tb.Helper()
	r := e.do("POST", "/v1/auth/signup", map[string]string{"email": email, "password": "password123"}, nil)
	e.want(r, http.StatusCreated, "signup "+email)
	var s struct {
		Token string
		User  struct{ ID, Email string }
		Team  struct{ ID, Name string }
	}
	r.json(e.tb, &s)
	a := account{email: email, token: s.Token, userID: s.User.ID, teamID: s.Team.ID}
	r = e.do("POST", "/v1/api-keys", map[string]string{"name": "ci"}, bearer(a.token))
	e.want(r, http.StatusCreated, "create api key")
	var k struct{ ID, Key string }
	r.json(e.tb, &k)
	a.key, a.keyID = k.Key, k.ID
	return a
}

// sandbox is the wire form, decoded.
type sandbox = apiwire.Sandbox

func (e *env) createSandbox(a account, req map[string]any) sandbox {
	e.tb.Helper()
	if req == nil {
		req = map[string]any{}
	}
	if _, ok := req["template"]; !ok {
		req["template"] = "base"
	}
	r := e.do("POST", "/v1/sandboxes", req, apiKey(a.key))
	e.want(r, http.StatusCreated, "create sandbox")
	var sb sandbox
	r.json(e.tb, &sb)
	return sb
}
