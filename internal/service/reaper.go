package service

import (
	"context"
	"time"
)

// Reaper ends sandboxes whose timeout passed: paused when they asked for
// auto-pause, destroyed otherwise.
type Reaper struct {
	svc   *Service
	every time.Duration
}

// NewReaper returns a reaper that checks every interval.
func (s *Service) NewReaper(every time.Duration) *Reaper {
	if every <= 0 {
		every = 5 * time.Second
	}
	return &Reaper{svc: s, every: every}
}

// Run reaps until ctx is done.
func (r *Reaper) Run(ctx context.Context) {
	runEvery(ctx, r.every, func() { r.ReapOnce(ctx) })
}

// runEvery calls fn now and then every interval until ctx is done.
func runEvery(ctx context.Context, every time.Duration, fn func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		fn()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReapOnce handles every sandbox expired now and returns how many it ended.
// Failures are logged and retried at the next pass.
func (r *Reaper) ReapOnce(ctx context.Context) int {
	s := r.svc
	expired, err := s.store.ListExpiredSandboxes(ctx, s.now())
	if err != nil {
		if ctx.Err() == nil {
			s.log.ErrorContext(ctx, "list expired sandboxes", "err", err)
		}
		return 0
	}
	n := 0
	for _, sb := range expired {
		if ctx.Err() != nil {
			return n
		}
		if sb.AutoPause {
			_, _, err = s.pause(ctx, sb, s.internalReader())
			if KindOf(err) == KindUnimplemented {
				// Its host cannot pause: the sandbox is still running and
				// would be retried forever past its timeout. The timeout
				// is the limit the team asked for, so it ends.
				s.log.WarnContext(ctx, "auto-pause impossible on this host; destroying at timeout", "sandbox_id", sb.ID, "err", err)
				err = s.destroy(ctx, sb)
			}
		} else {
			err = s.destroy(ctx, sb)
		}
		if err != nil {
			s.log.WarnContext(ctx, "reap sandbox", "sandbox_id", sb.ID, "auto_pause", sb.AutoPause, "err", err)
			continue
		}
		s.log.InfoContext(ctx, "sandbox timed out", "sandbox_id", sb.ID, "auto_pause", sb.AutoPause)
		n++
	}
	return n
}
