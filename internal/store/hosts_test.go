package store_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/store"
)

func TestHosts(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		hb := time.Date(2026, 11, 28, 12, 0, 0, 987654321, time.UTC)
		h, err := db.UpsertHost(ctx(t), store.Host{ID: "h1", Name: "one", Address: "10.0.0.1:5000", VCPUs: 8, MemoryMB: 16384, DiskMB: 100000, LastHeartbeat: hb})
		want(t, err, nil)
		if h.Status != store.HostReady || h.CreatedAt.IsZero() || h.LastHeartbeat != hb.Truncate(time.Microsecond) {
			t.Fatalf("inserted %+v", h)
		}
		upd := h
		upd.Status, upd.UsedVCPUs, upd.SandboxCount, upd.Address = store.HostDraining, 3, 2, "10.0.0.9:5000"
		upd.CreatedAt = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // ignored on update
		got, err := db.UpsertHost(ctx(t), upd)
		want(t, err, nil)
		upd.CreatedAt = h.CreatedAt
		if got != upd {
			t.Fatalf("updated %+v, want %+v", got, upd)
		}
		read, err := db.GetHost(ctx(t), "h1")
		want(t, err, nil)
		if read != upd {
			t.Fatalf("read %+v, want %+v", read, upd)
		}
		_, err = db.GetHost(ctx(t), "h2")
		want(t, err, store.ErrNotFound)
		_, err = db.UpsertHost(ctx(t), store.Host{ID: "h2", Name: "two", Address: "a:1"})
		want(t, err, nil)
		hosts, err := db.ListHosts(ctx(t))
		want(t, err, nil)
		if len(hosts) != 2 || hosts[0].ID != "h1" {
			t.Fatalf("hosts = %+v", hosts)
		}
		want(t, db.DeleteHost(ctx(t), "h2"), nil)
		want(t, db.DeleteHost(ctx(t), "h2"), store.ErrNotFound)
	})
}

func TestHostTokens(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		future := time.Now().Add(time.Hour)
		want(t, db.CreateHostToken(ctx(t), "tok1", future), nil)
		want(t, db.CreateHostToken(ctx(t), "tok1", future), store.ErrConflict)
		want(t, db.ConsumeHostToken(ctx(t), "tok1"), nil)
		want(t, db.ConsumeHostToken(ctx(t), "tok1"), store.ErrNotFound) // single use
		want(t, db.ConsumeHostToken(ctx(t), "unknown"), store.ErrNotFound)
		want(t, db.CreateHostToken(ctx(t), "old", time.Now().Add(-time.Second)), nil)
		want(t, db.ConsumeHostToken(ctx(t), "old"), store.ErrNotFound) // expired

		// Concurrent registrations with one token: one host gets in.
		want(t, db.CreateHostToken(ctx(t), "race", future), nil)
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			wins int
		)
		for range 16 {
			wg.Go(func() {
				err := db.ConsumeHostToken(ctx(t), "race")
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					t.Errorf("consume: %v", err)
				}
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					wins++
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d registrations with one token, want 1", wins)
		}
	})
}

// TestMarkHostUnreachable: the monitor's compare-and-set. A heartbeat that
// arrives between its read and its write must win.
func TestMarkHostUnreachable(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		hb := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
		for _, h := range []store.Host{
			{ID: "stale", Address: "a:1", LastHeartbeat: hb},
			{ID: "fresh", Address: "a:2", LastHeartbeat: hb.Add(time.Minute)},
			{ID: "never", Address: "a:3"},
			{ID: "draining", Address: "a:4", Status: store.HostDraining, LastHeartbeat: hb},
		} {
			_, err := db.UpsertHost(ctx(t), h)
			want(t, err, nil)
		}
		cut := hb.Add(30 * time.Second)
		tests := []struct {
			id   string
			want error
		}{
			{"stale", nil},
			{"stale", store.ErrNotFound}, // already unreachable: not ready any more
			{"fresh", store.ErrNotFound}, // heard from since the cut
			{"never", nil},               // no heartbeat at all counts as stale
			{"draining", store.ErrNotFound},
			{"unknown", store.ErrNotFound},
		}
		for _, tc := range tests {
			h, err := db.MarkHostUnreachable(ctx(t), tc.id, cut)
			want(t, err, tc.want)
			if err == nil && (h.ID != tc.id || h.Status != store.HostUnreachable) {
				t.Errorf("%s: got %+v", tc.id, h)
			}
		}
		for id, st := range map[string]store.HostStatus{"stale": store.HostUnreachable, "fresh": store.HostReady,
			"never": store.HostUnreachable, "draining": store.HostDraining} {
			h, err := db.GetHost(ctx(t), id)
			want(t, err, nil)
			if h.Status != st {
				t.Errorf("%s: status %s, want %s", id, h.Status, st)
			}
		}
		// The race the CAS exists for: a heartbeat (the whole-row upsert the
		// registration server does) lands after the monitor decided.
		h, err := db.GetHost(ctx(t), "fresh")
		want(t, err, nil)
		h.LastHeartbeat = hb.Add(2 * time.Minute)
		_, err = db.UpsertHost(ctx(t), h)
		want(t, err, nil)
		_, err = db.MarkHostUnreachable(ctx(t), "fresh", hb.Add(90*time.Second))
		want(t, err, store.ErrNotFound)
	})
}
