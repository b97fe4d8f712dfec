// Package vmm defines the virtual machine monitor interface the host agent
// drives. Two drivers implement it: vmm/qemu (microvm machine, TCG or KVM)
// and vmm/firecracker (KVM hosts, HTTP API on a unix socket). vmm/auto picks
// one by probing the host; vmm/vmmproc holds the process handling (own
// process group, network namespace, pid file) both drivers share.
//
// Callers decide on a driver's Capabilities, never on its Name. A new
// driver declares them and must pass the conformance suite in vmm/vmmtest.
//
// Files a driver writes in Config.RunDir (other packages may read them):
//
//	console.log  the guest's serial console (appended to across restores)
//	vmm.log      the VMM's own stdout/stderr
//	vmm.pid      the VMM's pid (removed when the process has been reaped)
//	qmp.sock / api.sock  the control socket (qemu / firecracker)
package vmm

import (
	"context"
	"errors"
	"path/filepath"
	"time"
)

// ErrUnsupported is returned (wrapped, with the reason and the fix) by a
// driver's Probe when the host cannot run it.
var ErrUnsupported = errors.New("vmm unsupported on this host")

// Config describes one microVM. Paths are absolute.
type Config struct {
	ID         string // sandbox ID
	RunDir     string // per-VM directory for sockets, logs, pid files (driver-owned contents)
	KernelPath string // uncompressed vmlinux (PVH / Firecracker boot)
	InitrdPath string // optional
	KernelArgs string // appended to the driver's own console/tsc arguments

	RootDisk       string // path to the root disk image (Firecracker: seen at a fixed path in the VMM's own mount namespace, see vmm/firecracker)
	RootDiskFormat string // "raw" or "qcow2" (qcow2: QEMU only)

	VCPUs    int
	MemoryMB int

	// NetNS is the path of the network namespace the VMM process runs in
	// (e.g. /run/netns/hearth-s3). Empty: the caller's namespace.
	NetNS   string
	TapName string // tap device inside NetNS; empty: no network device
	MAC     string // guest MAC

	// MemoryFile, when set, backs guest RAM with this file (QEMU
	// memory-backend-file share=on) so snapshots can reference it.
	// Firecracker ignores it (it writes memory in Snapshot).
	MemoryFile string

	// Confinement. RunAsUID > 0 runs the VMM as that uid/gid once it has
	// opened its devices and files (QEMU: -runas); Cgroup, when set, gets
	// the VMM process before it boots the guest.
	RunAsUID, RunAsGID int
	// Not saved with the config (the agent records it for crash
	// recovery): an adopted VMM is in its cgroup already.
	Cgroup Cgroup `json:"-"`
}

// Cgroup is where a VMM process is put (internal/cgroup implements it).
type Cgroup interface {
	Add(pid int) error
}

// Machine is one running (or runnable) VM.
type Machine interface {
	// Start launches the VMM and boots the guest; it returns once the VMM
	// process is running (not when the guest is ready: the caller polls envd).
	Start(ctx context.Context) error
	// Stop kills the VMM process and waits for it; idempotent.
	Stop(ctx context.Context) error
	// Wait blocks until the VMM process exits.
	Wait(ctx context.Context) error
	// PID of the VMM process (0 before Start).
	PID() int
}

// Driver creates machines of one kind.
type Driver interface {
	// Name is for logs, doctor output and probing ("qemu" or
	// "firecracker"); behaviour is decided on Capabilities, never on it.
	Name() string
	// Capabilities says what the driver's machines can do and how.
	Capabilities() Capabilities
	// Probe reports whether this host can run the driver; the error says what
	// is missing and how to fix it.
	Probe(ctx context.Context) error
	NewMachine(cfg Config) (Machine, error)
}

// MemoryModel is how a driver's guest memory is kept while running and
// saved in, and restored from, a snapshot.
type MemoryModel int

const (
	// MemoryNoSnapshot: the machines cannot be snapshotted (the zero value,
	// so a driver that declares nothing gets no pause/resume).
	MemoryNoSnapshot MemoryModel = iota
	// MemorySharedFile: guest RAM is a shared mapping of Config.MemoryFile;
	// Snapshot writes only the device state, the caller saves the file, and
	// Restore maps a complete file again, shared or (PrivateRestore)
	// copy-on-write; a copy-on-write machine's Snapshot hands its pages to
	// SnapshotSpec.Pages. QEMU.
	MemorySharedFile
	// MemoryVMMWritten: guest RAM is the VMM's own; Snapshot writes it to
	// SnapshotSpec.MemoryPath (see DiffSnapshots), and Restore loads it from
	// a file or a userfaultfd page server (see LazyRestore). Firecracker.
	MemoryVMMWritten
)

func (m MemoryModel) String() string {
	switch m {
	case MemorySharedFile:
		return "shared-file"
	case MemoryVMMWritten:
		return "vmm-written"
	}
	return "none"
}

// Capabilities declare a driver's behaviour so that callers (the host
// agent's snapshotter) ask what a driver can do, never which one it is.
type Capabilities struct {
	// Memory is how guest memory is kept, saved and restored.
	Memory MemoryModel
	// DiffSnapshots: Snapshot can write only the pages dirtied since the
	// last snapshot (SnapshotSpec.Diff, RestoreSpec.TrackDirtyPages).
	DiffSnapshots bool
	// LazyRestore: Restore can fault memory in from a userfaultfd page
	// server (RestoreSpec.UffdSocket) instead of loading it first.
	LazyRestore bool
	// PrivateRestore: Restore can map memory copy-on-write
	// (RestoreSpec.MemoryPrivate).
	PrivateRestore bool
	// SnapshotFormat names the format of the state Snapshot writes: a
	// snapshot restores only on a driver with the same format. (Equal to
	// the driver names, which templates recorded before capabilities.)
	SnapshotFormat string
}

