package hostreg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hearth-sandbox/hearth/internal/store"
)

// MonitorStore is what the Monitor needs; *store.DB implements it.
type MonitorStore interface {
	ListHosts(ctx context.Context) ([]store.Host, error)
	GetHost(ctx context.Context, id string) (store.Host, error)
	UpsertHost(ctx context.Context, h store.Host) (store.Host, error)
}

// Monitor marks ready hosts unreachable once no heartbeat has arrived for
// Window; the next accepted heartbeat marks them ready again (Server).
//
// Sandbox rows are left untouched: the store has no "unreachable" sandbox
// status, and a host that comes back still runs them. A sandbox's
// reachability is its host's status, which GET /v1/admin/hosts shows and
// which placement and the reconciler already skip. Draining hosts keep
// their status (the operator's decision); their LastHeartbeat still shows
// whether they are alive.
type Monitor struct {
	Store  MonitorStore
	Window time.Duration // e.g. 3 heartbeat intervals
	Logger *slog.Logger
	Now    func() time.Time // default time.Now
}

// Check is one pass. It returns the hosts it marked unreachable.
func (m *Monitor) Check(ctx context.Context) ([]store.Host, error) {
	if m.Window <= 0 {
		return nil, errors.New("hostreg: monitor window must be positive")
	}
	hosts, err := m.Store.ListHosts(ctx)
	if err != nil {
		return nil, fmt.Errorf("hostreg: monitor: %w", err)
	}
	var marked []store.Host
	var errs []error
	for _, h := range hosts {
		if h.Status != store.HostReady || !m.stale(h) {
			continue
		}
		// Re-read right before writing: UpsertHost writes the whole row, and
		// a heartbeat may have landed since the listing. (A store-side
		// compare-and-set on last_heartbeat would close the remaining
		// window; until then a lost race costs one heartbeat interval of a
		// wrong "unreachable".)
		cur, err := m.Store.GetHost(ctx, h.ID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if cur.Status != store.HostReady || !m.stale(cur) {
			continue
		}
		cur.Status = store.HostUnreachable
		if cur, err = m.Store.UpsertHost(ctx, cur); err != nil {
			errs = append(errs, err)
			continue
		}
		m.logger().Warn("host unreachable: no heartbeat", "host", cur.ID, "name", cur.Name,
			"last_heartbeat", cur.LastHeartbeat, "window", m.Window)
		marked = append(marked, cur)
	}
	if err := errors.Join(errs...); err != nil {
		return marked, fmt.Errorf("hostreg: monitor: %w", err)
	}
	return marked, nil
}

func (m *Monitor) stale(h store.Host) bool {
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	return now().Sub(h.LastHeartbeat) > m.Window // zero LastHeartbeat: stale
}

func (m *Monitor) logger() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.Default()
}

// Run checks every interval until ctx ends (interval 0: Window/4, so loss
// is detected within Window + Window/4).
func (m *Monitor) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = m.Window / 4
	}
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := m.Check(ctx); err != nil && ctx.Err() == nil {
			m.logger().Error("host monitor pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
