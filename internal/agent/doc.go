// Package agent is hearth's host agent: the sandbox manager (one state
// machine per sandbox, see State) and its Connect RPC service
// (proto/hostagent/v1), plus the entry point through which the control
// plane forwards traffic to sandbox ports.
//
// HTTP surface of Handler (one listener, HTTP/1.1 and h2c):
//
//	/hostagent.v1.HostAgentService/*       the RPC service (Connect, gRPC, gRPC-Web)
//	/sandboxes/{id}/proxy/{port}/{path...} reverse proxy to http://<guest>:<port>/{path...}
//	any path + headers E2b-Sandbox-Id and
//	E2b-Sandbox-Port                       reverse proxy to that port, path unchanged
//
// The agent is meant to be reachable by the control plane only. When
// Options.Token is set every request must carry it in the Hearth-Agent-Token
// header (Client.WithToken sends it; not Authorization, which envd uses to
// select the OS user and the proxy passes through); the proxy does not check the
// sandbox's access token itself, the control plane's proxy does, and envd
// checks it again on every call.
//
// Files: DATA/sandboxes/<id>/ is a sandbox's run dir (sandbox.json for
// crash recovery, vm/ for the VMM's sockets, logs and pid file, snapshot/
// for a paused sandbox's memory snapshot). Root disks belong to the rootfs
// backend, network slots to the Network.
//
// # Lifecycle
//
// One state machine per sandbox (State, state.go):
// creating → running → pausing → paused → resuming → running → stopping →
// stopped, with error reachable from every transitional state. Lifecycle
// operations on one sandbox are serialised by a per-sandbox semaphore;
// every operation is idempotent at the RPC level (create with the same
// spec returns the existing sandbox, destroy of an unknown or stopped one
// succeeds, pause of a paused one and resume of a running one succeed).
// The locking rules are written next to the fields (sandbox.go).
//
// Create: root disk (rootfs.Backend.Create with disk_size_mb*MiB) →
// network slot (Network.Setup) → VM (vmm.Driver; kernel args
// hearth.ip=169.254.0.21/30 hearth.gw=169.254.0.22) → wait for envd
// /health with backoff → envd /init (token, env, default user "user" when
// the image has it, else root) → running. Any failure unwinds everything;
// if the unwind itself fails the sandbox stays in error and destroy
// retries (every cleanup step is idempotent and runs unconditionally).
//
// Start-up: stale network slots and loop devices are removed, VMs of a
// crashed agent are killed (pid file + command-line check) and their
// sandboxes cleaned up, paused sandboxes are re-adopted, base images are
// grown to the default size. Shutdown destroys running sandboxes, or
// pauses them when a Snapshotter is configured.
//
// # Pause, resume and snapshot templates (issue 4)
//
// The manager side is in place and tested with a fake (manager.go Pause,
// Resume; deps.go Snapshotter); what remains is a Snapshotter over
// vmm.Snapshotter/vmm.Restorer + internal/snapshot + internal/pagesrv:
//
//   - Pause: running → pausing; Snapshotter.Pause(machine,
//     DATA/sandboxes/<id>/snapshot) writes memory as a new generation
//     (header + diff) and the device state through a staging dir renamed
//     into place, then stops the VMM; the network slot is torn down;
//     → paused, recorded in sandbox.json. A failed pause (VM still alive)
//     goes back to running with the previous snapshot intact.
//   - Resume: paused → resuming; new slot (same guest IP/MAC, tap0, so the
//     snapshot stays valid) → Snapshotter.Restore (page server socket in
//     the run dir, lazy memory) → envd /health → /init with the previous
//     token as credential (CurrentToken) to set the new token and resync
//     the frozen guest clock → running. A failed resume releases the VM and
//     slot and goes back to paused.
//   - The root disk keeps a stable path across restores (Disks.Lookup);
//     per-VM mount namespaces belong in the Snapshotter/driver.
//   - CreateSnapshot(sandbox, template): pause if running (or use the
//     paused snapshot), copy/merge the generations into
//     DATA/templates/<template>/ (memory + rootfs.FlattenRootfs disk), then
//     resume the source if it was running. DeleteSnapshot refuses
//     (FAILED_PRECONDITION) while sandboxes on this host were created from
//     it. CreateSandbox with TEMPLATE_KIND_SNAPSHOT restores from it with
//     MemoryPrivate (one file serves many sandboxes).
//   - Destroy of a paused sandbox removes the snapshot dir and page-server
//     sockets (Snapshotter.Remove), then the disk and run dir.
package agent
