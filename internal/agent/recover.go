package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// Crash recovery. VMM processes run in their own session (vmmproc), so
// they outlive an agent that is killed; sandbox.json records each
// sandbox's state before every lifecycle step that can leave it half done
// (a write-ahead record), with the machine's config and, for a pause, the
// snapshot it started from. At start-up the agent reads those records and,
// for each sandbox, finishes or rolls back what was in flight:
//
//	recorded   VMM alive                          VMM gone
//	running    adopt it: running                  error, disk and snapshot kept
//	pausing    committed: stop VM → paused        committed: paused
//	           not committed: continue → running  not committed: error, kept
//	resuming   guest continued: adopt → running   error, kept (the guest may have
//	           never continued: stop → paused     written to its disk after the snapshot)
//	paused     -                                  paused
//	error      stopped                            error (as recorded)
//	creating, stopping: the operation's caller saw it fail; removed.
//
// "Committed" compares the snapshot's sequence number with the one
// recorded when the pause began: snapshots are committed by a rename, so a
// pause either produced a complete new snapshot or left the previous one.

// NetAdopter is implemented by networks that can take over the slot of a
// sandbox whose VM survived an agent restart; vmmPID is that VM's process,
// which is inside the slot's namespace.
type NetAdopter interface {
	Adopt(ctx context.Context, sandboxID string, vmmPID int) (NetSlot, error)
}

// SnapshotRecovery is implemented by snapshotters that can tell what a
// crashed pause left: the committed snapshot's sequence number, and the
// release of a stopped VM's memory.
type SnapshotRecovery interface {
	// CommittedSeq returns the sequence number of dir's committed snapshot;
	// ok is false when dir holds none.
	CommittedSeq(dir string) (seq uint64, ok bool)
	// ReleaseMemory frees what a stopped machine of sandboxID held in memory
	// (QEMU: its RAM file).
	ReleaseMemory(sandboxID string)
	// ServedByPageServer reports whether the machine started with cfg had
	// its memory served by a page server of the agent that restored it
	// (a lazy restore): that server died with the agent, so the VM cannot
	// be adopted.
	ServedByPageServer(cfg vmm.Config) bool
}

// adoptTimeout bounds reaching an adopted guest's envd: it was running a
// moment ago, so it answers at once or not at all.
const adoptTimeout = 30 * time.Second

// recover runs at start-up (see NewManager).
func (m *Manager) recover(ctx context.Context) error {
	entries, err := os.ReadDir(m.sandboxesDir())
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	live := map[string]bool{}
	for _, e := range entries {
		if !e.IsDir() || !validID.MatchString(e.Name()) {
			continue
		}
		id, dir := e.Name(), m.runDir(e.Name())
		md, err := readMeta(dir)
		sb := newSandbox(md.Spec, dir, m.log)
		sb.spec.ID = id
		rules, rerr := readEgressRules(dir)
		if rerr != nil {
			m.log.Warn("sandbox egress rules unreadable: its guest's HTTPS fails (no egress proxy)", "sandbox", id, "err", rerr)
		}
		sb.spec.EgressRules = rules
		sb.startedAt = md.StartedAt
		internal := err == nil && md.Spec.Internal
		switch {
		case internal:
			m.killVMM(md, dir)
			if err := m.cleanup(ctx, sb); err != nil {
				return fmt.Errorf("agent: clean a crashed build's sandbox %s: %w", id, err)
			}
			m.log.Info("removed a crashed build's sandbox", "sandbox", id)
			continue
		case err == nil && md.State == sbx.StatePaused && m.d.Snapshots != nil && exists(snapshotDir(dir)):
			sb.state, sb.resumeAtStart = sbx.StatePaused, md.ResumeAtStart
			m.log.Info("re-adopted paused sandbox", "sandbox", id)
		case err == nil && md.State == sbx.StateError:
			// Recorded in error with its disk kept (e.g. a pause that
			// failed at shutdown): it stays so, listed with its reason,
			// until destroyed.
			m.killVMM(md, dir)
			sb.state, sb.errMsg = sbx.StateError, md.Error
			m.log.Warn("re-adopted sandbox in error (disk kept until destroyed)", "sandbox", id, "error", md.Error)
		case err == nil && (md.State == sbx.StateRunning || md.State == sbx.StatePausing || md.State == sbx.StateResuming):
			m.recoverLive(ctx, sb, md)
		default:
			// creating or stopping: the caller saw the operation fail (or
			// retries the destroy, which succeeds on an unknown ID).
			m.killVMM(md, dir)
			if err := m.cleanup(ctx, sb); err != nil {
				return fmt.Errorf("agent: clean stale sandbox %s: %w", id, err)
			}
			m.log.Info("removed stale sandbox of a previous agent", "sandbox", id, "state", md.State)
			continue
		}
		m.sandboxes[id] = sb
		live[id] = true
	}
	m.cleanBuildLeftovers()
	// After the adoptions: every slot not adopted is stale.
	if err := m.d.Net.CleanupStale(ctx); err != nil {
		return fmt.Errorf("agent: clean stale network slots: %w", err)
	}
	m.cleanTemplateLeftovers()
	m.removeCaptureClones(ctx, live)
	if m.d.Cgroups != nil {
		// Groups of sandboxes that are gone; a group still holding a
		// process (a VMM that could not be killed) stays and is logged.
		if err := m.d.Cgroups.Prune(func(id string) bool { return live[id] }); err != nil {
			m.log.Warn("prune stale cgroups", "err", err)
		}
	}
	if c, ok := m.d.Disks.(StaleCleaner); ok {
		if err := c.CleanupStale(ctx, live); err != nil {
			return fmt.Errorf("agent: clean stale root disks: %w", err)
		}
	}
	if m.d.EnsureImageSizes != nil {
		if err := m.d.EnsureImageSizes(ctx, sbx.DefaultDiskSizeMB*MiB); err != nil {
			return fmt.Errorf("agent: ensure image sizes: %w", err)
		}
	}
	m.pruneVariants(ctx)
	return nil
}

// removeCaptureClones deletes the root-disk clones a capture cut short left
// beside the disks of the sandboxes that live on (nothing captures while
// the agent starts; a removed sandbox's disk went with its clone).
func (m *Manager) removeCaptureClones(ctx context.Context, live map[string]bool) {
	dirs := map[string]bool{}
	for id := range live {
		if d, err := m.d.Disks.Lookup(ctx, id); err == nil && d.Path != "" {
			dirs[filepath.Dir(d.Path)] = true
		}
	}
	for dir := range dirs {
		clones, _ := filepath.Glob(filepath.Join(dir, captureClonePrefix+"*"))
		for _, p := range clones {
			if err := os.Remove(p); err != nil {
				m.log.Warn("remove a cut-short capture's disk clone", "file", p, "err", err)
				continue
			}
			m.log.Info("removed a cut-short capture's disk clone", "file", p)
		}
	}
}

// recordedPID is the VMM pid sandbox.json or the VMM's pid file names; 0:
// no VMM was started (or it was reaped by the agent that started it).
func recordedPID(md meta, dir string) int {
	if pid := readPIDFile(filepath.Join(dir, "vm", vmm.PIDFileName)); pid > 0 {
		return pid
	}
	return md.VMMPID
}

// killVMM kills what may be left of a recorded sandbox's VMM.
func (m *Manager) killVMM(md meta, dir string) {
	for _, pid := range []int{md.VMMPID, readPIDFile(filepath.Join(dir, "vm", vmm.PIDFileName))} {
		if pid > 0 {
			killStale(pid, dir)
		}
	}
}

