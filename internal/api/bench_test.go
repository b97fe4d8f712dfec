package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// BenchmarkAPIKeyCheck measures the X-API-Key middleware in process: format
// check, SHA-256, store lookup by hash (last_used_at is written at most once
// a minute per key, so not per request).
func BenchmarkAPIKeyCheck(b *testing.B) {
	storetest.RunB(b, func(b *testing.B, db *store.DB) {
		e := newEnv(b, db, envOpts{})
		a := e.signup("bench@example.com")
		s := &server{svc: e.svc, log: discardLogger(), maxJSONBytes: 1 << 20, maxUploadBytes: 1 << 20}
		h := s.endpoint(route{auth: authTeam, handle: func(w http.ResponseWriter, r *http.Request) error {
			if principalFrom(r.Context()).TeamID != a.teamID {
				b.Fatal("wrong principal")
			}
			w.WriteHeader(http.StatusNoContent)
			return nil
		}})
		req := httptest.NewRequest("GET", "/v1/sandboxes", nil)
		req.Header.Set("X-API-Key", a.key)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusNoContent {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
	})
}

// BenchmarkListSandboxes1000: GET /v1/sandboxes over real HTTP with 1,000
// sandboxes of the caller's team in the store (and 100 of another team).
func BenchmarkListSandboxes1000(b *testing.B) {
	storetest.RunB(b, func(b *testing.B, db *store.DB) {
		e := newEnv(b, db, envOpts{})
		a := e.signup("list@example.com")
		other := e.signup("other@example.com")
		ctx := context.Background()
		seed := func(team string, n int) {
			for i := range n {
				_, err := db.CreateSandbox(ctx, store.Sandbox{
					TeamID: team, TemplateID: e.baseTpl.ID, Status: sbx.StateRunning, Host: testHostID,
					VCPUs: 2, MemoryMB: 512, DiskSizeMB: 20480, TimeoutS: 300,
					Metadata: map[string]string{"i": string(rune('a' + i%26)), "owner": "bench"},
					Env:      map[string]string{"PATH": "/usr/bin"}, AccessToken: "tok",
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		seed(a.teamID, 1000)
		seed(other.teamID, 100)
		req, err := http.NewRequest("GET", e.srv.URL+"/v1/sandboxes", nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("X-API-Key", a.key)
		client := e.srv.Client()
		var size int64
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			res, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			size, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				b.Fatalf("status %d", res.StatusCode)
			}
		}
		b.ReportMetric(float64(size), "resp-bytes")
	})
}
