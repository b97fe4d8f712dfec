// Package sandbox is the one home of the sandbox contract shared by the
// control plane and the host agent: the lifecycle states, which moves
// between them each side may make, the shape of a sandbox (vCPUs, memory,
// disk) with its defaults and bounds, and the template kinds.
//
// It is a leaf: it imports nothing of hearth, so both sides (and the wire
// mapping between them) can depend on it without depending on each other.
package sandbox

import (
	"fmt"
	"slices"
)

// State is a sandbox's lifecycle state. The host agent and the control
// plane use the same values; the store persists them as they are.
//
//	creating ──► running ──► pausing ──► paused ──► resuming ──► running
//	   │            │           │  ▲        │          │  │
//	   │            │           └──┘(failed │          │  └─► paused (failed resume:
//	   │            │            pause: VM  │          │       snapshot intact)
//	   │            │            still runs)│          │
//	   └────────────┴──────► stopping ◄─────┴──────────┘
//	                            │
//	                            ▼
//	                         stopped
//
// error is reachable from every transitional state (creating, pausing,
// resuming, stopping) and, on the host, from running (the VM died); from
// error the only way on is stopping (destroy retries the cleanup).
type State string

const (
	StateCreating State = "creating"
	StateRunning  State = "running"
	StatePausing  State = "pausing"
	StatePaused   State = "paused"
	StateResuming State = "resuming"
	StateStopping State = "stopping"
	StateStopped  State = "stopped"
	StateError    State = "error"
)

// States lists every state, in lifecycle order.
func States() []State {
	return []State{StateCreating, StateRunning, StatePausing, StatePaused, StateResuming, StateStopping, StateStopped, StateError}
}

// Transitional reports whether s is a state an operation is in the middle of.
func (s State) Transitional() bool {
	switch s {
	case StateCreating, StatePausing, StateResuming, StateStopping:
		return true
	}
	return false
}

// Table lists, for each state, the states it may move to.
type Table map[State][]State

// Allows reports whether from → to is an edge of the table.
func (t Table) Allows(from, to State) bool { return slices.Contains(t[from], to) }

// Host is the host agent's state machine: one sandbox on one host.
// Unlike the control plane, a host may abandon a create (creating →
// stopping) and sees a VM die under a running sandbox (running → error).
func Host() Table {
	return Table{
		StateCreating: {StateRunning, StateStopping, StateError},
		StateRunning:  {StatePausing, StateStopping, StateError},
		StatePausing:  {StatePaused, StateRunning, StateError},
		StatePaused:   {StateResuming, StateStopping},
		StateResuming: {StateRunning, StatePaused, StateError},
		StateStopping: {StateStopped, StateError},
		StateStopped:  {},
		StateError:    {StateStopping},
	}
}

// ControlPlane is the moves the control plane's use cases make on a
// sandbox's stored status: each use case enters a transitional state with
// a compare-and-set, then leaves it for its target, back where it came
// from (the host refused without touching the VM) or error. A destroy may
// overtake a create, pause or resume in flight (or cut short by a crash):
// the host serialises it after that operation.
func ControlPlane() Table {
	return Table{
		StateCreating: {StateRunning, StateError, StateStopping},
		StateRunning:  {StatePausing, StateStopping},
		StatePausing:  {StatePaused, StateRunning, StateError, StateStopping},
		StatePaused:   {StateResuming, StateStopping},
		StateResuming: {StateRunning, StatePaused, StateError, StateStopping},
		StateStopping: {StateStopped, StateError},
		StateStopped:  {},
		StateError:    {StateStopping},
	}
}

// Reconciler is the moves the reconciler makes. On a sandbox its host no
// longer runs: running, creating and stopping sandboxes are over
// (stopped); a pause or resume cut short may have left a snapshot, so an
// operator decides (error). Paused sandboxes are expected to be absent.
// On a sandbox its host reports in a settled state the store disagrees
// with (a use case cut short by a crash, or a host that paused it, kept
// it in error or recovered it): the store takes the host's state.
func Reconciler() Table {
	return Table{
		StateRunning:  {StateStopped, StatePaused, StateError},
		StateCreating: {StateStopped, StateRunning, StateError},
		StateStopping: {StateStopped},
		StatePausing:  {StateError, StatePaused, StateRunning},
		StateResuming: {StateError, StateRunning, StatePaused},
		StatePaused:   {StateRunning, StateError},
	}
}

// ErrTransition is a move the table does not allow (the host maps it to
// FAILED_PRECONDITION, the control plane to a conflict).
type ErrTransition struct {
	ID       string
	From, To State
}

func (e *ErrTransition) Error() string {
	return fmt.Sprintf("sandbox %s: cannot go from %s to %s", e.ID, e.From, e.To)
}

// TemplateKind is what a sandbox starts from.
type TemplateKind string

const (
	KindBase     TemplateKind = "base"     // boots a kernel + root filesystem image
	KindSnapshot TemplateKind = "snapshot" // restores frozen VM state
)

// Valid reports whether k is a known kind.
func (k TemplateKind) Valid() bool { return k == KindBase || k == KindSnapshot }

// DefaultDiskSizeMB is the root disk size of a sandbox that asks for none.
// vCPUs and memory default to the template's.
const DefaultDiskSizeMB = 20480

// Shape is the resources a sandbox gets.
type Shape struct {
	VCPUs      int
	MemoryMB   int
	DiskSizeMB int
}

// WithDefaults fills the fields a request may leave zero (the disk size).
func (s Shape) WithDefaults() Shape {
	if s.DiskSizeMB == 0 {
		s.DiskSizeMB = DefaultDiskSizeMB
	}
	return s
}

// Range is an inclusive bound; Max 0 is unbounded above.
type Range struct{ Min, Max int }

// Limits bound each field of a Shape.
type Limits struct{ VCPUs, MemoryMB, DiskSizeMB Range }

// Public is what the control plane's callers may ask for (the public
// contract: out of bounds is a 400 naming the field).
func Public() Limits {
	return Limits{VCPUs: Range{1, 16}, MemoryMB: Range{128, 65536}, DiskSizeMB: Range{1024, 1048576}}
}

// HostLimits is what a host agent accepts: everything Public allows, plus
// the small disks and memory its own tests boot quickly; it refuses only
// shapes no VMM could run.
func HostLimits() Limits {
	return Limits{VCPUs: Range{1, 64}, MemoryMB: Range{64, 0}, DiskSizeMB: Range{1, 0}}
}

// Validate is the one check of a shape against limits. The error, a
// *FieldError, names the first field out of bounds.
func (s Shape) Validate(l Limits) error {
	for _, f := range []struct {
		name string
		v    int
		r    Range
	}{
		{"vcpus", s.VCPUs, l.VCPUs},
		{"memory_mb", s.MemoryMB, l.MemoryMB},
		{"disk_size_mb", s.DiskSizeMB, l.DiskSizeMB},
	} {
		if err := f.r.check(f.name, f.v); err != nil {
			return err
		}
	}
	return nil
}

func (r Range) check(field string, v int) error {
	if r.Max == 0 {
		if v < r.Min {
			return &FieldError{Field: field, Msg: fmt.Sprintf("must be at least %d, got %d", r.Min, v)}
		}
		return nil
	}
	return InRange(field, v, r.Min, r.Max)
}

// InRange checks one bounded field.
func InRange(field string, v, lo, hi int) error {
	if v < lo || v > hi {
		return &FieldError{Field: field, Msg: fmt.Sprintf("must be between %d and %d, got %d", lo, hi, v)}
	}
	return nil
}

// FieldError is a value out of the contract's bounds.
type FieldError struct {
	Field, Msg string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }
