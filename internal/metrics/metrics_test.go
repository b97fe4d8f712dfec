package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRoute(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ path, want string }{
		{"/v1/sandboxes", "/v1/sandboxes"},
		{"/v1/sandboxes/ab12cd34ef56gh78ij90/exec", "/v1/sandboxes/{id}/exec"},
		{"/v1/api-keys/6f1c7a8e-1b2c-4d5e-8f90-0a1b2c3d4e5f", "/v1/api-keys/{id}"},
		{"/sandboxes/ab12cd34ef56gh78ij90/connect", "/sandboxes/{id}/connect"},
		{"/v1/snapshots/my-template", "/v1/snapshots/my-template"},
		{"/healthz", "/healthz"},
		{"/random/../../etc/passwd", "other"},
		{"/v1/a/b/c/d/e/f/g", "/v1/a/b/c/d"},
		{"/", "other"},
	} {
		if got := Route(tc.path); got != tc.want {
			t.Errorf("Route(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

func scrape(t *testing.T, h http.Handler, remote, auth string) (int, string) {
	t.Helper()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.RemoteAddr = remote
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestHandlerGuard(t *testing.T) {
	t.Parallel()
	open := New(nil, "", nil).Handler()
	if code, _ := scrape(t, open, "127.0.0.1:5000", ""); code != 200 {
		t.Errorf("loopback without token: %d, want 200", code)
	}
	if code, body := scrape(t, open, "192.0.2.7:5000", ""); code != 403 || !strings.Contains(body, `"code":403`) {
		t.Errorf("remote without token: %d %s, want 403 JSON", code, body)
	}
	guarded := New(nil, "s3cret", nil).Handler()
	for _, tc := range []struct {
		remote, token string
		want          int
	}{{"192.0.2.7:1", "s3cret", 200}, {"192.0.2.7:1", "wrong", 403}, {"127.0.0.1:1", "", 403}} {
		if code, _ := scrape(t, guarded, tc.remote, tc.token); code != tc.want {
			t.Errorf("token mode, remote %s token %q: %d, want %d", tc.remote, tc.token, code, tc.want)
		}
	}
}

func TestMiddlewareAndCounts(t *testing.T) {
	t.Parallel()
	count := func(context.Context) (Counts, error) {
		return Counts{Sandboxes: map[string]int{"running": 3, "paused": 1}, Hosts: map[string]int{"ready": 2}}, nil
	}
	m := New(count, "", nil)
	app := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/missing") {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ok"))
	}))
	for _, p := range []string{"/v1/sandboxes", "/v1/sandboxes", "/v1/sandboxes/ab12cd34ef56gh78ij90/missing"} {
		app.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	_, body := scrape(t, m.Handler(), "127.0.0.1:1", "")
	for _, want := range []string{
		`hearth_http_requests_total{code="200",method="GET",route="/v1/sandboxes"} 2`,
		`hearth_http_requests_total{code="404",method="GET",route="/v1/sandboxes/{id}/missing"} 1`,
		`hearth_sandboxes{status="running"} 3`,
		`hearth_sandboxes{status="paused"} 1`,
		`hearth_hosts{status="ready"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestCountErrorIsReported(t *testing.T) {
	t.Parallel()
	m := New(func(context.Context) (Counts, error) { return Counts{}, errors.New("db down") }, "", nil)
	if code, _ := scrape(t, m.Handler(), "127.0.0.1:1", ""); code != http.StatusInternalServerError {
		t.Fatalf("scrape with a failing store: %d, want 500", code)
	}
}
