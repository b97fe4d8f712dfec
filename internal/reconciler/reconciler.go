// Package reconciler makes the store and the hosts agree on which
// sandboxes exist.
//
// One pass, for every reachable host (status ready or draining):
//
//   - the host runs a sandbox the store does not know, or knows as
//     stopped, or places on another host: destroyed on the host;
//   - the store has a sandbox running on the host, which lacks it: marked
//     stopped (compare-and-set from running, with the reason in Error);
//   - creating/resuming/pausing/stopping sandboxes the host lacks are left
//     alone for Grace after their last change (the use case in flight
//     finishes them); older ones become stopped (creating, stopping) or
//     error (pausing, resuming: a snapshot may exist, an operator decides);
//   - paused sandboxes are expected to be absent and are left alone, as are
//     rows in stopped or error;
//   - a sandbox the host reports running, paused or error while the store
//     says otherwise takes the host's state (a use case cut short by a
//     crash of the control plane or the agent, a host that paused a
//     sandbox at shutdown or recovered it after a crash); transitional rows
//     only after Grace, as above, and a stopping row is destroyed again.
//
// Settle is a pass for start-up, before any use case runs: nothing is in
// flight, so transitional rows are settled at once.
//
// Unreachable hosts are skipped entirely: nothing is concluded from a host
// that cannot answer, and its sandboxes are left as they are until it
// returns. A host whose ListSandboxes fails is skipped the same way.
//
// Races with use cases are handled by the order of reads and by CAS:
// the store is read before the host, so a sandbox created in between looks
// unknown; it is re-read before being destroyed and spared when it now
// exists on this host. A sandbox that changed state after the store read
// fails the CAS and is left alone.
package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Store is what the reconciler needs; *store.DB implements it.
type Store interface {
	ListHosts(ctx context.Context) ([]store.Host, error)
	ListSandboxesByHost(ctx context.Context, hostID string) ([]store.Sandbox, error)
	GetSandboxByID(ctx context.Context, id string) (store.Sandbox, error)
	UpdateSandboxStatus(ctx context.Context, id string, from []sandbox.State, to sandbox.State, errMsg string) (store.Sandbox, error)
}

var _ Store = (*store.DB)(nil)

// Hosts gives the client of a host; service.HostPool (scheduler.Pool,
// service.SingleHost) implements it.
type Hosts interface {
	Get(ctx context.Context, hostID string) (service.HostClient, error)
}

// Reconciler compares the store with the hosts. Zero Grace: 2 minutes.
type Reconciler struct {
	Store  Store
	Hosts  Hosts
	Grace  time.Duration
	Logger *slog.Logger
	Now    func() time.Time
}

// Action is one change a pass made (or tried).
type Action struct {
	HostID    string
	SandboxID string
	Kind      string // "destroy" | "stopped" | "error"
	Reason    string
	Err       error // nil when done
}

// Report summarizes a pass.
type Report struct {
	Hosts   int      // hosts compared
	Skipped []string // reachable-by-status hosts that could not be listed
	Actions []Action
}

// Reconcile runs one pass. The error joins the failures (hosts that could
// not be listed, actions that failed); the Report lists everything done.
func (r *Reconciler) Reconcile(ctx context.Context) (Report, error) {
	return r.pass(ctx, r.grace())
}

// Settle runs one pass in which every transitional row counts as settled
// (no grace): only for when no use case can be in flight, such as a
// control plane's start-up before it serves.
func (r *Reconciler) Settle(ctx context.Context) (Report, error) {
	return r.pass(ctx, 0)
}

func (r *Reconciler) grace() time.Duration {
	if r.Grace <= 0 {
		return 2 * time.Minute
	}
	return r.Grace
}

