// Package agent is hearth's host agent: the sandbox manager (one state
// machine per sandbox, on sandbox.Host's table) and its Connect RPC service
// (proto/hostagent/v1), plus the entry point through which the control
// plane forwards traffic to sandbox ports. It imports nothing of the
// control plane (internal/layering pins that): the control plane's client
// is internal/agentclient, what both share is internal/hostwire.
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
// header (hostwire.TokenHeader; agentclient.WithToken sends it; not Authorization, which envd uses to
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
// One state machine per sandbox (the states and sandbox.Host's transition
// table live in internal/sandbox, shared with the control plane):
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
// sandboxes cleaned up, paused sandboxes and sandboxes recorded in error
// are re-adopted (disks kept), base images are grown to the default size,
// and the root-disk backend's cached base variants that nothing needs any
// more are pruned (kept: variants of the images and templates held here,
// and every variant a sandbox's disk depends on, read from the disks).
// Shutdown destroys running sandboxes, or pauses them when a Snapshotter
// is configured; a sandbox whose pause fails (or that was in error) is
// not destroyed: its VM is stopped, its disk and run dir stay, and it is
// recorded in error with the reason until the user destroys it (resuming
// an older snapshot of it would not match its disk). Then the components
// wire.go built are closed, the reflink backend's xfs pool included
// (unmounted, loop device detached; refused while any process still uses
// a file in it).
//
// # Pause, resume and snapshot templates (issue 4)
//
// The Snapshotter (deps.go) is internal/sandboxsnap, wired by default for
// every driver whose vmm.Capabilities declare snapshots (wire.go); see its
// package doc for the storage layout and the QEMU/Firecracker mechanics.
//
//   - Boot: Snapshotter.PrepareBoot gives QEMU guests their RAM in a tmpfs
//     file so they can be paused later.
//   - Pause: running → pausing; Snapshotter.Pause(machine, cfg,
//     DATA/sandboxes/<id>/snapshot) commits memory (header + diff) and the
//     device state through staging names and stops the VMM (RAM freed);
//     envd.json records the frozen envd's token and user (the snapshot's
//     memory holds them anyway; sandbox.json stays free of secrets); the
//     network slot is torn down; → paused, recorded in sandbox.json. A failed
//     pause goes back to running with the previous snapshot intact.
//   - Resume: paused → resuming; new slot (same guest IP/MAC, so the
//     snapshot stays valid) → Snapshotter.Restore → envd /health → /init
//     authenticated with the frozen token, setting the current token and the
//     host clock (the guest clock is frozen while paused) → running. A
//     failed resume releases the VM and slot and goes back to paused.
//   - CreateSnapshot(sandbox, template) writes DATA/templates/<template>/
//     (templates.go): the memory as one generation, the disk as a
//     byte-for-byte copy (NOT FlattenRootfs: the frozen kernel has the ext4
//     layout cached), template.json; staged and renamed. A running sandbox
//     stays running in the same VMM (Capturer, QEMU): it stands still only
//     while the device state is saved, the RAM file copied in the tmpfs and
//     the disk reflinked beside itself (copied there where it cannot
//     reflink), then QMP cont; the template is written from those copies
//     while it runs, so its network slot, kept-alive connections, envd and
//     token stay. Without a Capturer (Firecracker) a running sandbox is
//     paused, exported (Snapshotter.Export) and resumed. A paused one is
//     exported.
//   - Kept-alive connections to a guest (the agent's sandbox proxy, hearth
//     dev's direct route) are pooled per sandbox and network slot
//     (SandboxRoute): a resume's new slot never gets one from before.
//   - CreateSandbox with TEMPLATE_KIND_SNAPSHOT: vCPUs/memory must equal
//     the template's (FieldError naming the field); disk = a backend clone
//     of the template's disk at exactly its file-system size (no resize);
//     Snapshotter.Restore from the template (own RAM file per sandbox, so it
//     diverges independently and can be paused) → /init with the new token.
//   - DeleteSnapshot refuses (FAILED_PRECONDITION) while sandboxes on this
//     host were created from it; it removes the template's directory and
//     the variants of its disk the root-disk backend cached.
//   - Destroy of a paused sandbox removes the snapshot dir, page-server
//     sockets and RAM file (Snapshotter.Remove), then the disk and run dir.
//
// # Egress header rules (E2B network.rules, egressrules.go)
//
// A sandbox created with EgressRules (values resolved by the control
// plane) gets an egressproxy.Proxy listening in its namespace at
// GatewayIP:netns.EgressProxyPort, with the namespace's HTTPS redirected
// there (HTTPSRedirector), started and stopped beside the volume server:
// before the guest runs at create and resume, after it stops at pause,
// destroy and a failed resume; a re-adopted slot keeps its redirect and
// gets a new proxy. The rules live in memory and in egress.json (0600 in
// the 0700 run dir, never in sandbox.json), read back at start-up. After
// envd's /init at create and resume the guest gets the agent's egress CA
// certificate (DATA/egress-ca, created on first use) in its system bundle
// and NODE_EXTRA_CA_CERTS in its default env. See docs/security.md.
package agent
