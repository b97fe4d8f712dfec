package e2bapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"golang.org/x/crypto/bcrypt"

	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/e2bapi"
	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/envd/envdtest"
	"github.com/hearth-sandbox/hearth/internal/proxy"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/service/servicetest"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

const (
	hostID     = "host-1"
	testDomain = "sandbox.test"
)

// e2bSpecPath is E2B's OpenAPI contract, kept outside the repo (Apache-2.0
// third-party spec); responses are validated against it when present.
const e2bSpecPath = "../../../shared/specs/e2b/openapi.yml"

// noPauseHost is a host whose agent cannot pause, answering as the real
// agent client does (Unimplemented from the agent's RPC).
type noPauseHost struct{ *servicetest.FakeHost }

func (noPauseHost) PauseSandbox(context.Context, string) error {
	cause := connect.NewError(connect.CodeUnimplemented, errors.New("pause: not implemented on this host"))
	return &service.Error{Kind: service.KindUnimplemented, Message: "host agent: pause: not implemented", Err: cause}
}

type env struct {
	t      *testing.T
	db     *store.DB
	svc    *service.Service
	host   *servicetest.FakeHost
	url    string
	key    string // team A's API key
	keyB   string // team B's
	router routers.Router
	envd   string // a real envd the metrics route reaches through the proxy
}

