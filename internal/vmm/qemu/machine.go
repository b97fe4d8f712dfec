package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hearth-sandbox/hearth/internal/vmm"
	"github.com/hearth-sandbox/hearth/internal/vmm/vmmproc"
)

const (
	qmpSockName = "qmp.sock"
	// incomingFD is the descriptor number of the state file in a restoring
	// QEMU (os/exec maps ExtraFiles[0] to fd 3).
	incomingFD = 3
	// snapFDName names the state file passed to QEMU with getfd.
	snapFDName = "hearth-snapshot"
	// ramBlockName is QEMU's name for the guest RAM block: the id of the
	// memory backend.
	ramBlockName = "mem"
)

// Machine is one QEMU process. It implements vmm.Snapshotter.
type Machine struct {
	d       *Driver
	cfg     vmm.Config
	restore *vmm.RestoreSpec // non-nil: start from a snapshot
	// pit keeps the i8254 PIT under TCG: set when restoring a snapshot
	// that was taken with one (see withPIT).
	pit bool

	mu      sync.Mutex // serialises lifecycle calls
	proc    *vmmproc.Process
	qmp     *QMP
	stopped bool
}

var (
	_ vmm.Snapshotter     = (*Machine)(nil)
	_ vmm.RunStater       = (*Machine)(nil)
	_ vmm.LiveSnapshotter = (*Machine)(nil)
)

// QMPSocket returns the path of the machine's QMP socket.
func (m *Machine) QMPSocket() string { return filepath.Join(m.cfg.RunDir, qmpSockName) }

// QMP returns the machine's QMP client (nil before Start).
func (m *Machine) QMP() *QMP {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.qmp
}

// Args returns the QEMU command line (without the binary) for the config.
func (m *Machine) Args() []string {
	cfg := m.cfg
	machine := "microvm,x-option-roms=off,isa-serial=on,rtc=on"
	if m.d.opts.Accel != AccelKVM && !m.pit {
		// QEMU resets the PIT into a periodic mode at 18.2 Hz that a guest
		// using the local APIC timer never stops: ~36 main-loop wake-ups a
		// second per idle VM under TCG. The guest calibrates its APIC timer
		// against the TSC (tsc_early_khz) and does not need it.
		machine += ",pit=off"
	}
	var args []string
	if cfg.MemoryFile != "" {
		machine += ",memory-backend=mem"
		share := "on"
		if m.restore != nil && m.restore.MemoryPrivate {
			share = "off"
		}
		args = append(args, "-object", "memory-backend-file,id=mem,size="+strconv.Itoa(cfg.MemoryMB)+"M,mem-path="+qemuOpt(cfg.MemoryFile)+",share="+share)
	}
	args = append([]string{
		"-name", "hearth-" + cfg.ID,
		"-M", machine,
		"-accel", m.accel(),
	}, args...)
	if m.d.opts.Accel == AccelKVM {
		args = append(args, "-cpu", "host")
	} else {
		args = append(args, "-cpu", tcgCPU)
	}
	args = append(args,
		"-smp", strconv.Itoa(cfg.VCPUs),
		"-m", strconv.Itoa(cfg.MemoryMB)+"M",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", cfg.KernelPath,
		"-append", m.kernelArgs(),
		// append=on: a restored machine continues the same console log.
		"-chardev", "file,id=console,path="+qemuOpt(vmm.ConsoleLog(cfg.RunDir))+",append=on",
		"-serial", "chardev:console",
		"-qmp", "unix:"+qemuOpt(m.QMPSocket())+",server=on,wait=off",
	)
	if cfg.InitrdPath != "" {
		args = append(args, "-initrd", cfg.InitrdPath)
	}
	if cfg.RootDisk != "" {
		format := cfg.RootDiskFormat
		if format == "" {
			format = "raw"
		}
		file := qemuOpt(cfg.RootDisk)
		if fd := m.diskFD(); fd > 0 {
			// An unprivileged QEMU reopens the disk when a migration
			// deactivates and reactivates it (pause, restore, and "cont"
			// after a failed pause); it cannot open the agent's files
			// itself, so it gets a read-write and a read-only descriptor in
			// an fd set to take copies from. Image locking is off: the set
			// keeps both descriptors open, so the read-only one's shared
			// lock would refuse the write lock on reactivation; the agent
			// gives each disk to one VMM anyway.
			args = append(args, "-add-fd", "fd="+strconv.Itoa(fd)+",set=1", "-add-fd", "fd="+strconv.Itoa(fd+1)+",set=1")
			file = "/dev/fdset/1,file.locking=off"
		}
		args = append(args,
			"-drive", "id=root,if=none,file="+file+",format="+format+",cache=writeback,discard=unmap",
			"-device", "virtio-blk-device,drive=root")
	}
	if cfg.TapName != "" {
		args = append(args,
			"-netdev", "tap,id=net0,ifname="+qemuOpt(cfg.TapName)+",script=no,downscript=no,vhost=off",
			"-device", "virtio-net-device,netdev=net0,mac="+cfg.MAC)
	}
	if m.restore != nil {
		// -S: stay paused after the incoming migration so Restore decides.
		args = append(args, "-S", "-incoming", "defer")
	}
	return append(args, confineArgs(cfg.RunAsUID, cfg.RunAsGID)...)
}