func (r *Reconciler) pass(ctx context.Context, grace time.Duration) (Report, error) {
	var rep Report
	hosts, err := r.Store.ListHosts(ctx)
	if err != nil {
		return rep, fmt.Errorf("reconciler: list hosts: %w", err)
	}
	var errs []error
	for _, h := range hosts {
		if h.Status == store.HostUnreachable {
			continue
		}
		if err := r.host(ctx, h.ID, grace, &rep); err != nil {
			rep.Skipped = append(rep.Skipped, h.ID)
			errs = append(errs, err)
			continue
		}
		rep.Hosts++
	}
	for _, a := range rep.Actions {
		if a.Err != nil {
			errs = append(errs, a.Err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return rep, fmt.Errorf("reconciler: %w", err)
	}
	return rep, nil
}

// host reconciles one host; an error means it was skipped.
func (r *Reconciler) host(ctx context.Context, hostID string, grace time.Duration, rep *Report) error {
	// Store first, host second (see the package comment).
	rows, err := r.Store.ListSandboxesByHost(ctx, hostID)
	if err != nil {
		return fmt.Errorf("host %s: list sandboxes in store: %w", hostID, err)
	}
	c, err := r.Hosts.Get(ctx, hostID)
	if err != nil {
		return fmt.Errorf("host %s: %w", hostID, err)
	}
	onHost, err := c.ListSandboxes(ctx)
	if err != nil {
		return fmt.Errorf("host %s: list sandboxes: %w", hostID, err)
	}
	known := make(map[string]store.Sandbox, len(rows))
	for _, s := range rows {
		known[s.ID] = s
	}
	now := r.now()
	present := make(map[string]bool, len(onHost))
	for _, rt := range onHost {
		present[rt.SandboxID] = true
		if rt.State == string(sandbox.StateStopped) {
			continue // already gone in all but name
		}
		s, ok := known[rt.SandboxID]
		if ok && s.Status != sandbox.StateStopped {
			r.settle(ctx, c, hostID, s, sandbox.State(rt.State), now.Sub(s.UpdatedAt) >= grace, rep)
			continue
		}
		reason, stray := r.stray(ctx, hostID, rt.SandboxID)
		if !stray {
			continue
		}
		a := Action{HostID: hostID, SandboxID: rt.SandboxID, Kind: "destroy", Reason: reason}
		if err := c.DestroySandbox(ctx, rt.SandboxID); err != nil {
			a.Err = fmt.Errorf("destroy %s on host %s: %w", rt.SandboxID, hostID, err)
		}
		r.record(rep, a)
	}
	for _, s := range rows {
		if present[s.ID] {
			continue
		}
		to, ok := lost(s, now.Sub(s.UpdatedAt) >= grace)
		if !ok {
			continue
		}
		reason := fmt.Sprintf("host %s no longer runs this sandbox (was %s)", hostID, s.Status)
		a := Action{HostID: hostID, SandboxID: s.ID, Kind: string(to), Reason: reason}
		_, err := service.SetStatus(ctx, r.Store, sandbox.Reconciler(), s.ID, []sandbox.State{s.Status}, to, reason)
		switch {
		case errors.Is(err, store.ErrStaleState), errors.Is(err, store.ErrNotFound):
			continue // changed or gone since we read it: its use case decided
		case err != nil:
			a.Err = fmt.Errorf("mark %s %s: %w", s.ID, to, err)
		}
		r.record(rep, a)
	}
	return nil
}

// stray re-reads a sandbox the host runs but the store snapshot did not
// place there, and says whether to destroy it.
func (r *Reconciler) stray(ctx context.Context, hostID, id string) (string, bool) {
	s, err := r.Store.GetSandboxByID(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "unknown to the store", true
	case err != nil:
		r.logger().Warn("reconciler: cannot re-read sandbox; leaving it", "sandbox", id, "host", hostID, "err", err)
		return "", false
	case s.Status == sandbox.StateStopped:
		return "stopped in the store", true
	case s.Host != hostID && s.Host != "":
		return "placed on host " + s.Host + " in the store", true
	}
	return "", false // created since the snapshot: not a stray
}

// settle makes the store agree with a sandbox the host has in state h
// (see the package comment). old: the row's last change is past Grace.
func (r *Reconciler) settle(ctx context.Context, c service.HostClient, hostID string, s store.Sandbox, h sandbox.State, old bool, rep *Report) {
	if h == s.Status || h.Transitional() || s.Status == sandbox.StateError {
		return // agreed, the host is busy with it, or an operator decides
	}
	if s.Status.Transitional() && !old {
		return // its use case may still be finishing it
	}
	if s.Status == sandbox.StateStopping {
		// A destroy cut short: finish it; the row follows on a later pass.
		a := Action{HostID: hostID, SandboxID: s.ID, Kind: "destroy", Reason: "destroy cut short (was stopping)"}
		if err := c.DestroySandbox(ctx, s.ID); err != nil {
			a.Err = fmt.Errorf("destroy %s on host %s: %w", s.ID, hostID, err)
		}
		r.record(rep, a)
		return
	}
	if !sandbox.Reconciler().Allows(s.Status, h) {
		return
	}
	reason := ""
	if h == sandbox.StateError {
		reason = fmt.Sprintf("host %s reports the sandbox in error (was %s)", hostID, s.Status)
	}
	a := Action{HostID: hostID, SandboxID: s.ID, Kind: string(h), Reason: fmt.Sprintf("host %s reports %s (store had %s)", hostID, h, s.Status)}
	_, err := service.SetStatus(ctx, r.Store, sandbox.Reconciler(), s.ID, []sandbox.State{s.Status}, h, reason)
	switch {
	case errors.Is(err, store.ErrStaleState), errors.Is(err, store.ErrNotFound):
		return // changed or gone since we read it: its use case decided
	case err != nil:
		a.Err = fmt.Errorf("mark %s %s: %w", s.ID, h, err)
	}
	r.record(rep, a)
}

// lost says what a sandbox the host lacks becomes, if anything (a move of
// sandbox.Reconciler, checked again by the status gate). old: the row's
// last change is past Grace.
func lost(s store.Sandbox, old bool) (sandbox.State, bool) {
	switch {
	case s.Status == sandbox.StateRunning:
		return sandbox.StateStopped, true
	case !old:
		return "", false
	case slices.Contains([]sandbox.State{sandbox.StateCreating, sandbox.StateStopping}, s.Status):
		return sandbox.StateStopped, true
	case slices.Contains([]sandbox.State{sandbox.StatePausing, sandbox.StateResuming}, s.Status):
		return sandbox.StateError, true
	}
	return "", false // paused (expected absent), stopped, error
}

func (r *Reconciler) record(rep *Report, a Action) {
	rep.Actions = append(rep.Actions, a)
	if a.Err != nil {
		r.logger().Error("reconciler: action failed", "host", a.HostID, "sandbox", a.SandboxID, "action", a.Kind, "err", a.Err)
		return
	}
	r.logger().Warn("reconciler: fixed a divergence", "host", a.HostID, "sandbox", a.SandboxID, "action", a.Kind, "reason", a.Reason)
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Reconciler) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// Run reconciles every interval until ctx ends (default 30s).
func (r *Reconciler) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = 30 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
			r.logger().Warn("reconcile pass incomplete", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