func newEnv(t *testing.T, db *store.DB, hc service.HostClient) *env {
	t.Helper()
	ctx := context.Background()
	pw, err := auth.NewPasswords(bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	jwtKey := make([]byte, 32)
	rand.Read(jwtKey)
	tokens, err := auth.NewTokens(jwtKey, "hearth", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	fake := servicetest.NewFakeHost(hostID)
	if hc == nil {
		hc = fake
	}
	log := slog.New(slog.DiscardHandler)
	svc, err := service.New(service.Deps{Store: db, Hosts: service.SingleHost{ID: hostID, Client: hc}, Passwords: pw, Tokens: tokens, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpsertPlatformTemplate(ctx, store.Template{Name: "base", Kind: sandbox.KindBase, VCPUs: 2, MemoryMB: 512}); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, svc: svc, host: fake}
	e.key = e.teamKey("a@example.com")
	e.keyB = e.teamKey("b@example.com")

	// Every sandbox's envd traffic goes to one real envd.
	e.envd = startEnvd(t)
	px := proxy.New(staticResolver{e.envd}, proxy.Options{})
	h := e2bapi.New(e2bapi.Deps{Service: svc, Domain: testDomain, Metrics: e2bapi.EnvdMetrics{Proxy: px}, Logger: log})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	e.url = srv.URL
	e.router = loadE2BSpec(t, srv.URL)
	return e
}

func (e *env) teamKey(email string) string {
	e.t.Helper()
	ctx := context.Background()
	res, err := e.svc.Signup(ctx, email, "password123")
	if err != nil {
		e.t.Fatal(err)
	}
	_, key, err := e.svc.CreateAPIKey(ctx, service.Principal{UserID: res.User.ID, TeamID: res.Team.ID}, "k")
	if err != nil {
		e.t.Fatal(err)
	}
	return key
}

type staticResolver struct{ base string }

func (r staticResolver) Resolve(context.Context, string, int) (proxy.Target, error) {
	u, err := url.Parse(r.base)
	return proxy.Target{URL: u}, err
}
func (staticResolver) AutoResume(context.Context, string) (bool, error) { return false, nil }

func startEnvd(t *testing.T) string {
	t.Helper()
	return envdtest.Start(t, envd.Config{})
}

func loadE2BSpec(t *testing.T, serverURL string) routers.Router {
	t.Helper()
	if _, err := os.Stat(e2bSpecPath); err != nil {
		t.Logf("E2B OpenAPI spec not found at %s: responses are not validated against it", e2bSpecPath)
		return nil
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(e2bSpecPath)
	if err != nil {
		t.Fatalf("load E2B spec: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: serverURL}}
	r, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatalf("E2B spec router: %v", err)
	}
	return r
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// do sends a request with key as X-API-KEY (none when empty). Every error
// must be {code, message} with code = status, and responses of routes in
// E2B's spec must match it.
func (e *env) do(method, path, key string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("X-API-KEY", key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	out := resp{status: res.StatusCode, header: res.Header, body: b}
	if res.StatusCode >= 400 {
		var eb struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(b, &eb); err != nil || eb.Code != res.StatusCode || eb.Message == "" {
			e.t.Errorf("%s %s: error body %q is not {code:%d, message}", method, path, b, res.StatusCode)
		}
	}
	e.checkSpec(req, out)
	return out
}

func (e *env) checkSpec(req *http.Request, r resp) {
	e.t.Helper()
	if e.router == nil || r.status >= 400 {
		return // error statuses are checked for shape above
	}
	route, params, err := e.router.FindRoute(req)
	if err != nil {
		return // /v2/sandboxes/{id}/connect is called by the SDK but not in the spec
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status: r.status, Header: r.header, Body: io.NopCloser(bytes.NewReader(r.body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		e.t.Errorf("%s %s: response %d does not match E2B's spec: %v\n%s", req.Method, req.URL.Path, r.status, err, r.body)
	}
}

type created struct {
	SandboxID       string  `json:"sandboxID"`
	TemplateID      string  `json:"templateID"`
	Alias           string  `json:"alias"`
	ClientID        string  `json:"clientID"`
	EnvdVersion     string  `json:"envdVersion"`
	EnvdAccessToken string  `json:"envdAccessToken"`
	Domain          *string `json:"domain"`
}

// sdkCreate is the body the JS SDK 2.51 sends for
// Sandbox.create('base', {metadata, envs, timeoutMs}).
func sdkCreate(md map[string]string) map[string]any {
	return map[string]any{"templateID": "base", "metadata": md, "envVars": map[string]string{"A": "1"}, "timeout": 300}
}

func (e *env) create(key string, body map[string]any) created {
	e.t.Helper()
	r := e.do(http.MethodPost, "/v2/sandboxes", key, body)
	if r.status != http.StatusCreated {
		e.t.Fatalf("create: %d %s", r.status, r.body)
	}
	var c created
	r.json(e.t, &c)
	return c
}

func TestCreate(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		for _, path := range []string{"/v2/sandboxes", "/sandboxes"} {
			r := e.do(http.MethodPost, path, e.key, map[string]any{
				"templateID": "base", "timeout": 120, "metadata": map[string]string{"user": "u1"},
				"envVars": map[string]string{"FOO": "bar"}, "allow_internet_access": false,
				"autoPause": true, "autoResume": map[string]bool{"enabled": true},
				"secure": true, "mcp": nil, "network": nil, // sent empty by the SDK
			})
			if r.status != http.StatusCreated {
				t.Fatalf("%s: %d %s", path, r.status, r.body)
			}
			var c created
			r.json(t, &c)
			if c.SandboxID == "" || c.TemplateID == "" || c.Alias != "base" || c.ClientID == "" ||
				c.EnvdVersion != envd.Version || c.EnvdAccessToken == "" || c.Domain == nil || *c.Domain != testDomain {
				t.Fatalf("%s: response %s", path, r.body)
			}
			sb, err := db.GetSandboxByID(context.Background(), c.SandboxID)
			if err != nil {
				t.Fatal(err)
			}
			if sb.TimeoutS != 120 || sb.Env["FOO"] != "bar" || sb.Metadata["user"] != "u1" || sb.AllowInternet ||
				!sb.AutoPause || !sb.AutoResume || sb.Status != sandbox.StateRunning || sb.AccessToken != c.EnvdAccessToken {
				t.Fatalf("%s: stored %+v", path, sb)
			}
		}
		creates := e.host.Creates()
		if len(creates) != 2 || creates[0].Env["FOO"] != "bar" || creates[0].Egress.AllowInternet || creates[0].TimeoutS != 120 {
			t.Fatalf("host saw %+v", creates)
		}
	})
}

func TestCreateErrors(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		for _, tc := range []struct {
			name   string
			key    string
			body   any
			status int
			msg    string
		}{
			{"no key", "", sdkCreate(nil), http.StatusUnauthorized, "X-API-KEY"},
			{"wrong key", "e2b_" + strings.Repeat("0", 40), sdkCreate(nil), http.StatusUnauthorized, "invalid API key"},
			{"malformed key", "nope", sdkCreate(nil), http.StatusUnauthorized, "invalid API key"},
			{"unknown template", e.key, map[string]any{"templateID": "nosuch"}, http.StatusNotFound, "template"},
			{"no template", e.key, map[string]any{"timeout": 10}, http.StatusBadRequest, "templateID"},
			{"timeout too long", e.key, map[string]any{"templateID": "base", "timeout": 10_000_000}, http.StatusBadRequest, "timeout:"},
			{"bad type", e.key, map[string]any{"templateID": "base", "timeout": "soon"}, http.StatusBadRequest, "timeout"},
			{"domain rule", e.key, map[string]any{"templateID": "base", "network": map[string]any{"allowOut": []string{"example.com"}}}, http.StatusBadRequest, `allowOut: rule \"example.com\": domain names`},
			{"malformed rule", e.key, map[string]any{"templateID": "base", "network": map[string]any{"denyOut": []string{"10.0.0.1/8"}}}, http.StatusBadRequest, `denyOut: rule \"10.0.0.1/8\"`},
			{"egress proxy", e.key, map[string]any{"templateID": "base", "network": map[string]any{"egressProxy": map[string]string{"address": "p:1080"}}}, http.StatusBadRequest, "network.egressProxy"},
			{"volume path", e.key, map[string]any{"templateID": "base", "volumeMounts": []any{map[string]string{"name": "v", "path": "v"}}}, http.StatusBadRequest, `volumeMounts: mount path \"v\"`},
			{"unknown volume", e.key, map[string]any{"templateID": "base", "volumeMounts": []any{map[string]string{"name": "v", "path": "/v"}}}, http.StatusNotFound, `volume \"v\" not found`},
			{"mcp", e.key, map[string]any{"templateID": "base", "mcp": map[string]any{"x": 1}}, http.StatusBadRequest, "mcp"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do(http.MethodPost, "/v2/sandboxes", tc.key, tc.body)
				if r.status != tc.status || !strings.Contains(string(r.body), tc.msg) {
					t.Fatalf("got %d %s, want %d mentioning %q", r.status, r.body, tc.status, tc.msg)
				}
			})
		}
	})
}

type detail struct {
	SandboxID           string            `json:"sandboxID"`
	TemplateID          string            `json:"templateID"`
	Alias               string            `json:"alias"`
	State               string            `json:"state"`
	Metadata            map[string]string `json:"metadata"`
	StartedAt           time.Time         `json:"startedAt"`
	EndAt               time.Time         `json:"endAt"`
	CPUCount            int               `json:"cpuCount"`
	MemoryMB            int               `json:"memoryMB"`
	DiskSizeMB          int               `json:"diskSizeMB"`
	EnvdVersion         string            `json:"envdVersion"`
	EnvdAccessToken     string            `json:"envdAccessToken"`
	AllowInternetAccess *bool             `json:"allowInternetAccess"`
	Domain              string            `json:"domain"`
	Lifecycle           struct {
		AutoResume bool   `json:"autoResume"`
		OnTimeout  string `json:"onTimeout"`
	} `json:"lifecycle"`
}

func TestLifecycle(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		c := e.create(e.key, sdkCreate(map[string]string{"k": "v"}))
		path := "/sandboxes/" + c.SandboxID

		var d detail
		r := e.do(http.MethodGet, path, e.key, nil)
		if r.status != http.StatusOK {
			t.Fatalf("get: %d %s", r.status, r.body)
		}
		r.json(t, &d)
		if d.SandboxID != c.SandboxID || d.State != "running" || d.Alias != "base" || d.Metadata["k"] != "v" ||
			d.CPUCount != 2 || d.MemoryMB != 512 || d.DiskSizeMB != sandbox.DefaultDiskSizeMB || d.EnvdVersion != envd.Version ||
			d.EnvdAccessToken != c.EnvdAccessToken || d.AllowInternetAccess == nil || !*d.AllowInternetAccess ||
			d.Domain != testDomain || d.Lifecycle.OnTimeout != "kill" || !d.EndAt.After(d.StartedAt) {
			t.Fatalf("detail %s", r.body)
		}
		// Team B sees nothing of team A's sandbox.
		for _, rq := range []struct{ method, path string }{
			{http.MethodGet, path}, {http.MethodDelete, path}, {http.MethodPost, path + "/pause"},
			{http.MethodPost, path + "/connect"}, {http.MethodPost, path + "/timeout"}, {http.MethodGet, path + "/metrics"},
		} {
			if r := e.do(rq.method, rq.path, e.keyB, map[string]int{"timeout": 10}); r.status != http.StatusNotFound {
				t.Fatalf("team B %s %s: %d, want 404", rq.method, rq.path, r.status)
			}
		}

		// setTimeout moves endAt to now+timeout.
		before := time.Now()
		if r := e.do(http.MethodPost, path+"/timeout", e.key, map[string]int{"timeout": 3600}); r.status != http.StatusNoContent {
			t.Fatalf("timeout: %d %s", r.status, r.body)
		}
		e.do(http.MethodGet, path, e.key, nil).json(t, &d)
		if d.EndAt.Before(before.Add(3599*time.Second)) || d.EndAt.After(time.Now().Add(3601*time.Second)) {
			t.Fatalf("endAt %v after timeout 3600 set at %v", d.EndAt, before)
		}

		// connect on a running sandbox: 200, the same token, TTL not shortened.
		r = e.do(http.MethodPost, "/v2"+path+"/connect", e.key, map[string]int{"timeout": 60})
		var cc created
		r.json(t, &cc)
		if r.status != http.StatusOK || cc.SandboxID != c.SandboxID || cc.EnvdAccessToken != c.EnvdAccessToken {
			t.Fatalf("connect running: %d %s", r.status, r.body)
		}
		endBefore := d.EndAt
		e.do(http.MethodGet, path, e.key, nil).json(t, &d)
		if d.EndAt.Before(endBefore) {
			t.Fatalf("connect shortened the TTL: %v -> %v", endBefore, d.EndAt)
		}

		// pause: 204, then 409 (the SDK's "already paused").
		if r := e.do(http.MethodPost, path+"/pause", e.key, map[string]any{}); r.status != http.StatusNoContent {
			t.Fatalf("pause: %d %s", r.status, r.body)
		}
		if r := e.do(http.MethodPost, path+"/pause", e.key, nil); r.status != http.StatusConflict {
			t.Fatalf("pause again: %d %s, want 409", r.status, r.body)
		}
		e.do(http.MethodGet, path, e.key, nil).json(t, &d)
		if d.State != "paused" || e.host.State(c.SandboxID) != "paused" {
			t.Fatalf("after pause: state %s, host %s", d.State, e.host.State(c.SandboxID))
		}
		// connect resumes: 201, then 200.
		for i, want := range []int{http.StatusCreated, http.StatusOK} {
			r := e.do(http.MethodPost, path+"/connect", e.key, map[string]int{"timeout": 300})
			r.json(t, &cc)
			if r.status != want || cc.EnvdAccessToken != c.EnvdAccessToken || cc.EnvdVersion != envd.Version {
				t.Fatalf("connect #%d: %d %s, want %d", i, r.status, r.body, want)
			}
		}
		if e.host.State(c.SandboxID) != "running" {
			t.Fatalf("host state %s after connect", e.host.State(c.SandboxID))
		}
		// Legacy resume: 409 while running; 201 after a pause.
		if r := e.do(http.MethodPost, path+"/resume", e.key, map[string]int{"timeout": 60}); r.status != http.StatusConflict {
			t.Fatalf("resume running: %d", r.status)
		}
		e.do(http.MethodPost, path+"/pause", e.key, nil)
		if r := e.do(http.MethodPost, path+"/resume", e.key, map[string]int{"timeout": 60}); r.status != http.StatusCreated {
			t.Fatalf("legacy resume: %d %s", r.status, r.body)
		}

		// kill: 204, then every route says 404 (the SDK's NotFoundError, and
		// kill() returns false).
		if r := e.do(http.MethodDelete, path, e.key, nil); r.status != http.StatusNoContent {
			t.Fatalf("kill: %d %s", r.status, r.body)
		}
		for _, rq := range []struct{ method, path string }{
			{http.MethodGet, path}, {http.MethodDelete, path}, {http.MethodPost, path + "/timeout"},
			{http.MethodPost, path + "/pause"}, {http.MethodPost, "/v2" + path + "/connect"}, {http.MethodGet, path + "/metrics"},
		} {
			if r := e.do(rq.method, rq.path, e.key, map[string]int{"timeout": 10}); r.status != http.StatusNotFound {
				t.Fatalf("after kill %s %s: %d, want 404", rq.method, rq.path, r.status)
			}
		}
		if e.host.State(c.SandboxID) != "" {
			t.Fatal("sandbox still on the host after kill")
		}
	})
}

type listed struct {
	SandboxID string            `json:"sandboxID"`
	State     string            `json:"state"`
	Metadata  map[string]string `json:"metadata"`
	Alias     string            `json:"alias"`
}

// sdkMetadataQuery encodes a metadata filter exactly as the JS SDK does:
// each key and value URL-encoded, joined as a query string, then sent as
// the value of the metadata parameter (encoded once more).
func sdkMetadataQuery(md map[string]string) string {
	pairs := url.Values{}
	for k, v := range md {
		pairs.Set(url.QueryEscape(k), url.QueryEscape(v))
	}
	return url.Values{"metadata": {pairs.Encode()}}.Encode()
}

func TestList(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		var ids []string
		for i := range 5 {
			md := map[string]string{"suite": "list", "odd key&=": "v/" + string(rune('0'+i%2))}
			ids = append(ids, e.create(e.key, sdkCreate(md)).SandboxID)
		}
		e.create(e.keyB, sdkCreate(map[string]string{"suite": "list"})) // another team's
		e.do(http.MethodPost, "/sandboxes/"+ids[4]+"/pause", e.key, nil)

		get := func(path string) ([]listed, http.Header) {
			t.Helper()
			r := e.do(http.MethodGet, path, e.key, nil)
			if r.status != http.StatusOK {
				t.Fatalf("%s: %d %s", path, r.status, r.body)
			}
			var out []listed
			r.json(t, &out)
			return out, r.header
		}
		idsOf := func(ls []listed) []string {
			out := []string{}
			for _, l := range ls {
				out = append(out, l.SandboxID)
			}
			return out
		}

		all, _ := get("/v2/sandboxes")
		if !slices.Equal(idsOf(all), ids) {
			t.Fatalf("list: %v, want %v", idsOf(all), ids)
		}
		if all[4].State != "paused" || all[0].State != "running" || all[0].Alias != "base" {
			t.Fatalf("states/alias: %+v", all)
		}
		odd, _ := get("/v2/sandboxes?" + sdkMetadataQuery(map[string]string{"odd key&=": "v/1", "suite": "list"}))
		if !slices.Equal(idsOf(odd), []string{ids[1], ids[3]}) {
			t.Fatalf("metadata filter: %v, want %v", idsOf(odd), []string{ids[1], ids[3]})
		}
		if none, _ := get("/v2/sandboxes?" + sdkMetadataQuery(map[string]string{"suite": "other"})); len(none) != 0 {
			t.Fatalf("metadata filter matched %v", idsOf(none))
		}
		paused, _ := get("/v2/sandboxes?state=paused")
		running, _ := get("/v2/sandboxes?state=running")
		both, _ := get("/v2/sandboxes?state=running,paused")
		if !slices.Equal(idsOf(paused), ids[4:]) || !slices.Equal(idsOf(running), ids[:4]) || len(both) != 5 {
			t.Fatalf("state filters: paused %v running %v both %d", idsOf(paused), idsOf(running), len(both))
		}
		if v1, _ := get("/sandboxes"); !slices.Equal(idsOf(v1), ids[:4]) {
			t.Fatalf("legacy list (running only): %v", idsOf(v1))
		}

		// Paging: limit 2 walks all five in order, X-Next-Token on all but
		// the last page.
		var walked []string
		next, pages := "", 0
		for {
			q := url.Values{"limit": {"2"}}
			if next != "" {
				q.Set("nextToken", next)
			}
			page, hdr := get("/v2/sandboxes?" + q.Encode())
			pages++
			walked = append(walked, idsOf(page)...)
			if next = hdr.Get("X-Next-Token"); next == "" {
				break
			}
			if pages > 5 {
				t.Fatal("paging does not end")
			}
		}
		if !slices.Equal(walked, ids) || pages != 3 {
			t.Fatalf("paged %v in %d pages, want %v in 3", walked, pages, ids)
		}
		for _, bad := range []string{"limit=0", "limit=101", "limit=x", "state=stopped", "order=sideways", "startedAfter=yesterday"} {
			if r := e.do(http.MethodGet, "/v2/sandboxes?"+bad, e.key, nil); r.status != http.StatusBadRequest {
				t.Fatalf("%s: %d, want 400", bad, r.status)
			}
		}
	})
}