// accel is the -accel option. Under TCG the translation cache is bounded
// (tcgCacheMB): QEMU's default of 1 GiB fills with translations of code
// the guest has since dropped (every process a guest starts leaves some)
// and is only reclaimed when full, so a guest that runs commands for a
// minute held ~690 MiB of it and its cgroup (guest RAM + 256 MiB) killed
// it; a bounded cache is flushed and refilled with what is still used.
func (m *Machine) accel() string {
	if m.d.opts.Accel == AccelKVM {
		return AccelKVM
	}
	return m.d.opts.Accel + ",tb-size=" + strconv.Itoa(tcgCacheMB)
}

// tcgCacheMB bounds the TCG translation cache, in MiB.
const tcgCacheMB = 128

// tcgCPU is the guest CPU under TCG: QEMU's default model with ARAT (an
// APIC timer that keeps running in deep C-states). Without ARAT the guest
// kernel marks its only clock event device C3STOP and, with no broadcast
// device on microvm, never leaves periodic mode: every vCPU takes 250
// timer interrupts a second while idle, which under TCG cost an idle guest
// several percent of a host core. With it the kernel runs tickless when
// idle (NO_HZ_IDLE, high-resolution timers).
const tcgCPU = "qemu64,+arat"

// confineArgs are QEMU's own seccomp filter and, for uid > 0, the switch
// to that user once QEMU has opened the tap, disks, kernel, RAM file and
// sockets. QEMU installs the filter before it changes user, so with -runas
// elevateprivileges=deny would kill QEMU at its own setuid; spawn=deny (no
// fork or exec at all) and the dropped capabilities cover that instead.
func confineArgs(uid, gid int) []string {
	if uid <= 0 {
		return []string{"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"}
	}
	return []string{
		"-sandbox", "on,obsolete=deny,spawn=deny,resourcecontrol=deny",
		"-runas", strconv.Itoa(uid) + ":" + strconv.Itoa(gid),
	}
}

// diskFD is the descriptor number of the root disk's read-write copy
// (the read-only one follows it) when QEMU runs unprivileged; 0 otherwise.
// They follow the restore state file, which is incomingFD.
func (m *Machine) diskFD() int {
	if m.cfg.RunAsUID <= 0 || m.cfg.RootDisk == "" {
		return 0
	}
	if m.restore != nil {
		return incomingFD + 1
	}
	return incomingFD
}