// recoverLive settles a sandbox recorded running, pausing or resuming
// (see the table above). It never deletes: what cannot be brought back
// ends in error with its disk and snapshot kept.
func (m *Manager) recoverLive(ctx context.Context, sb *sandbox, md meta) {
	id := sb.spec.ID
	pid := recordedPID(md, sb.runDir)
	machine := m.adoptVMM(ctx, sb, md, pid)
	settle := func(state sbx.State, how string) {
		sb.state = state
		m.saveMeta(sb)
		m.log.Info("recovered sandbox of a previous agent", "sandbox", id, "recorded", md.State, "now", state, "how", how)
	}
	// paused settles on the committed snapshot: no VM, no memory, no slot.
	paused := func(how string) {
		if machine != nil {
			m.stopAdopted(ctx, sb, machine)
		}
		m.stopSlotServers(sb)
		if sr, ok := m.d.Snapshots.(SnapshotRecovery); ok {
			sr.ReleaseMemory(id)
		}
		_ = m.d.Net.Teardown(ctx, id)
		settle(sbx.StatePaused, how)
	}
	fail := func(cause error) {
		if machine != nil {
			m.stopAdopted(ctx, sb, machine)
		}
		m.stopSlotServers(sb)
		_ = m.d.Net.Teardown(ctx, id)
		sb.state = sbx.StateError
		sb.errMsg = fmt.Sprintf("agent restart: %v; disk and last snapshot kept (destroy the sandbox to free them)", cause)
		m.saveMeta(sb)
		m.log.Error("recovered sandbox of a previous agent in error", "sandbox", id, "recorded", md.State, "err", cause)
	}
	switch md.State {
	case sbx.StateRunning:
		if machine == nil {
			fail(errors.New("its VM exited while the agent was down"))
			return
		}
		// A capture (CreateSnapshot of a running sandbox) cut short stops
		// the guest without a state change: let it run again.
		if rs, ok := machine.(vmm.RunStater); ok {
			if running, err := rs.GuestRunning(ctx); err == nil && !running {
				if sm, ok := machine.(vmm.Snapshotter); ok {
					if err := sm.Resume(ctx); err != nil {
						fail(fmt.Errorf("continue the VM of an unfinished capture: %w", err))
						return
					}
				}
			}
		}
		if err := m.readopt(ctx, sb, machine, md, false); err != nil {
			fail(err)
			return
		}
		settle(sbx.StateRunning, "VM adopted")
	case sbx.StatePausing:
		if m.pauseCommitted(sb, md) {
			m.ensureFrozen(sb)
			paused("the pause had committed its snapshot")
			return
		}
		if machine == nil {
			fail(errors.New("its VM exited during a pause that did not complete"))
			return
		}
		// The VM was frozen for the snapshot: let it run again.
		if sm, ok := machine.(vmm.Snapshotter); ok {
			if err := sm.Resume(ctx); err != nil {
				fail(fmt.Errorf("continue the VM of an unfinished pause: %w", err))
				return
			}
		}
		if err := m.readopt(ctx, sb, machine, md, false); err != nil {
			fail(err)
			return
		}
		settle(sbx.StateRunning, "unfinished pause rolled back")
	case sbx.StateResuming:
		if machine == nil && pid == 0 {
			// The VM never started: the disk is as the snapshot left it.
			paused("unfinished resume had not started its VM")
			return
		}
		if machine == nil {
			fail(errors.New("its VM exited during a resume (the guest may have written to its disk after the snapshot)"))
			return
		}
		rs, ok := machine.(vmm.RunStater)
		var running bool
		var err error
		if ok {
			running, err = rs.GuestRunning(ctx)
		} else {
			err = errors.New("the VMM cannot report whether the guest ran")
		}
		if err != nil {
			fail(fmt.Errorf("unfinished resume: %w", err))
			return
		}
		if !running {
			// Never continued: the disk is as the snapshot left it.
			paused("unfinished resume rolled back before the guest ran")
			return
		}
		if err := m.readopt(ctx, sb, machine, md, true); err != nil {
			fail(err)
			return
		}
		settle(sbx.StateRunning, "unfinished resume completed")
	}
}

// adoptVMM takes over the recorded VMM of sb when it still runs and the
// driver can adopt it; a VMM it cannot drive is killed. nil: no machine.
func (m *Manager) adoptVMM(ctx context.Context, sb *sandbox, md meta, pid int) vmm.Machine {
	if pid == 0 || md.VM == nil {
		m.killVMM(md, sb.runDir)
		return nil
	}
	ad, ok := m.d.Driver.(vmm.Adopter)
	if !ok {
		m.log.Warn("the VMM driver cannot adopt running VMs: stopping it", "sandbox", sb.spec.ID)
		m.killVMM(md, sb.runDir)
		return nil
	}
	if sr, ok := m.d.Snapshots.(SnapshotRecovery); ok && sr.ServedByPageServer(*md.VM) {
		m.log.Warn("VM's memory was served by the previous agent's page server: stopping it", "sandbox", sb.spec.ID)
		m.killVMM(md, sb.runDir)
		return nil
	}
	machine, err := ad.Adopt(ctx, *md.VM, pid)
	if err != nil {
		if _, serr := os.Stat(fmt.Sprintf("/proc/%d", pid)); serr == nil {
			m.log.Warn("cannot adopt VM: stopping it", "sandbox", sb.spec.ID, "pid", pid, "err", err)
		}
		m.killVMM(md, sb.runDir)
		return nil
	}
	sb.machine, sb.cfg = machine, *md.VM
	m.watch(sb, machine)
	return machine
}

// stopAdopted stops an adopted machine and waits for its watcher.
func (m *Manager) stopAdopted(ctx context.Context, sb *sandbox, machine vmm.Machine) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.d.CleanupTimeout)
	defer cancel()
	if err := machine.Stop(ctx); err != nil {
		sb.log.Warn("stop adopted VM", "err", err)
	}
	sb.mu.Lock()
	exited := sb.exited
	sb.machine, sb.exited = nil, nil
	sb.mu.Unlock()
	if exited != nil {
		select {
		case <-exited:
		case <-ctx.Done():
		}
	}
}

