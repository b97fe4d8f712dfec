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
