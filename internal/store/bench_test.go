package store_test

import (
	"fmt"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// BenchmarkGetAPIKeyByHash: the lookup behind every X-API-Key request,
// among 1,000 keys.
func BenchmarkGetAPIKeyByHash(b *testing.B) {
	storetest.RunB(b, func(b *testing.B, db *store.DB) {
		_, team := mustUser(b, db, "a@example.com")
		for i := range 1000 {
			_, err := db.CreateAPIKey(ctx(b), store.APIKey{TeamID: team.ID, Name: "k", Prefix: "e2b_", Hash: fmt.Sprintf("%064x", i)})
			want(b, err, nil)
		}
		hash := fmt.Sprintf("%064x", 500)
		b.ResetTimer()
		for b.Loop() {
			if _, err := db.GetAPIKeyByHash(ctx(b), hash); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkListSandboxes: one team with 1,000 sandboxes (and another team
// with 1,000 more): the whole list, a first page of 50, and a page of 50
// filtered by metadata and status.
func BenchmarkListSandboxes(b *testing.B) {
	storetest.RunB(b, func(b *testing.B, db *store.DB) {
		_, team := mustUser(b, db, "a@example.com")
		_, other := mustUser(b, db, "b@example.com")
		for i := range 1000 {
			for _, tm := range []string{team.ID, other.ID} {
				meta := map[string]string{"n": fmt.Sprint(i), "env": []string{"prod", "dev"}[i%2]}
				mustSandbox(b, db, store.Sandbox{TeamID: tm, Status: sandbox.StateRunning, Metadata: meta,
					AccessToken: "token", Env: map[string]string{"A": "b"}})
			}
		}
		for _, bc := range []struct {
			name string
			f    store.SandboxFilter
			n    int
		}{
			{"all1000", store.SandboxFilter{}, 1000},
			{"page50", store.SandboxFilter{Limit: 50}, 50},
			{"page50_filtered", store.SandboxFilter{Limit: 50, Statuses: []sandbox.State{sandbox.StateRunning}, Metadata: map[string]string{"env": "prod"}}, 50},
		} {
			b.Run(bc.name, func(b *testing.B) {
				for b.Loop() {
					l, err := db.ListSandboxes(ctx(b), team.ID, bc.f)
					if err != nil || len(l) != bc.n {
						b.Fatalf("%d sandboxes, %v", len(l), err)
					}
				}
			})
		}
	})
}
