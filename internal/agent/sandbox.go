package agent

import (
	"context"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/egressproxy"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/volume"
)

// Spec is what a sandbox is created with. Only the access token and the
// egress policy change afterwards (resume, SetNetwork).
type Spec struct {
	ID           string
	TemplateID   string
	TemplateKind sbx.TemplateKind
	VCPUs        int
	MemoryMB     int
	DiskSizeMB   int // 0: sbx.DefaultDiskSizeMB
	Env          map[string]string
	AccessToken  string
	TimeoutS     int
	Egress       egress.Policy
	// Volumes of this host mounted in the guest (base templates only).
	Volumes []VolumeMount
	// EgressRules are header rules with resolved values (secrets): kept
	// out of sandbox.json, in egress.json (egressrules.go).
	EgressRules []egress.HeaderRule `json:"-"`
	// Internal: the agent's own (a template build's start-command VM).
	// Not listed to the control plane, whose reconciler would destroy a
	// sandbox it never created; a crashed agent's is removed at start-up.
	Internal bool
}

// sameRequest reports whether two create requests ask for the same sandbox,
// so a retried CreateSandbox is answered with the existing one.
func (s Spec) sameRequest(o Spec) bool {
	return s.ID == o.ID && s.TemplateID == o.TemplateID && s.TemplateKind == o.TemplateKind &&
		s.VCPUs == o.VCPUs && s.MemoryMB == o.MemoryMB && s.DiskSizeMB == o.DiskSizeMB &&
		s.AccessToken == o.AccessToken && reflect.DeepEqual(s.Egress, o.Egress) && maps.Equal(s.Env, o.Env) &&
		slices.Equal(s.Volumes, o.Volumes) && reflect.DeepEqual(s.EgressRules, o.EgressRules)
}

// Info is a sandbox as this host reports it.
type Info struct {
	ID           string
	TemplateID   string
	State        sbx.State
	GuestAddr    string // host-reachable guest address (IP); empty unless running
	EnvdAddr     string // host:port of envd; empty unless running
	StartedAt    time.Time
	VCPUs        int
	MemoryMB     int
	DiskSizeMB   int
	Error        string
	AllowNetwork bool
}

// sandbox is one sandbox's state machine.
//
// Locking rules:
//   - op serialises lifecycle operations (create, destroy, pause, resume,
//     snapshot): a one-slot semaphore, so waiting for it honours ctx. The
//     holder is the only goroutine that changes machine, slot, disk and
//     envd, and the only one that moves state out of a stable state.
//   - mu guards every field below it. It is held only to read or write
//     those fields, never across I/O, so List, Exec and the proxy never wait
//     for a slow boot. Acquire op before mu, never the reverse.
//   - Manager.mu (the map) may be held while taking sandbox.mu, never the
//     reverse.
//   - The exit watcher (watchExit) takes only mu: it moves running → error
//     when the machine it watches is still the current one.
type sandbox struct {
	spec   Spec   // immutable
	runDir string // immutable: DATA/sandboxes/<id>
	log    *slog.Logger

	op chan struct{}

	mu      sync.Mutex
	state   sbx.State
	errMsg  string
	machine vmm.Machine   // non-nil while a VMM process may exist
	cfg     vmm.Config    // the config machine was started (or restored) with
	exited  chan struct{} // closed when machine's process has exited
	slot    *NetSlot      // non-nil while a network slot may exist
	// slotGen numbers slot among all slots this agent set up: connections
	// kept alive to the guest belong to one slot (a resume sets up a new
	// namespace, maybe at another address), so their pool is keyed by it.
	slotGen uint64
	disk    *rootfs.Disk   // non-nil once the root disk exists
	volSrv  *volume.Server // serves the guest its volumes while it may run
	// egressProxy applies the egress rules while the guest may run.
	egressProxy *egressproxy.Proxy
	envd        Envd   // non-nil while running
	user        string // default OS user in the guest
	startedAt   time.Time
	pauseFrom   *uint64 // while pausing: the committed snapshot it started from (sandbox.json)
	// resumeAtStart: paused by the agent's shutdown (sandbox.json).
	resumeAtStart bool
}

func newSandbox(spec Spec, runDir string, log *slog.Logger) *sandbox {
	return &sandbox{
		spec:   spec,
		runDir: runDir,
		log:    log.With("sandbox", spec.ID),
		op:     make(chan struct{}, 1),
		state:  sbx.StateCreating,
	}
}

// lock acquires the lifecycle slot or gives up with ctx.
func (s *sandbox) lock(ctx context.Context) error {
	select {
	case s.op <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (s *sandbox) unlock() { <-s.op }

// transition moves the sandbox to `to` when its state is one of from (or
// any state that may move to `to` when from is empty). Exactly one of
// several concurrent callers with the same from wins; the others get
// *sbx.ErrTransition. Every successful transition is logged.
func (s *sandbox) transition(to sbx.State, from ...sbx.State) error {
	s.mu.Lock()
	cur := s.state
	ok := sbx.Host().Allows(cur, to)
	if ok && len(from) > 0 {
		ok = false
		for _, f := range from {
			ok = ok || f == cur
		}
	}
	if !ok {
		s.mu.Unlock()
		return &sbx.ErrTransition{ID: s.spec.ID, From: cur, To: to}
	}
	s.state = to
	if to != sbx.StateError {
		s.errMsg = ""
	}
	s.mu.Unlock()
	s.log.Info("sandbox state", "from", cur, "to", to)
	return nil
}

// fail moves the sandbox to error, recording why.
func (s *sandbox) fail(cause error) {
	s.mu.Lock()
	cur := s.state
	if cur == sbx.StateError || !sbx.Host().Allows(cur, sbx.StateError) {
		s.mu.Unlock()
		return
	}
	s.state = sbx.StateError
	s.errMsg = cause.Error()
	s.mu.Unlock()
	s.log.Error("sandbox state", "from", cur, "to", sbx.StateError, "err", cause)
}

func (s *sandbox) currentState() sbx.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *sandbox) info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := Info{
		ID:           s.spec.ID,
		TemplateID:   s.spec.TemplateID,
		State:        s.state,
		StartedAt:    s.startedAt,
		VCPUs:        s.spec.VCPUs,
		MemoryMB:     s.spec.MemoryMB,
		DiskSizeMB:   s.spec.DiskSizeMB,
		Error:        s.errMsg,
		AllowNetwork: s.spec.Egress.AllowInternet,
	}
	if s.state == sbx.StateRunning && s.slot != nil {
		in.GuestAddr, in.EnvdAddr = guestAddrs(s.slot.Address)
	}
	return in
}
