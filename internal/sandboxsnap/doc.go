// Package sandboxsnap is the host agent's Snapshotter: it pauses a
// sandbox's VM into a snapshot directory and restores it, for both VMM
// drivers, on one storage format (internal/snapshot).
//
// # Snapshot directory (DATA/sandboxes/<id>/snapshot, or a template's)
//
//	mem/             internal/snapshot Store: CURRENT, header-<seq>, gen-<seq>.mem
//	state-<seq>      vCPU + device state belonging to memory header <seq>
//	workingset       pages the last Firecracker resume touched (pagesrv)
//	envd.json        written by the agent: the frozen envd's token and user
//	.staging-*       in-flight files; removed by the next successful pause
//
// # Pause (QEMU)
//
// Running QEMU guests keep their RAM in a shared file (PrepareBoot sets
// vmm.Config.MemoryFile = <MemoryDir>/<id>.ram, memory-backend-file
// share=on). MemoryDir defaults to a directory in /dev/shm: guest RAM in a
// file on a disk file system would be written back to disk by the kernel.
// Pause = QMP stop + migrate with x-ignore-shared (device state only, a few
// hundred KiB) into a staging file → the RAM file into the store (the first
// pause WriteFull, later ones Snapshot.DiffAgainst the previous header's
// block hashes → WriteDiff; zeroed blocks are recorded as ZERO; chains
// longer than Options.MaxGenerations are merged by the store) → the staged
// state renamed to state-<seq> → QEMU killed → RAM file deleted (memory
// freed). The agent then releases the network slot.
//
// # Resume (QEMU)
//
// Materialize rebuilds the RAM file from the chain (sparse: ZERO blocks are
// holes; each run is placed with FICLONERANGE, copy_file_range or
// pread/pwrite, whichever the file systems allow; into tmpfs only the last
// works: ~2.5 GB/s measured here), then a new QEMU maps it, loads the
// state with -incoming defer + x-ignore-shared and continues. Restore is
// eager for QEMU (QEMU 7.2 has no userfaultfd memory backend outside
// postcopy): its cost grows with memory in use, ~150 ms for 350 MiB.
//
// # Pause and resume (Firecracker)
//
// Pause = PATCH /vm Paused → snapshot/create into staging files, Full the
// first time, Diff afterwards (Firecracker tracks dirty pages from boot and
// from every load with track_dirty_pages) → snapshot.DirtyFromSparse of the
// diff file → WriteDiff → state-<seq>. A pause that fails after
// snapshot/create (which resets Firecracker's dirty bitmap) makes the next
// snapshot of that machine Full. Resume = a pagesrv page server on
// <RunDir>/uffd.sock serving the chain (with prefetch of the recorded working
// set) + snapshot/load with the Uffd backend; the server lives as long as the
// VM. This path is tested against a fake Firecracker (see Tests): there is
// no usable KVM on the development hosts.
//
// # Atomicity
//
// Every write goes to a staging name and is renamed into place. The store's
// CURRENT rename is the commit point of memory; the only step after it is
// the rename of the staged device state to state-<seq> in the same
// directory, done regardless of ctx. A pause that fails or is cancelled
// before the commit leaves the previous snapshot (header, generations and
// its state-<seq>) untouched and the VM running again (QMP cont / PATCH
// Resumed). An agent crash between the two renames leaves a memory header
// without its state: Committed reports false; the agent does not re-adopt a
// sandbox that was running when it crashed anyway.
//
// # Templates
//
// Export copies a committed snapshot as one generation (+ its state) into a
// new directory, staged and renamed. Restore takes a template's directory
// like a sandbox's: every spawned QEMU sandbox gets its own RAM file
// (share=on, materialized from the template), not a MAP_PRIVATE mapping of
// one shared file (share=off, DESIGN section 5): a share=off guest cannot
// be snapshotted with x-ignore-shared again (its RAM would go into the
// migration stream, ~1.6 s/GiB, and there is no file to diff), and spawned
// sandboxes must be pausable like any other. The copy costs ~150 ms per
// 350 MiB in use; the agent keeps the template's disk byte for byte (see
// internal/agent templates.go for why it is not shrunk).
//
// # Stable root-disk path
//
// QEMU: the disk is given on the command line at every restore and the
// migration stream does not record its path, so nothing is needed.
// Firecracker records the drive's path_on_host in its snapshot and cannot
// override it at load, so the driver runs every firecracker process in its
// own mount namespace in which one fixed path (firecracker.Options.StableDir
// + "/rootfs", default /run/hearth/vm/rootfs) is a bind mount of that
// sandbox's disk (vmm/vmmproc Mounts; the host sees an empty directory).
// Every snapshot therefore names the same path, and a restore opens the
// disk of the sandbox being restored: its own on resume, its clone when
// spawned from a template.
//
// # Tests
//
// firecracker_test.go runs the Firecracker paths against the fake VMM in
// vmm/firecracker/fcfake (requests validated against Firecracker's API
// spec, real Full and sparse Diff memory files, Firecracker's side of the
// Uffd handshake with every page read back and compared). No test here
// runs a real Firecracker unless the binary, a KVM host that boots stock
// kernels and HEARTH_IMAGES_DIR are present.
package sandboxsnap
