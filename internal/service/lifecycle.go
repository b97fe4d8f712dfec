package service

import (
	"context"
	"fmt"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Pause, resume and connect. Every status change is a compare-and-set in
// the store (cas): of concurrent callers exactly one moves a sandbox into
// pausing or resuming and calls the host; the others wait for that
// operation to settle and act on its outcome, so the host sees one pause
// or resume, and each caller learns whether it was the one that changed
// anything.

// DefaultSettleTimeout bounds how long a call waits for another caller's
// pause, resume or create of the same sandbox to finish.
const DefaultSettleTimeout = 2 * time.Minute

// Poll intervals while waiting for a sandbox to settle: the store has no
// change notifications, and transitions take from milliseconds (fake
// hosts) to seconds (a pause writing a GiB of memory).
const (
	settlePollMin = 10 * time.Millisecond
	settlePollMax = 250 * time.Millisecond
)

// reader re-reads a sandbox while waiting: team-scoped for API callers,
// any team for internal ones.
type reader func(ctx context.Context, id string) (store.Sandbox, error)

func (s *Service) teamReader(p Principal) reader {
	return func(ctx context.Context, id string) (store.Sandbox, error) { return s.GetSandbox(ctx, p, id) }
}

func (s *Service) internalReader() reader { return s.GetSandboxInternal }

// transient reports whether a status is on its way elsewhere by itself.
func transient(st sandbox.State) bool {
	return st == sandbox.StateCreating || st == sandbox.StatePausing || st == sandbox.StateResuming
}

// settle re-reads sb until its status is no longer transient. It gives up
// with the context's error when ctx ends, and with a conflict after the
// service's settle timeout (a host stuck mid-operation).
func (s *Service) settle(ctx context.Context, read reader, sb store.Sandbox) (store.Sandbox, error) {
	if !transient(sb.Status) {
		return sb, nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.settleTimeout)
	defer cancel()
	wait := settlePollMin
	for transient(sb.Status) {
		t := time.NewTimer(wait)
		select {
		case <-wctx.Done():
			t.Stop()
			if err := ctx.Err(); err != nil {
				return store.Sandbox{}, fmt.Errorf("wait for sandbox %s to settle: %w", sb.ID, err)
			}
			return store.Sandbox{}, Conflict("sandbox %s is still %s after %s; retry later", sb.ID, sb.Status, s.settleTimeout)
		case <-t.C:
		}
		wait = min(2*wait, settlePollMax)
		next, err := read(ctx, sb.ID)
		if err != nil {
			return store.Sandbox{}, err
		}
		sb = next
	}
	return sb, nil
}

// PauseSandbox snapshots a running sandbox and frees its host resources.
// changed is false when the sandbox was already paused (or another caller
// paused it meanwhile): the native API treats that as success, E2B's as
// 409. A pause, resume or create in flight is waited for (bounded).
//
// A host that refuses before touching the VM (it cannot snapshot:
// KindUnimplemented; bad arguments) leaves the sandbox running; any other
// host failure leaves it in error, since the VM may be half-paused.
func (s *Service) PauseSandbox(ctx context.Context, p Principal, id string) (sb store.Sandbox, changed bool, err error) {
	sb, err = s.GetSandbox(ctx, p, id)
	if err != nil {
		return store.Sandbox{}, false, err
	}
	return s.pause(ctx, sb, s.teamReader(p))
}

func (s *Service) pause(ctx context.Context, sb store.Sandbox, read reader) (store.Sandbox, bool, error) {
	for {
		switch {
		case sb.Status == sandbox.StatePaused:
			return sb, false, nil
		case transient(sb.Status):
			var err error
			if sb, err = s.settle(ctx, read, sb); err != nil {
				return store.Sandbox{}, false, err
			}
			continue
		case sb.Status != sandbox.StateRunning:
			return store.Sandbox{}, false, Conflict("sandbox %s is %s, only a running sandbox can be paused", sb.ID, sb.Status)
		}
		hc, err := s.hosts.Get(ctx, sb.Host)
		if err != nil {
			return store.Sandbox{}, false, err
		}
		cur, won, err := s.cas(ctx, sb.ID, []sandbox.State{sandbox.StateRunning}, sandbox.StatePausing, "")
		if err != nil {
			return store.Sandbox{}, false, err
		}
		if !won {
			sb = cur // someone else moved it: act on where it is now
			continue
		}
		if err := hc.PauseSandbox(ctx, sb.ID); err != nil {
			return store.Sandbox{}, false, s.undo(ctx, sb, sandbox.StatePausing, sandbox.StateRunning, "pause the sandbox", err)
		}
		out, err := s.transition(ctx, sb.ID, []sandbox.State{sandbox.StatePausing}, sandbox.StatePaused, "")
		return out, err == nil, err
	}
}

// ResumeSandbox restores a paused sandbox; resuming a running one is a no-op.
// The timeout starts over. A pause, resume or create in flight is waited
// for (bounded).
func (s *Service) ResumeSandbox(ctx context.Context, p Principal, id string) (store.Sandbox, error) {
	sb, err := s.GetSandbox(ctx, p, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	sb, _, err = s.resume(ctx, sb, s.teamReader(p))
	return sb, err
}

// resume brings sb to running; changed reports whether this call resumed
// it (false: it was running, or another caller resumed it).
func (s *Service) resume(ctx context.Context, sb store.Sandbox, read reader) (store.Sandbox, bool, error) {
	for {
		switch {
		case sb.Status == sandbox.StateRunning:
			return sb, false, nil
		case transient(sb.Status):
			var err error
			if sb, err = s.settle(ctx, read, sb); err != nil {
				return store.Sandbox{}, false, err
			}
			continue
		case sb.Status != sandbox.StatePaused:
			return store.Sandbox{}, false, Conflict("sandbox %s is %s, only a paused sandbox can be resumed", sb.ID, sb.Status)
		}
		hc, err := s.hosts.Get(ctx, sb.Host)
		if err != nil {
			return store.Sandbox{}, false, err
		}
		cur, won, err := s.cas(ctx, sb.ID, []sandbox.State{sandbox.StatePaused}, sandbox.StateResuming, "")
		if err != nil {
			return store.Sandbox{}, false, err
		}
		if !won {
			sb = cur
			continue
		}
		req := ResumeSandboxRequest{SandboxID: sb.ID, AccessToken: sb.AccessToken, Egress: policyOf(sb)}
		if _, err := hc.ResumeSandbox(ctx, req); err != nil {
			return store.Sandbox{}, false, s.undo(ctx, sb, sandbox.StateResuming, sandbox.StatePaused, "resume the sandbox", err)
		}
		if err := s.store.SetSandboxEndAt(ctx, sb.ID, s.now().Add(secs(sb.TimeoutS)), sb.TimeoutS); err != nil {
			s.log.WarnContext(ctx, "reset sandbox end time", "sandbox_id", sb.ID, "err", err)
		}
		out, err := s.transition(ctx, sb.ID, []sandbox.State{sandbox.StateResuming}, sandbox.StateRunning, "")
		return out, err == nil, err
	}
}

// undo handles hostErr, the host's failure to op, the operation that
// moved sb into the transient state `in`. When the host refused without
// touching the VM, sb goes back to `back`, where it really still is;
// otherwise to error. Returns the error for the caller to report.
func (s *Service) undo(ctx context.Context, sb store.Sandbox, in, back sandbox.State, op string, hostErr error) error {
	cause := hostErrFor(op, hostErr)
	if !hostRefused(hostErr) {
		return s.fail(ctx, sb, cause)
	}
	ctx = context.WithoutCancel(ctx) // record it even if the client left
	if _, err := s.transition(ctx, sb.ID, []sandbox.State{in}, back, ""); err != nil {
		s.log.ErrorContext(ctx, "return sandbox after a refused host call", "sandbox_id", sb.ID, "to", string(back), "err", err)
	}
	s.log.WarnContext(ctx, "host refused sandbox operation", "sandbox_id", sb.ID, "status", string(back), "err", cause)
	return cause
}

// ConnectSandbox is E2B's connect: it returns the team's sandbox running,
// resuming it first when paused (resumed = true), and waits (bounded, and
// with ctx) while a pause, resume or create is in flight. timeoutS > 0
// extends the sandbox's end to now+timeoutS when that is later; it never
// shortens it. The returned sandbox carries its envd access token.
func (s *Service) ConnectSandbox(ctx context.Context, p Principal, id string, timeoutS int) (sb store.Sandbox, resumed bool, err error) {
	if timeoutS != 0 {
		if err := inRange("timeout_s", timeoutS, MinTimeoutS, MaxTimeoutS); err != nil {
			return store.Sandbox{}, false, err
		}
	}
	if sb, err = s.GetSandbox(ctx, p, id); err != nil {
		return store.Sandbox{}, false, err
	}
	if sb, resumed, err = s.resume(ctx, sb, s.teamReader(p)); err != nil {
		return store.Sandbox{}, false, err
	}
	if end := s.now().Add(secs(timeoutS)); timeoutS > 0 && end.After(sb.EndAt) {
		// Not atomic with a concurrent SetSandboxTimeout (the store has no
		// conditional end-time update); the later write wins, as it would
		// had the calls arrived in that order.
		if err := s.store.SetSandboxEndAt(ctx, sb.ID, end, timeoutS); err != nil {
			return store.Sandbox{}, false, fromStore(err, "sandbox", "")
		}
		if sb, err = s.GetSandbox(ctx, p, id); err != nil {
			return store.Sandbox{}, false, err
		}
	}
	return sb, resumed, nil
}

// AutoResumeSandbox is for trusted internal callers only (the sandbox
// proxy, acting on traffic addressed to a sandbox, not for a team): it
// resumes the sandbox when, and only when, it was created with
// auto_resume, waiting (bounded) for a pause in flight to finish first. It
// returns the sandbox as it is afterwards: running, or untouched when it
// did not ask for auto-resume.
func (s *Service) AutoResumeSandbox(ctx context.Context, id string) (store.Sandbox, error) {
	sb, err := s.GetSandboxInternal(ctx, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	if !sb.AutoResume {
		return sb, nil
	}
	sb, _, err = s.resume(ctx, sb, s.internalReader())
	return sb, err
}
