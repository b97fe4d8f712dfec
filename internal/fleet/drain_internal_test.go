package fleet

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// TestHostGuard replays the interleavings a heartbeat (read the row, then
// write it whole) can have with the operator's calls, with the heartbeat's
// write going through hostGuard as the registration server's does.
func TestHostGuard(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		c, err := NewControlPlane(ctx, Options{DataDir: t.TempDir(), Store: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		g := hostGuard{Store: db, c: c}
		h, err := db.UpsertHost(ctx, store.Host{ID: "h1", Name: "h1", Address: "127.0.0.1:1", LastHeartbeat: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		// heartbeat writes what it read, as hostreg's recordHeartbeat does.
		heartbeat := func(read store.Host) (store.Host, error) {
			if read.Status != store.HostDraining {
				read.Status = store.HostReady
			}
			read.LastHeartbeat = time.Now()
			return g.UpsertHost(ctx, read)
		}

		// Drain lands between a heartbeat's read and write: it stays drained.
		if _, err := c.DrainHost(ctx, h.ID); err != nil {
			t.Fatal(err)
		}
		if out, err := heartbeat(h); err != nil || out.Status != store.HostDraining {
			t.Fatalf("heartbeat read before a drain undid it: %+v %v", out, err)
		}
		// Undrain lands between them: it stays undrained.
		read, err := db.GetHost(ctx, h.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.UndrainHost(ctx, h.ID); err != nil {
			t.Fatal(err)
		}
		if out, err := heartbeat(read); err != nil || out.Status != store.HostReady {
			t.Fatalf("heartbeat read before an undrain undid it: %+v %v", out, err)
		}
		// Removal lands between them: the host is not written back.
		if read, err = db.GetHost(ctx, h.ID); err != nil {
			t.Fatal(err)
		}
		if err := c.RemoveHost(ctx, h.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := heartbeat(read); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("heartbeat of a removed host: %v", err)
		}
		if _, err := db.GetHost(ctx, h.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("removed host came back: %v", err)
		}
		// Registration (a new row) passes through.
		if out, err := g.UpsertHost(ctx, store.Host{ID: "h2", Name: "h2", Address: "127.0.0.1:2"}); err != nil || out.Status != store.HostReady {
			t.Fatalf("registration: %+v %v", out, err)
		}
	})
}