// qemuOpt escapes a value inside a QEMU option string (commas are doubled).
func qemuOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func (m *Machine) kernelArgs() string {
	parts := []string{"console=ttyS0"}
	if m.d.opts.TSCKHz > 0 {
		parts = append(parts, "tsc_early_khz="+strconv.FormatInt(m.d.opts.TSCKHz, 10), "tsc=reliable")
	}
	// An idle guest should not wake: no soft-lockup watchdog (an hrtimer
	// every 4 s on every vCPU, and a TCG guest that the host starves of CPU
	// trips it falsely anyway) and no proactive compaction (kcompactd
	// wakes twice a second to check fragmentation). Measured on an idle
	// TCG guest: ~50 -> ~14 VMM wake-ups a second.
	parts = append(parts, "panic=-1", "reboot=t", "nowatchdog", "sysctl.vm.compaction_proactiveness=0")
	if a := strings.TrimSpace(m.cfg.KernelArgs); a != "" {
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// Start implements vmm.Machine.
func (m *Machine) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil {
		return errors.New("qemu: machine already started")
	}
	if err := os.MkdirAll(m.cfg.RunDir, 0o755); err != nil {
		return fmt.Errorf("qemu: run dir: %w", err)
	}
	_ = os.Remove(m.QMPSocket()) // stale from a crash
	logf, err := os.OpenFile(filepath.Join(m.cfg.RunDir, vmm.VMMLogName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("qemu: vmm log: %w", err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(m.d.opts.Binary, m.Args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	var stateFile *os.File
	if m.restore != nil {
		stateFile, err = os.Open(m.restore.StatePath)
		if err != nil {
			return fmt.Errorf("qemu restore: %w", err)
		}
		defer stateFile.Close()
		cmd.ExtraFiles = []*os.File{stateFile}
	}
	if m.diskFD() > 0 {
		for _, flag := range []int{os.O_RDWR, os.O_RDONLY} {
			f, err := os.OpenFile(m.cfg.RootDisk, flag, 0)
			if err != nil {
				return fmt.Errorf("qemu: root disk: %w", err)
			}
			defer f.Close() // the child has its own copy
			cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		}
	}
	proc, err := vmmproc.StartWith(cmd, vmmproc.Options{
		NetNS: m.cfg.NetNS, PIDFile: filepath.Join(m.cfg.RunDir, vmm.PIDFileName), Cgroup: m.cfg.Cgroup,
	})
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	m.proc = proc

	fail := func(err error) error {
		killCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = proc.KillAndWait(killCtx)
		if m.qmp != nil {
			m.qmp.Close()
			m.qmp = nil
		}
		m.stopped = true
		return fmt.Errorf("qemu %s: %w%s", m.cfg.ID, err, m.logTail())
	}
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Stop dialling as soon as QEMU dies (bad arguments, missing tap, ...).
	go func() {
		select {
		case <-proc.Done():
			cancel()
		case <-dialCtx.Done():
		}
	}()
	q, err := DialQMP(dialCtx, m.QMPSocket())
	if err != nil {
		if proc.Exited() {
			err = fmt.Errorf("qemu exited during start: %v", proc.Err())
		}
		return fail(err)
	}
	m.qmp = q
	if m.restore != nil {
		if err := m.incoming(ctx, *m.restore); err != nil {
			return fail(err)
		}
	}
	return nil
}

// incoming loads the migration stream on fd 3 into a -incoming defer QEMU.
func (m *Machine) incoming(ctx context.Context, snap vmm.RestoreSpec) error {
	if err := m.qmp.SetMigrationCapabilities(ctx, map[string]bool{"x-ignore-shared": true}); err != nil {
		return err
	}
	if err := m.qmp.Execute(ctx, "migrate-incoming", map[string]any{"uri": "fd:" + strconv.Itoa(incomingFD)}, nil); err != nil {
		return err
	}
	if err := m.waitIncoming(ctx); err != nil {
		return err
	}
	if snap.Paused {
		return nil
	}
	return m.qmp.Execute(ctx, "cont", nil, nil)
}

// waitIncoming waits until the incoming migration has been loaded: the run
// state leaves "inmigrate".
func (m *Machine) waitIncoming(ctx context.Context) error {
	delay := time.Millisecond
	for {
		st, err := m.qmp.QueryStatus(ctx)
		if err != nil {
			return err
		}
		switch st.Status {
		case "inmigrate":
		case "paused", "prelaunch", "running":
			var mi MigrationInfo
			if err := m.qmp.Execute(ctx, "query-migrate", nil, &mi); err == nil && mi.Status == "failed" {
				return fmt.Errorf("incoming migration failed: %s", mi.ErrorDesc)
			}
			return nil
		default:
			return fmt.Errorf("incoming migration: run state %q", st.Status)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("incoming migration: %w", ctx.Err())
		case <-time.After(delay):
		}
		if delay < 20*time.Millisecond {
			delay *= 2
		}
	}
}

func (m *Machine) logTail() string {
	b, err := os.ReadFile(filepath.Join(m.cfg.RunDir, vmm.VMMLogName))
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		return ""
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 400 {
		s = s[len(s)-400:]
	}
	return " (vmm.log: " + s + ")"
}

// PID implements vmm.Machine.
func (m *Machine) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.PID()
}

// Wait implements vmm.Machine.
func (m *Machine) Wait(ctx context.Context) error {
	m.mu.Lock()
	proc := m.proc
	m.mu.Unlock()
	if proc == nil {
		return errors.New("qemu: machine not started")
	}
	return proc.Wait(ctx)
}

// Stop implements vmm.Machine: QMP quit, SIGKILL to the process group after
// the grace period, then reap. Idempotent.
func (m *Machine) Stop(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil || m.stopped {
		m.stopped = true
		return nil
	}
	if m.qmp != nil && !m.proc.Exited() {
		qctx, cancel := context.WithTimeout(ctx, m.d.opts.StopGrace)
		_ = m.qmp.Execute(qctx, "quit", nil, nil) // the reply may race the exit
		select {
		case <-m.proc.Done():
		case <-qctx.Done():
		}
		cancel()
	}
	if err := m.proc.KillAndWait(ctx); err != nil {
		return fmt.Errorf("qemu stop %s: %w", m.cfg.ID, err)
	}
	if m.qmp != nil {
		m.qmp.Close()
		m.qmp = nil
	}
	_ = os.Remove(m.QMPSocket())
	m.stopped = true
	return nil
}

func (m *Machine) running() (*QMP, error) {
	if m.proc == nil || m.qmp == nil || m.stopped || m.proc.Exited() {
		return nil, errors.New("qemu: machine not running")
	}
	return m.qmp, nil
}

// Pause implements vmm.Snapshotter (QMP stop).
func (m *Machine) Pause(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	q, err := m.running()
	if err != nil {
		return err
	}
	return q.Execute(ctx, "stop", nil, nil)
}

// Resume implements vmm.Snapshotter (QMP cont; also valid after Snapshot,
// from the post-migrate state).
func (m *Machine) Resume(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	q, err := m.running()
	if err != nil {
		return err
	}
	return q.Execute(ctx, "cont", nil, nil)
}

// Snapshot implements vmm.Snapshotter: migrate the paused VM's state into
// snap.StatePath with x-ignore-shared, so RAM backed by a shared MemoryFile
// is not copied (private RAM still is, unless snap.Pages takes it: see
// snapshotSplit). The file is fsynced.
func (m *Machine) Snapshot(ctx context.Context, snap vmm.SnapshotSpec) error {
	if snap.StatePath == "" {
		return errors.New("qemu snapshot: StatePath is required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	q, err := m.running()
	if err != nil {
		return err
	}
	if err := q.Execute(ctx, "stop", nil, nil); err != nil {
		return err
	}
	if err := q.SetMigrationCapabilities(ctx, map[string]bool{"x-ignore-shared": true}); err != nil {
		return err
	}
	f, err := os.OpenFile(snap.StatePath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("qemu snapshot: %w", err)
	}
	defer f.Close()
	if m.privateMemoryFile() != "" && snap.Pages != nil {
		_, err = m.snapshotSplit(ctx, q, f, snap.Pages, nil)
	} else {
		err = m.migrate(ctx, q, f)
	}
	if err != nil {
		return fmt.Errorf("qemu snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("qemu snapshot: sync state: %w", err)
	}
	return f.Close()
}

// migrate runs an outgoing migration of the stopped VM into f.
func (m *Machine) migrate(ctx context.Context, q *QMP, f *os.File) error {
	_, err := m.migrateWith(ctx, q, f, q.WaitMigration)
	return err
}

// migrateWith starts an outgoing migration into f and waits for its end
// with wait.
func (m *Machine) migrateWith(ctx context.Context, q *QMP, f *os.File, wait func(context.Context) (MigrationInfo, error)) (MigrationInfo, error) {
	if err := q.ExecuteWithFile(ctx, "getfd", map[string]any{"fdname": snapFDName}, f); err != nil {
		return MigrationInfo{}, err
	}
	if err := q.Execute(ctx, "migrate", map[string]any{"uri": "fd:" + snapFDName}, nil); err != nil {
		return MigrationInfo{}, err
	}
	return wait(ctx)
}

// snapshotSplit snapshots a machine whose RAM is a private (share=off)
// mapping: x-ignore-shared does not skip private RAM, so QEMU migrates
// into a pipe and splitRAM takes the guest RAM block's pages out of the
// stream (handing them to pages) while the rest, the device state, goes
// to f. The throttle is lifted: a stopped VM's migration is otherwise
// paced by max-bandwidth (128 MiB/s by default). With wait nil the
// machine is already stopped and the migration is awaited with
// WaitMigration; a live snapshot passes its own wait.
func (m *Machine) snapshotSplit(ctx context.Context, q *QMP, f *os.File, pages vmm.PageFunc, wait func(context.Context) (MigrationInfo, error)) (MigrationInfo, error) {
	if err := q.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return MigrationInfo{}, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return MigrationInfo{}, err
	}
	defer pr.Close()
	split := make(chan error, 1)
	go func() {
		err := splitRAM(pr, f, ramBlockName, pages)
		// Unblock a QEMU still writing (it gets EPIPE) when the split stops
		// early; after a clean end this is a no-op.
		pr.Close()
		split <- err
	}()
	if wait == nil {
		wait = q.WaitMigration
	}
	mi, err := m.migrateWith(ctx, q, pw, wait)
	pw.Close()
	if err != nil {
		return mi, errors.Join(err, <-split)
	}
	select {
	case err := <-split:
		return mi, err
	case <-ctx.Done():
		return mi, ctx.Err()
	}
}

// Live snapshot tuning. The guest runs while the first passes copy its
// RAM; QEMU switches over (stops it for the rest and the device state)
// once what is left fits in liveDowntime at the measured bandwidth. A
// guest that dirties memory faster than that never fits: after
// liveConverge the limit is lifted so the next pass is the last.
const (
	liveDowntime = 10 * time.Millisecond
	liveConverge = time.Second
	livePoll     = time.Millisecond
)

// SnapshotLive implements vmm.LiveSnapshotter for a machine restored with
// a private RAM mapping (the only RAM QEMU migrates: a shared RAM file is
// skipped with x-ignore-shared and is the caller's to copy).
func (m *Machine) SnapshotLive(ctx context.Context, snap vmm.SnapshotSpec) (time.Duration, error) {
	if snap.StatePath == "" || snap.Pages == nil {
		return 0, errors.New("qemu live snapshot: StatePath and Pages are required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	q, err := m.running()
	if err != nil {
		return 0, err
	}
	if m.privateMemoryFile() == "" {
		return 0, fmt.Errorf("qemu live snapshot: guest RAM is not a private mapping: %w", errors.ErrUnsupported)
	}
	if err := q.SetMigrationCapabilities(ctx, map[string]bool{"x-ignore-shared": true}); err != nil {
		return 0, err
	}
	if err := q.Execute(ctx, "migrate-set-parameters", map[string]any{"downtime-limit": liveDowntime.Milliseconds()}, nil); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(snap.StatePath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, fmt.Errorf("qemu live snapshot: %w", err)
	}
	defer f.Close()
	var running, done time.Time
	mi, err := m.snapshotSplit(ctx, q, f, snap.Pages, func(ctx context.Context) (MigrationInfo, error) {
		var mi MigrationInfo
		running, mi, err = waitLive(ctx, q)
		done = time.Now()
		return mi, err
	})
	if err != nil {
		// A failed or cut-short migration leaves a running guest running;
		// one that had stopped it is continued by the caller's Resume.
		return 0, fmt.Errorf("qemu live snapshot: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("qemu live snapshot: %w", err)
	}
	// The guest was still running when the last poll before the end sent
	// its query: counting from there never undercounts the standstill
	// (it overcounts by at most the poll period and a round trip). QEMU's
	// own count (stop to migration end) is used where it is longer.
	return max(time.Since(running), time.Since(done)+time.Duration(mi.Downtime)*time.Millisecond), nil
}

// waitLive polls a live migration until it completes, more often than
// WaitMigration (every poll's delay is standstill once QEMU has switched
// over), lifting the downtime limit after liveConverge. running is when
// the last query that found the migration still active was sent (the
// guest ran until then at least).
func waitLive(ctx context.Context, q *QMP) (running time.Time, mi MigrationInfo, err error) {
	converge := time.NewTimer(liveConverge)
	defer converge.Stop()
	tick := time.NewTicker(livePoll)
	defer tick.Stop()
	running = time.Now()
	for {
		sent := time.Now()
		mi = MigrationInfo{}
		if err := q.Execute(ctx, "query-migrate", nil, &mi); err != nil {
			return running, mi, err
		}
		switch mi.Status {
		case "completed":
			return running, mi, nil
		case "failed", "cancelled":
			return running, mi, fmt.Errorf("migration %s: %s", mi.Status, mi.ErrorDesc)
		case "setup", "active":
			running = sent
		}
		select {
		case <-ctx.Done():
			// Cancel so the guest is not left migrating (or stopped by a
			// switchover that then has nowhere to write).
			_ = q.Execute(context.WithoutCancel(ctx), "migrate_cancel", nil, nil)
			return running, mi, fmt.Errorf("migration %s: %w", mi.Status, ctx.Err())
		case <-converge.C:
			if err := q.Execute(ctx, "migrate-set-parameters", map[string]any{"downtime-limit": int64(60_000)}, nil); err != nil {
				return running, mi, err
			}
		case <-tick.C:
		}
	}
}

// privateMemoryFile is the file mapped copy-on-write as guest RAM, or "".
func (m *Machine) privateMemoryFile() string {
	if m.restore != nil && m.restore.MemoryPrivate {
		return m.cfg.MemoryFile
	}
	return ""
}

// PrivateMemoryFile returns the file this machine maps copy-on-write as
// guest RAM (memory-backend-file share=off), or "" when its RAM is shared
// (written through to Config.MemoryFile) or anonymous.
func (m *Machine) PrivateMemoryFile() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.privateMemoryFile()
}

// Adopt implements vmm.Adopter: it takes over the QEMU process pid started
// (by an earlier agent) for cfg, reconnecting to its QMP socket. The pid is
// trusted only when its command line names cfg's QMP socket: pids are
// reused.
func (d *Driver) Adopt(ctx context.Context, cfg vmm.Config, pid int) (vmm.Snapshotter, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	m := &Machine{d: d, cfg: cfg}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, fmt.Errorf("qemu adopt %s: pid %d: %w", cfg.ID, pid, err)
	}
	if !strings.Contains(string(cmdline), "unix:"+qemuOpt(m.QMPSocket())+",") {
		return nil, fmt.Errorf("qemu adopt %s: pid %d is not this machine's QEMU", cfg.ID, pid)
	}
	proc, err := vmmproc.Adopt(pid, filepath.Join(cfg.RunDir, vmm.PIDFileName))
	if err != nil {
		return nil, fmt.Errorf("qemu adopt %s: %w", cfg.ID, err)
	}
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	q, err := DialQMP(dialCtx, m.QMPSocket())
	if err != nil {
		// Not ours to kill: the caller decides what a VM it cannot drive becomes.
		return nil, fmt.Errorf("qemu adopt %s: %w", cfg.ID, err)
	}
	m.proc, m.qmp = proc, q
	if path, ok := privateMemFromCmdline(string(cmdline)); ok {
		// A restored machine maps its RAM copy-on-write: its next
		// snapshot must take the pages out of the stream again.
		m.cfg.MemoryFile = path
		m.restore = &vmm.RestoreSpec{MemoryPath: path, MemoryPrivate: true}
	}
	return m, nil
}

// privateMemFromCmdline finds, in a QEMU command line as /proc/PID/cmdline
// holds it, a memory-backend-file mapped with share=off and returns its
// mem-path.
func privateMemFromCmdline(cmdline string) (string, bool) {
	for _, arg := range strings.Split(cmdline, "\x00") {
		if !strings.HasPrefix(arg, "memory-backend-file,") {
			continue
		}
		// Options are comma-separated; a literal comma is doubled.
		opts := strings.Split(strings.ReplaceAll(arg, ",,", "\x00"), ",")
		path, private := "", false
		for _, o := range opts {
			o = strings.ReplaceAll(o, "\x00", ",")
			switch {
			case strings.HasPrefix(o, "mem-path="):
				path = strings.TrimPrefix(o, "mem-path=")
			case o == "share=off":
				private = true
			}
		}
		return path, private && path != ""
	}
	return "", false
}

// GuestRunning implements vmm.RunStater (QMP query-status).
func (m *Machine) GuestRunning(ctx context.Context) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	q, err := m.running()
	if err != nil {
		return false, err
	}
	st, err := q.QueryStatus(ctx)
	if err != nil {
		return false, err
	}
	return st.Status == "running", nil
}