func TestMetricsFromEnvd(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		c := e.create(e.key, sdkCreate(nil))
		// The shared test envd takes this sandbox's token, as the agent's
		// /init does at boot.
		resp, err := http.Post(e.envd+"/init", "application/json", strings.NewReader(`{"accessToken":"`+c.EnvdAccessToken+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("envd /init: %d", resp.StatusCode)
		}
		r := e.do(http.MethodGet, "/sandboxes/"+c.SandboxID+"/metrics", e.key, nil)
		var ms []struct {
			TimestampUnix int64   `json:"timestampUnix"`
			CPUCount      int     `json:"cpuCount"`
			CPUUsedPct    float64 `json:"cpuUsedPct"`
			MemTotal      int64   `json:"memTotal"`
			MemUsed       int64   `json:"memUsed"`
			DiskTotal     int64   `json:"diskTotal"`
		}
		r.json(t, &ms)
		if r.status != http.StatusOK || len(ms) != 1 || ms[0].CPUCount < 1 || ms[0].MemTotal <= 0 || ms[0].DiskTotal <= 0 || ms[0].TimestampUnix == 0 {
			t.Fatalf("metrics: %d %s", r.status, r.body)
		}
		// A paused sandbox has no current sample.
		e.do(http.MethodPost, "/sandboxes/"+c.SandboxID+"/pause", e.key, nil)
		r = e.do(http.MethodGet, "/sandboxes/"+c.SandboxID+"/metrics", e.key, nil)
		if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != "[]" {
			t.Fatalf("paused metrics: %d %s", r.status, r.body)
		}
	})
}

