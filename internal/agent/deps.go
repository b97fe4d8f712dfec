package agent

import (
	"context"
	"io"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// The interfaces below are what the sandbox manager consumes. They are
// declared here (consumer side) so the state machine can be tested with
// small fakes where the real component needs a VM, and so the real packages
// (netns, envdclient, image, snapshot) are wired through thin adapters in
// wire.go rather than leaking their types into the manager.

// Network gives each sandbox its own network slot: a namespace with a tap
// for the VM and an address the host can reach the guest at.
type Network interface {
	Setup(ctx context.Context, sandboxID string, opts NetOptions) (NetSlot, error)
	// Teardown removes the slot of sandboxID; idempotent (unknown ID: nil).
	Teardown(ctx context.Context, sandboxID string) error
	// CleanupStale removes slots left by a crashed agent.
	CleanupStale(ctx context.Context) error
	// SetPolicy replaces a slot's egress policy at once.
	SetPolicy(ctx context.Context, sandboxID string, p egress.Policy) error
}

type NetOptions struct {
	Egress egress.Policy
}

// NetSlot is one sandbox's network slot.
type NetSlot struct {
	// Address is the host-reachable address of the guest (an IP; a host:port
	// is accepted too and then used as envd's address verbatim).
	Address string
	TapName string // tap device inside the namespace
	NSPath  string // e.g. /run/netns/hearth-<id>
	DNS     string // optional resolver for the guest (hearth.dns=)
}

// Envd is the in-guest daemon as the manager uses it. One value talks to
// one sandbox.
type Envd interface {
	// Health returns nil once envd answers /health.
	Health(ctx context.Context) error
	// Init sends /init: access token, env vars, default user and workdir,
	// and the host's clock (after resume the guest clock is stale).
	Init(ctx context.Context, req EnvdInit) error
	// Exec runs a process to completion, calling out for each output chunk
	// (in envd's order); it returns the exit code.
	Exec(ctx context.Context, req ExecSpec, out func(stream Stream, p []byte) error) (ExitInfo, error)
	// ReadFile fails with an error wrapping ErrNotFound for a missing file.
	ReadFile(ctx context.Context, path, user string) (io.ReadCloser, error)
	WriteFile(ctx context.Context, path, user string, r io.Reader) error
}

// EnvdDialer returns an Envd for the envd at baseURL (http://host:port)
// that authenticates with accessToken.
type EnvdDialer func(baseURL, accessToken string) Envd

type EnvdInit struct {
	// CurrentToken authenticates /init: the token an envd already has
	// (after a resume), or the boot secret of a freshly booted one.
	CurrentToken string
	AccessToken  string
	EnvVars      map[string]string
	DefaultUser  string
	DefaultDir   string
	Now          time.Time
}

type Stream int

const (
	Stdout Stream = iota + 1
	Stderr
)

type ExecSpec struct {
	Cmd     string
	Args    []string
	Env     map[string]string
	Cwd     string
	User    string
	Timeout time.Duration // 0: none beyond ctx
}

type ExitInfo struct {
	Code  int
	Error string // non-empty when the process did not exit normally
}

// Images locates boot artefacts in the data dir.
type Images interface {
	KernelPath() string
	// InitrdPath returns "" when the images use no initramfs.
	InitrdPath() string
	// RootfsPath is the ext4 image of the base template name.
	RootfsPath(name string) string
	// DefaultUser is "user" when the image has that account, else "root".
	DefaultUser(ctx context.Context, name string) string
}

// ImageLister is implemented by Images that can enumerate their base
// images; the start-up prune of root-disk variants keeps those images'
// variants cached (without it, only templates' variants are kept).
type ImageLister interface {
	BaseImages() []string
}

// Snapshotter pauses and restores VMs (issue 4; internal/sandboxsnap is
// the implementation). When Options.Snapshotter is nil,
// Pause/Resume/CreateSnapshot answer "unimplemented".
//
// Contract, so the manager's state machine stays correct:
//   - PrepareBoot adjusts the config of a machine about to boot so it can
//     be paused later (QEMU: guest RAM in a shared file).
//   - Pause writes the snapshot of m (started with cfg) into dir through
//     staging files renamed into place only when complete; on error the
//     previous snapshot in dir is intact and m is running again.
//   - Pause leaves m stopped on success (the VMM process has exited) and
//     its memory freed.
//   - Restore builds and starts a machine from the snapshot in dir with cfg
//     (same stable disk path, fresh tap); the guest runs, the caller waits
//     for envd. On error it may return a non-nil machine, which the caller
//     stops.
//   - Export copies dir's committed snapshot into a new directory dst (one
//     generation + device state) that Restore accepts: a template's memory.
//   - Remove deletes dir's snapshot files and page-server sockets and the
//     sandbox's RAM file; idempotent.
type Snapshotter interface {
	PrepareBoot(cfg vmm.Config) (vmm.Config, error)
	Pause(ctx context.Context, m vmm.Machine, cfg vmm.Config, dir string) error
	Restore(ctx context.Context, cfg vmm.Config, dir string) (vmm.Machine, error)
	Export(ctx context.Context, dir, dst string) error
	Remove(ctx context.Context, sandboxID, dir string) error
}

// Capturer is implemented by Snapshotters that can capture a running
// machine into a template directory without stopping it for longer than
// the capture itself (sandboxsnap, for QEMU): frozen runs while the guest
// stands still, so the caller's disk clone is of the same instant as the
// memory. errors.ErrUnsupported: the caller pauses, copies and resumes.
type Capturer interface {
	Capture(ctx context.Context, m vmm.Machine, cfg vmm.Config, dst string, frozen func(context.Context) error) (time.Duration, error)
}

// StaleCleaner is implemented by root-disk backends that hold kernel state
// (loop devices, device-mapper targets) a crashed agent may have left
// behind. live holds the IDs of sandboxes whose disks must stay.
type StaleCleaner interface {
	CleanupStale(ctx context.Context, live map[string]bool) error
}

// ImageSizer grows base images smaller than minBytes (sparse), at start-up.
type ImageSizer func(ctx context.Context, minBytes int64) error