// pauseCommitted reports whether the pause recorded in md produced a new
// committed snapshot.
func (m *Manager) pauseCommitted(sb *sandbox, md meta) bool {
	sr, ok := m.d.Snapshots.(SnapshotRecovery)
	if !ok {
		return false
	}
	seq, ok := sr.CommittedSeq(snapshotDir(sb.runDir))
	if !ok {
		return false
	}
	return md.PauseFrom == nil || seq > *md.PauseFrom
}

// ensureFrozen records the frozen envd's token beside a snapshot whose
// pause committed but did not get as far as writing it.
func (m *Manager) ensureFrozen(sb *sandbox) {
	dir := snapshotDir(sb.runDir)
	if _, err := readFrozen(dir); err == nil {
		return
	}
	if f, err := readFrozen(sb.runDir); err == nil {
		if err := writeFrozen(dir, f); err != nil {
			sb.log.Warn("record envd token of a recovered pause", "err", err)
		}
	}
}

// readopt gives an adopted machine its network slot, disk and envd back.
// resumed: the guest was being resumed, so its envd may still hold the
// snapshot's token; /init moves it to the one the resume was given.
func (m *Manager) readopt(ctx context.Context, sb *sandbox, machine vmm.Machine, md meta, resumed bool) error {
	id := sb.spec.ID
	na, ok := m.d.Net.(NetAdopter)
	if !ok {
		return errors.New("the network cannot adopt slots")
	}
	slot, err := na.Adopt(ctx, id, machine.PID())
	if err != nil {
		return fmt.Errorf("network slot: %w", err)
	}
	disk, err := m.d.Disks.Lookup(ctx, id)
	if err != nil {
		return fmt.Errorf("root disk: %w", err)
	}
	cur, err := readFrozen(sb.runDir)
	if err != nil {
		return fmt.Errorf("envd token record: %w", err)
	}
	// The guest's NFS client retries until its volumes' server is back.
	if err := m.startSlotServers(ctx, sb, slot, false); err != nil {
		return err
	}
	sb.mu.Lock()
	sb.slot, sb.disk = &slot, &disk
	sb.spec.AccessToken = cur.Token
	exited := sb.exited
	sb.mu.Unlock()
	_, envdAddr := guestAddrs(slot.Address)
	e := m.d.Dial("http://"+envdAddr, cur.Token)
	if err := waitHealthy(ctx, e, exited, adoptTimeout); err != nil {
		closeEnvd(e)
		return err
	}
	if resumed {
		// Which token the guest holds depends on whether /init got through.
		frozen, _ := readFrozen(snapshotDir(sb.runDir))
		init := EnvdInit{AccessToken: cur.Token, DefaultUser: cur.User, DefaultDir: m.defaultDir(sb.spec.TemplateID, cur.User), Now: time.Now()}
		var errs []error
		for _, tok := range []string{frozen.Token, cur.Token} {
			init.CurrentToken = tok
			if err := e.Init(ctx, init); err == nil {
				errs = nil
				break
			} else {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			closeEnvd(e)
			return fmt.Errorf("envd init after an unfinished resume: %w", errors.Join(errs...))
		}
	}
	sb.mu.Lock()
	sb.envd, sb.user = e, cur.User
	sb.mu.Unlock()
	return nil
}

// recordPauseStart writes sandbox.json for a pause that begins: the state
// (pausing) and the snapshot it starts from, so a restarted agent can tell
// whether the pause committed.
func (m *Manager) recordPauseStart(sb *sandbox) {
	if sr, ok := m.d.Snapshots.(SnapshotRecovery); ok {
		if seq, ok := sr.CommittedSeq(snapshotDir(sb.runDir)); ok {
			sb.mu.Lock()
			sb.pauseFrom = &seq
			sb.mu.Unlock()
		}
	}
	m.saveMeta(sb)
}

// resumeShutdownPaused resumes, at start-up, the sandboxes the previous
// agent's shutdown paused (their users did not ask for it: a graceful
// restart must not change what they see). One that fails stays paused,
// resumable by its user.
func (m *Manager) resumeShutdownPaused(ctx context.Context) {
	var wg sync.WaitGroup
	for _, in := range m.List() {
		sb, err := m.get(in.ID)
		if err != nil {
			continue
		}
		sb.mu.Lock()
		again, allow := sb.resumeAtStart, sb.spec.Egress
		sb.mu.Unlock()
		if !again {
			continue
		}
		wg.Go(func() {
			if _, err := m.Resume(ctx, in.ID, "", allow); err != nil {
				m.log.Warn("resume of a sandbox paused at shutdown failed: it stays paused", "sandbox", in.ID, "err", err)
				return
			}
			m.log.Info("resumed sandbox paused at shutdown", "sandbox", in.ID)
		})
	}
	wg.Wait()
}
