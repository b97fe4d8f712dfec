package hostreg

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Sender sends one heartbeat; *Client is one.
type Sender interface {
	Heartbeat(ctx context.Context, hb Heartbeat) (HeartbeatResponse, error)
}

var _ Sender = (*Client)(nil)

// Heartbeater sends heartbeats until its context ends. It never gives up
// and never touches sandboxes: an agent that loses the control plane keeps
// running and serving them and just keeps retrying.
type Heartbeater struct {
	Sender Sender
	// Report gathers the current capacity and usage.
	Report   func(ctx context.Context) (Heartbeat, error)
	Interval time.Duration // between successful heartbeats; default 10s
	// Jitter spreads agents apart: every wait is scaled by a random factor
	// in [1-Jitter, 1+Jitter]. Default 0.1; negative means none.
	Jitter float64
	// After a failure the next attempt comes after 1s, doubling per
	// consecutive failure, capped at Interval: retries do not hammer a
	// struggling control plane, and a returning one hears from the agent
	// within one interval.
	Logger *slog.Logger
}

// Run blocks until ctx ends.
func (h *Heartbeater) Run(ctx context.Context) {
	interval := h.Interval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	log := h.Logger
	if log == nil {
		log = slog.Default()
	}
	failures := 0
	for {
		err := h.once(ctx)
		wait := interval
		switch {
		case err == nil:
			if failures > 0 {
				log.Info("heartbeats restored", "after_failures", failures)
			}
			failures = 0
		case ctx.Err() != nil:
			return
		default:
			failures++
			wait = backoff(failures, interval)
			// Log the first failure and then sparingly: an agent may be cut
			// off for hours.
			if failures == 1 || failures%30 == 0 {
				log.Warn("heartbeat failed; sandboxes keep running, retrying", "failures", failures, "retry_in", wait, "err", err)
			}
		}
		t := time.NewTimer(h.jitter(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (h *Heartbeater) once(ctx context.Context) error {
	hb, err := h.Report(ctx)
	if err != nil {
		return err
	}
	_, err = h.Sender.Heartbeat(ctx, hb)
	return err
}

func backoff(failures int, max time.Duration) time.Duration {
	d := time.Second
	for i := 1; i < failures && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

func (h *Heartbeater) jitter(d time.Duration) time.Duration {
	j := h.Jitter
	if j == 0 {
		j = 0.1
	}
	if j < 0 {
		return d
	}
	j = min(j, 1)
	return time.Duration(float64(d) * (1 - j + 2*j*rand.Float64()))
}
