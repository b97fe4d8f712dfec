package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/scheduler"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// fakeClient stands for a host's RPC client; the pool only hands it out.
type fakeClient struct {
	service.HostClient
	hostID, address string
}

type factory struct{ calls []string }

func (f *factory) make(h store.Host) (service.HostClient, error) {
	f.calls = append(f.calls, h.ID)
	return &fakeClient{hostID: h.ID, address: h.Address}, nil
}

func TestPool(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		now := time.Now()
		add := func(id string, st store.HostStatus, memMB, usedMem int) store.Host {
			h, err := db.UpsertHost(ctx, store.Host{ID: id, Name: id, Address: id + ":7070", Status: st,
				VCPUs: 8, MemoryMB: memMB, DiskMB: 100000, UsedMemoryMB: usedMem, LastHeartbeat: now})
			if err != nil {
				t.Fatal(err)
			}
			return h
		}
		add("a", store.HostReady, 8192, 2048)
		add("b", store.HostReady, 8192, 0)
		c := add("c", store.HostUnreachable, 65536, 0)
		f := &factory{}
		pool := scheduler.NewPool(db, f.make, scheduler.Policy{})

		id, hc, err := pool.Pick(ctx, service.PlacementRequest{VCPUs: 1, MemoryMB: 2048})
		if err != nil || id != "b" || hc.(*fakeClient).hostID != "b" {
			t.Fatalf("first pick: %s %v %v", id, hc, err)
		}
		// Without a heartbeat b counts the 2048 MB just placed, which makes
		// it busier than a (4096+1 vCPU vs 2048).
		id, _, err = pool.Pick(ctx, service.PlacementRequest{VCPUs: 1, MemoryMB: 2048})
		if err != nil || id != "a" {
			t.Fatalf("second pick %s %v; want a (b holds a reservation)", id, err)
		}
		// A heartbeat from b newer than the picks replaces the reservation by
		// the reported usage (here: b reports nothing used).
		b, _ := db.GetHost(ctx, "b")
		b.LastHeartbeat = now.Add(time.Second)
		if _, err := db.UpsertHost(ctx, b); err != nil {
			t.Fatal(err)
		}
		if id, _, _ = pool.Pick(ctx, service.PlacementRequest{VCPUs: 1, MemoryMB: 2048}); id != "b" {
			t.Fatalf("after heartbeat: %s, want b", id)
		}

		// Clients are made once per host.
		hb, err := pool.Get(ctx, "b")
		if err != nil || hb != hc {
			t.Fatalf("Get b: %v %v (not the cached client)", hb, err)
		}
		if len(f.calls) != 2 {
			t.Fatalf("factory calls %v, want one per host", f.calls)
		}
		// ... and again when the host's address changes.
		b, _ = db.GetHost(ctx, "b")
		b.Address = "b2:7070"
		db.UpsertHost(ctx, b)
		if hb2, _ := pool.Get(ctx, "b"); hb2.(*fakeClient).address != "b2:7070" {
			t.Fatalf("stale client after an address change")
		}

		// Unreachable and unknown hosts: unavailable, nothing dialled.
		for _, id := range []string{c.ID, "nope"} {
			if _, err := pool.Get(ctx, id); service.KindOf(err) != service.KindUnavailable {
				t.Errorf("Get %s: %v, want unavailable", id, err)
			}
		}
		if len(f.calls) != 3 {
			t.Fatalf("factory calls %v", f.calls)
		}

		// Nothing fits: unavailable.
		if _, _, err := pool.Pick(ctx, service.PlacementRequest{VCPUs: 1, MemoryMB: 100000}); service.KindOf(err) != service.KindUnavailable || !errors.Is(err, scheduler.ErrNoCapacity) {
			t.Fatalf("oversized pick: %v", err)
		}
		// Template on a full host: another host, which the service copies
		// the template to.
		if id, _, err := pool.Pick(ctx, service.PlacementRequest{TemplateID: "t1", TemplateHosts: []string{"a"}, VCPUs: 1, MemoryMB: 6000}); err != nil || id != "b" {
			t.Fatalf("template pick: %s, %v; want b", id, err)
		}
	})
}

func TestPoolEmpty(t *testing.T) {
	t.Parallel()
	pool := scheduler.NewPool(storetest.Open(t, storetest.SQLite), (&factory{}).make, scheduler.Policy{})
	_, _, err := pool.Pick(context.Background(), service.PlacementRequest{VCPUs: 1, MemoryMB: 1})
	if service.KindOf(err) != service.KindUnavailable {
		t.Fatalf("pick without hosts: %v", err)
	}
}

// BenchmarkPoolPick100Hosts measures Pick end to end on SQLite: the host
// listing dominates, Place itself is BenchmarkPlace100Hosts.
func BenchmarkPoolPick100Hosts(b *testing.B) {
	ctx := context.Background()
	db := storetest.Open(b, storetest.SQLite)
	for i := range 100 {
		id := fmt.Sprintf("h%03d", i)
		if _, err := db.UpsertHost(ctx, store.Host{ID: id, Name: id, Address: id + ":1", VCPUs: 64, MemoryMB: 1 << 20,
			UsedMemoryMB: i * 100, LastHeartbeat: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
	pool := scheduler.NewPool(db, (&factory{}).make, scheduler.Policy{})
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := pool.Pick(ctx, service.PlacementRequest{VCPUs: 1, MemoryMB: 1}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

// A sandbox with volumes goes to the volumes' host (the less loaded one
// is not a candidate), or fails naming it.
func TestPoolPinnedHost(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		for id, used := range map[string]int{"busy": 6144, "idle": 0} {
			if _, err := db.UpsertHost(ctx, store.Host{ID: id, Name: id, Address: id + ":7070", Status: store.HostReady,
				VCPUs: 8, MemoryMB: 8192, DiskMB: 100000, UsedMemoryMB: used, LastHeartbeat: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		pool := scheduler.NewPool(db, (&factory{}).make, scheduler.Policy{})
		if id, _, err := pool.Pick(ctx, service.PlacementRequest{VCPUs: 1, MemoryMB: 512, Host: "busy"}); err != nil || id != "busy" {
			t.Fatalf("pinned pick: %s %v", id, err)
		}
		if _, _, err := pool.Pick(ctx, service.PlacementRequest{VCPUs: 1, MemoryMB: 4096, Host: "busy"}); service.KindOf(err) != service.KindUnavailable {
			t.Fatalf("pinned host without room: %v", err)
		}
		_, _, err := pool.Pick(ctx, service.PlacementRequest{VCPUs: 1, MemoryMB: 512, Host: "gone"})
		if service.KindOf(err) != service.KindUnavailable || !strings.Contains(err.Error(), "gone") {
			t.Fatalf("pinned to an unknown host: %v", err)
		}
	})
}
