package agent

import (
	"fmt"
	"slices"
)

// State is a sandbox's lifecycle state on this host. The values equal
// store.SandboxStatus so the control plane mirrors them without a table.
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
// resuming, stopping) and from running (the VM died); from error the only
// way on is stopping (destroy retries the cleanup).
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

// transitions lists, for each state, the states it may move to.
var transitions = map[State][]State{
	StateCreating: {StateRunning, StateStopping, StateError},
	StateRunning:  {StatePausing, StateStopping, StateError},
	StatePausing:  {StatePaused, StateRunning, StateError},
	StatePaused:   {StateResuming, StateStopping},
	StateResuming: {StateRunning, StatePaused, StateError},
	StateStopping: {StateStopped, StateError},
	StateStopped:  {},
	StateError:    {StateStopping},
}

// Transitional reports whether s is a state an operation is in the middle of.
func (s State) Transitional() bool {
	switch s {
	case StateCreating, StatePausing, StateResuming, StateStopping:
		return true
	}
	return false
}

// CanTransition reports whether from → to is an edge of the state machine.
func CanTransition(from, to State) bool {
	return slices.Contains(transitions[from], to)
}

// ErrTransition is returned when a sandbox is not in a state the requested
// operation can start from (maps to FAILED_PRECONDITION).
type ErrTransition struct {
	ID       string
	From, To State
}

func (e *ErrTransition) Error() string {
	return fmt.Sprintf("sandbox %s: cannot go from %s to %s", e.ID, e.From, e.To)
}