func TestTemplates(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		r := e.do(http.MethodGet, "/templates", e.key, nil)
		var ts []struct {
			TemplateID  string   `json:"templateID"`
			Names       []string `json:"names"`
			Public      bool     `json:"public"`
			CPUCount    int      `json:"cpuCount"`
			EnvdVersion string   `json:"envdVersion"`
			BuildStatus string   `json:"buildStatus"`
		}
		r.json(t, &ts)
		if r.status != http.StatusOK || len(ts) != 1 || ts[0].Names[0] != "base" || !ts[0].Public ||
			ts[0].CPUCount != 2 || ts[0].EnvdVersion != envd.Version || ts[0].BuildStatus != "ready" {
			t.Fatalf("templates: %d %s", r.status, r.body)
		}
		// Creating by template ID works as by name.
		if c := e.create(e.key, map[string]any{"templateID": ts[0].TemplateID}); c.TemplateID != ts[0].TemplateID || c.Alias != "" {
			t.Fatalf("create by id: %+v", c)
		}
	})
}

// TestPauseNotImplemented: a host that cannot pause answers 501, which the
// conformance suite reads as "skip pause/resume" rather than a failure.
func TestPauseNotImplemented(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		fake := servicetest.NewFakeHost(hostID)
		e := newEnv(t, db, noPauseHost{fake})
		c := e.create(e.key, sdkCreate(nil))
		r := e.do(http.MethodPost, "/sandboxes/"+c.SandboxID+"/pause", e.key, nil)
		if r.status != http.StatusNotImplemented {
			t.Fatalf("pause: %d %s, want 501", r.status, r.body)
		}
		// The host never touched the VM: the sandbox still runs.
		var d detail
		if r := e.do(http.MethodGet, "/sandboxes/"+c.SandboxID, e.key, nil); r.status != http.StatusOK {
			t.Fatalf("get after 501: %d %s", r.status, r.body)
		} else if r.json(t, &d); d.State != "running" {
			t.Fatalf("state after an unimplemented pause: %s, want running", d.State)
		}
	})
}