// Snapshotter is implemented by machines that can be frozen and saved (both
// drivers' machines do). It is separate from Machine so code that only boots
// and destroys VMs need not care.
//
// A pause in the sandbox sense is Pause + Snapshot + Stop; a resume is
// Restorer.Restore. The guest clock is frozen while paused: the caller
// resyncs it (e.g. through envd) after a resume.
type Snapshotter interface {
	Machine
	// Pause freezes the vCPUs; the VMM process keeps running. Idempotent.
	Pause(ctx context.Context) error
	// Resume continues a paused (not snapshotted-and-stopped) machine.
	Resume(ctx context.Context) error
	// Snapshot writes the state of a paused machine to the paths in snap.
	// The machine stays paused; Stop it to free its CPU and memory.
	Snapshot(ctx context.Context, snap SnapshotSpec) error
}

// LiveSnapshotter is implemented by machines that can hand out guest memory
// while the guest still runs (QEMU with a private RAM mapping: a precopy
// migration), so a running machine stands still only for the last pass.
type LiveSnapshotter interface {
	// SnapshotLive writes what Snapshot with snap.Pages writes, but starts
	// on a running machine and hands pages out while the guest runs; the
	// guest is stopped only for the last pass and the device state. A page
	// the guest wrote after it was handed out is handed out again (the
	// last copy wins). The machine is left stopped, as after Pause (Resume
	// continues it); stopped is how long the guest had been standing still
	// when SnapshotLive returned.
	SnapshotLive(ctx context.Context, snap SnapshotSpec) (stopped time.Duration, err error)
}

// SnapshotSpec names where a snapshot is written. The snapshot storage
// format (headers, generations) is the caller's business: drivers only read
// and write these files.
type SnapshotSpec struct {
	// StatePath receives the vCPU and device state (QEMU: a migration
	// stream; Firecracker: its snapshot file). Small.
	StatePath string
	// MemoryPath receives guest memory (Firecracker). QEMU ignores it: its
	// memory already lives in Config.MemoryFile and is skipped with
	// x-ignore-shared (without a MemoryFile, QEMU writes RAM into StatePath).
	MemoryPath string
	// Pages (QEMU, a machine restored with RestoreSpec.MemoryPrivate)
	// receives every page of guest RAM while the state is written, instead
	// of the state stream: StatePath then holds device state only, as for
	// a shared RAM file, and restores with the pages in a file again.
	Pages PageFunc
	// Diff asks for only the pages dirtied since the last snapshot
	// (Firecracker "Diff" snapshots; needs dirty page tracking).
	Diff bool
}

// PageFunc receives the guest memory page at byte offset off (data nil: an
// all-zero page). data is only valid during the call. Pages come in no
// promised order.
type PageFunc func(off int64, data []byte) error

// RestoreSpec says where a restored machine's state and memory come from.
type RestoreSpec struct {
	StatePath string
	// MemoryPath is the file holding guest memory. QEMU maps it as guest RAM
	// (defaults to Config.MemoryFile); Firecracker loads it with the File
	// backend.
	MemoryPath string
	// UffdSocket (Firecracker): serve memory through a userfaultfd page
	// server listening on this unix socket (the Uffd backend) instead of
	// MemoryPath.
	UffdSocket string
	// MemoryPrivate (QEMU): map MemoryPath copy-on-write (share=off) so the
	// file is never modified; one template file then serves many sandboxes.
	// x-ignore-shared does not skip such RAM: the next Snapshot hands its
	// pages to SnapshotSpec.Pages (or, without, writes them into the state
	// stream).
	MemoryPrivate bool
	// TrackDirtyPages (Firecracker): enable dirty tracking so the next
	// snapshot can be a Diff.
	TrackDirtyPages bool
	// Paused leaves the guest paused after the restore (default: running).
	Paused bool
}

// Restorer is implemented by drivers that can start a machine from a
// snapshot instead of booting (both drivers do). cfg must describe the same
// machine shape (vCPUs, memory, devices) as the snapshotted one; NetNS,
// TapName, RunDir and RootDisk may differ as long as the guest sees the same
// devices.
type Restorer interface {
	Restore(ctx context.Context, cfg Config, snap RestoreSpec) (Snapshotter, error)
}

// Adopter is implemented by drivers that can take over a machine that an
// earlier agent process started and that is still running (the agent
// crashed or restarted; VMM processes run in their own session and outlive
// it). cfg is the config the machine was started or restored with; pid is
// its VMM process. The driver checks that pid really is that machine's VMM.
type Adopter interface {
	Adopt(ctx context.Context, cfg Config, pid int) (Snapshotter, error)
}

// RunStater is implemented by machines that can tell whether their guest
// is executing: a crash-recovering agent must know whether a restored
// guest was ever continued (its disk may then be newer than its snapshot).
type RunStater interface {
	GuestRunning(ctx context.Context) (bool, error)
}

// ProbeResult records one driver probe, for doctor output and logs.
type ProbeResult struct {
	Driver  string // e.g. "firecracker", "qemu-kvm", "qemu-tcg"
	Err     error  // nil: usable
	Elapsed time.Duration
}

// Well-known file names inside Config.RunDir.
const (
	ConsoleLogName = "console.log"
	VMMLogName     = "vmm.log"
	PIDFileName    = "vmm.pid"
)

// ConsoleLog returns the path of the guest serial console log of a VM.
func ConsoleLog(runDir string) string { return filepath.Join(runDir, ConsoleLogName) }
