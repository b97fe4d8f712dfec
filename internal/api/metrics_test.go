package api

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/proxy"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// staticResolver sends every sandbox's traffic to one real envd.
type staticResolver struct{ base string }

func (r staticResolver) Resolve(context.Context, string, int) (proxy.Target, error) {
	u, err := url.Parse(r.base)
	return proxy.Target{URL: u}, err
}
func (staticResolver) AutoResume(context.Context, string) (bool, error) { return false, nil }

// TestSandboxMetrics reads a sandbox's usage from a real envd through the
// real sandbox proxy, with the sandbox's own access token.
func TestSandboxMetrics(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{envd: true})
		a := e.signup("a@example.com")
		b := e.signup("b@example.com")
		sb := e.createSandbox(a, nil)
		path := "/v1/sandboxes/" + sb.ID + "/metrics"

		// Before envd has this sandbox's token, envd refuses the read: the
		// route reports the sandbox's metrics as unavailable, not a sample.
		e.want(e.do("GET", path, nil, apiKey(a.key)), http.StatusServiceUnavailable, "metrics before envd /init")

		// The shared test envd takes the token, as the agent's /init does at boot.
		resp, err := http.Post(e.envd+"/init", "application/json", strings.NewReader(`{"accessToken":"`+sb.EnvdAccessToken+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("envd /init: %d", resp.StatusCode)
		}

		var m apiwire.Metrics
		for name, h := range map[string]hdr{"api key": apiKey(a.key), "bearer": bearer(a.token)} {
			r := e.do("GET", path, nil, h)
			e.want(r, http.StatusOK, "metrics by "+name)
			r.json(t, &m)
			if m.CPUCount < 1 || m.CPUUsedPct < 0 || m.CPUUsedPct > 100 || m.MemTotalMB <= 0 || m.MemUsedMB <= 0 || m.MemUsedMB > m.MemTotalMB ||
				m.DiskTotalMB <= 0 || m.DiskUsedMB > m.DiskTotalMB || time.Since(m.Timestamp).Abs() > time.Minute {
				t.Fatalf("metrics by %s: %s", name, r.body)
			}
		}

		// Unauthenticated, another team's and a missing sandbox.
		e.want(e.do("GET", path, nil, nil), http.StatusUnauthorized, "metrics without credentials")
		other := e.do("GET", path, nil, apiKey(b.key))
		missing := e.do("GET", "/v1/sandboxes/aaaaaaaaaaaaaaaaaaaa/metrics", nil, apiKey(b.key))
		e.want(other, http.StatusNotFound, "another team's metrics")
		if string(other.body) != string(missing.body) {
			t.Fatalf("another team's sandbox %s; missing %s", other.body, missing.body)
		}

		// Paused: 409; resumed: a sample again.
		e.want(e.do("POST", "/v1/sandboxes/"+sb.ID+"/pause", nil, apiKey(a.key)), http.StatusOK, "pause")
		r := e.do("GET", path, nil, apiKey(a.key))
		e.want(r, http.StatusConflict, "paused metrics")
		if !strings.Contains(string(r.body), `"code":409`) {
			t.Fatalf("paused metrics body %s", r.body)
		}
		e.want(e.do("POST", "/v1/sandboxes/"+sb.ID+"/resume", nil, apiKey(a.key)), http.StatusOK, "resume")
		e.want(e.do("GET", path, nil, apiKey(a.key)), http.StatusOK, "metrics after resume")
	})
}

// TestSandboxMetricsUnconfigured: without a reader the route answers 503,
// never a made-up sample.
func TestSandboxMetricsUnconfigured(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		a := e.signup("a@example.com")
		sb := e.createSandbox(a, nil)
		e.want(e.do("GET", "/v1/sandboxes/"+sb.ID+"/metrics", nil, apiKey(a.key)), http.StatusServiceUnavailable, "metrics without a reader")
	})
}