func TestUnknownRoute(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		if r := e.do(http.MethodPost, "/sandboxes/x/nosuchroute", e.key, nil); r.status != http.StatusNotFound {
			t.Fatalf("unknown route: %d", r.status)
		}
	})
}

func TestNetwork(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		c := e.create(e.key, map[string]any{"templateID": "base", "network": map[string]any{
			"allowOut": []string{"1.1.1.1"}, "denyOut": []string{"0.0.0.0/0"}, "allowPublicTraffic": true,
		}})
		info := func() (d struct {
			AllowInternetAccess *bool `json:"allowInternetAccess"`
			Network             *struct {
				AllowOut []string `json:"allowOut"`
				DenyOut  []string `json:"denyOut"`
			} `json:"network"`
		}) {
			t.Helper()
			r := e.do(http.MethodGet, "/sandboxes/"+c.SandboxID, e.key, nil)
			if r.status != http.StatusOK {
				t.Fatalf("get: %d %s", r.status, r.body)
			}
			r.json(t, &d)
			return d
		}
		d := info()
		if d.Network == nil || !slices.Equal(d.Network.AllowOut, []string{"1.1.1.1/32"}) || !slices.Equal(d.Network.DenyOut, []string{"0.0.0.0/0"}) {
			t.Fatalf("getInfo network = %+v", d.Network)
		}
		if got := e.host.Creates()[0].Egress; !reflect.DeepEqual(got, egress.Policy{AllowInternet: true, AllowOut: []string{"1.1.1.1/32"}, DenyOut: []string{"0.0.0.0/0"}}) {
			t.Fatalf("host got %+v", got)
		}

		// updateNetwork as the SDK sends it: applied on the host at once.
		r := e.do(http.MethodPut, "/sandboxes/"+c.SandboxID+"/network", e.key, map[string]any{"denyOut": []string{"8.8.8.0/24"}, "allow_internet_access": false})
		if r.status != http.StatusNoContent {
			t.Fatalf("update: %d %s", r.status, r.body)
		}
		if got, want := e.host.Network(c.SandboxID), (egress.Policy{DenyOut: []string{"8.8.8.0/24"}}); !reflect.DeepEqual(got, want) {
			t.Fatalf("host policy %+v, want %+v", got, want)
		}
		d = info()
		if d.AllowInternetAccess == nil || *d.AllowInternetAccess || d.Network == nil || d.Network.AllowOut != nil || !slices.Equal(d.Network.DenyOut, []string{"8.8.8.0/24"}) {
			t.Fatalf("getInfo after update = %+v %+v", d.AllowInternetAccess, d.Network)
		}
		// An empty body clears everything back to the default.
		if r := e.do(http.MethodPut, "/sandboxes/"+c.SandboxID+"/network", e.key, map[string]any{}); r.status != http.StatusNoContent {
			t.Fatalf("clear: %d %s", r.status, r.body)
		}
		if d := info(); d.Network != nil || !*d.AllowInternetAccess {
			t.Fatalf("getInfo after clear = %+v", d)
		}

		for _, tc := range []struct {
			name, id string
			body     any
			status   int
			msg      string
		}{
			{"malformed", c.SandboxID, map[string]any{"allowOut": []string{"1.2.3"}}, http.StatusBadRequest, `allowOut: rule \"1.2.3\"`},
			{"domain", c.SandboxID, map[string]any{"allowOut": []string{"*.example.com"}}, http.StatusBadRequest, "domain names"},
			{"rules", c.SandboxID, map[string]any{"rules": map[string]any{"a.com": []any{}}}, http.StatusNotImplemented, "network.rules: egress rules are set at create only"},
			{"unknown sandbox", "nosuch", map[string]any{}, http.StatusNotFound, "sandbox"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do(http.MethodPut, "/sandboxes/"+tc.id+"/network", e.key, tc.body)
				if r.status != tc.status || !strings.Contains(string(r.body), tc.msg) {
					t.Fatalf("got %d %s, want %d mentioning %q", r.status, r.body, tc.status, tc.msg)
				}
			})
		}
		// Another team's sandbox is a 404.
		if r := e.do(http.MethodPut, "/sandboxes/"+c.SandboxID+"/network", e.teamKey("other@example.com"), map[string]any{}); r.status != http.StatusNotFound {
			t.Fatalf("other team: %d %s", r.status, r.body)
		}
	})
}
