package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Operator decisions about a host: drain (no new sandboxes are placed
// there; the running ones keep running and serving), undrain, remove.
//
// Placement (internal/scheduler) already places only on ready hosts, the
// Monitor only marks ready hosts unreachable, and heartbeats keep a
// draining host draining, so "draining" is just a status this file sets.

// liveStatuses are the sandbox states that still need their host: a host
// holding any of them cannot be removed. Paused ones count: their memory
// and disk snapshots live on that host.
var liveStatuses = []sandbox.State{
	sandbox.StateCreating, sandbox.StateRunning, sandbox.StatePausing, sandbox.StatePaused,
	sandbox.StateResuming, sandbox.StateStopping,
}

func (c *ControlPlaneSide) getHost(ctx context.Context, id string) (store.Host, error) {
	h, err := c.opts.Store.GetHost(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return h, service.NotFound("host")
	}
	if err != nil {
		return h, fmt.Errorf("get host %s: %w", id, err)
	}
	return h, nil
}

// DrainHost stops placement on a host. Draining a draining host is a no-op;
// an unreachable host may be drained too (it stays out of placement when it
// comes back).
func (c *ControlPlaneSide) DrainHost(ctx context.Context, id string) (store.Host, error) {
	c.hostMu.Lock()
	defer c.hostMu.Unlock()
	h, err := c.getHost(ctx, id)
	if err != nil || h.Status == store.HostDraining {
		return h, err
	}
	was := h.Status
	h.Status = store.HostDraining
	if h, err = c.opts.Store.UpsertHost(ctx, h); err != nil {
		return h, fmt.Errorf("drain host %s: %w", id, err)
	}
	c.log.Info("host draining", "host", h.ID, "name", h.Name, "was", was)
	return h, nil
}

// UndrainHost returns a draining host to placement: ready, or unreachable
// when it has been silent longer than the window (its next heartbeat makes
// it ready, as for any host). A ready host is left alone; an unreachable
// one is refused: only its heartbeat can make it ready.
func (c *ControlPlaneSide) UndrainHost(ctx context.Context, id string) (store.Host, error) {
	c.hostMu.Lock()
	defer c.hostMu.Unlock()
	h, err := c.getHost(ctx, id)
	if err != nil {
		return h, err
	}
	switch h.Status {
	case store.HostReady:
		return h, nil
	case store.HostUnreachable:
		return h, service.Conflict("host %s is unreachable: it becomes ready at its next heartbeat", id)
	}
	h.Status = store.HostReady
	if h.LastHeartbeat.IsZero() || time.Since(h.LastHeartbeat) > c.opts.Window {
		h.Status = store.HostUnreachable
	}
	if h, err = c.opts.Store.UpsertHost(ctx, h); err != nil {
		return h, fmt.Errorf("undrain host %s: %w", id, err)
	}
	c.log.Info("host undrained", "host", h.ID, "name", h.Name, "status", h.Status)
	return h, nil
}

// RemoveHost deletes a host that no sandbox needs any more (see
// liveStatuses) and forgets its client; otherwise it is a Conflict naming
// what is left. Drain the host first so nothing new lands on it meanwhile.
func (c *ControlPlaneSide) RemoveHost(ctx context.Context, id string) error {
	c.hostMu.Lock()
	defer c.hostMu.Unlock()
	h, err := c.getHost(ctx, id)
	if err != nil {
		return err
	}
	sbs, err := c.opts.Store.ListSandboxesByHost(ctx, id)
	if err != nil {
		return fmt.Errorf("list sandboxes of host %s: %w", id, err)
	}
	counts := map[sandbox.State]int{}
	n := 0
	for _, sb := range sbs {
		for _, st := range liveStatuses {
			if sb.Status == st {
				counts[st]++
				n++
			}
		}
	}
	if n > 0 {
		var parts []string
		for _, st := range liveStatuses { // lifecycle order
			if k := counts[st]; k > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", k, st))
			}
		}
		return service.Conflict("host %s still holds %d sandboxes (%s): drain it, then destroy them (or wait for them to end) before removing it",
			id, n, strings.Join(parts, ", "))
	}
	if err := c.deleteHostLocked(ctx, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return service.NotFound("host")
		}
		return fmt.Errorf("remove host %s: %w", id, err)
	}
	c.log.Info("host removed", "host", h.ID, "name", h.Name, "address", h.Address)
	return nil
}

// hostGuard is the registration server's view of the store. A heartbeat is
// a read-modify-write of the whole host row (GetHost, then UpsertHost);
// without this guard an operator's decision landing between the two would
// be undone: "draining" overwritten by the "ready" read before it, or a
// removed host written back. Under hostMu (which the operator's calls above
// also hold) it re-reads the row and keeps those decisions.
//
// This orders writes within one control plane process. With several
// control planes on one PostgreSQL, a heartbeat handled by another process
// can still race an operator's call; closing that needs a compare-and-set
// in the store (as MarkHostUnreachable does for the Monitor).
type hostGuard struct {
	Store
	c *ControlPlaneSide
}

func (g hostGuard) UpsertHost(ctx context.Context, h store.Host) (store.Host, error) {
	g.c.hostMu.Lock()
	defer g.c.hostMu.Unlock()
	cur, err := g.Store.GetHost(ctx, h.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Registration writes a new row (zero CreatedAt); a heartbeat
		// carries the row it read, so a miss means the host was removed.
		if !h.CreatedAt.IsZero() {
			return store.Host{}, fmt.Errorf("fleet: host %s was removed: %w", h.ID, store.ErrNotFound)
		}
	case err != nil:
		return store.Host{}, err
	case cur.Status == store.HostDraining:
		h.Status = store.HostDraining
	case h.Status == store.HostDraining:
		h.Status = store.HostReady // undrained since the heartbeat read it
	}
	return g.Store.UpsertHost(ctx, h)
}
