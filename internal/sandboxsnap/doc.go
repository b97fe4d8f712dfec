// Package sandboxsnap is the host agent's Snapshotter: it pauses a
// sandbox's VM into a snapshot directory and restores it, for both VMM
// drivers, on one storage format (internal/snapshot).
//
// # Snapshot directory (DATA/sandboxes/<id>/snapshot, or a template's)
//
//	mem/             internal/snapshot Store: CURRENT, header-<seq>, gen-<seq>.mem
//	state-<seq>      vCPU + device state belonging to memory header <seq>
//	ram-<seq>-<boot> the memory of header <seq>, flat (QEMU lazy restore)
//	workingset       pages the last resume touched (pagesrv format)
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
// # Resume (QEMU): lazy
//
// A snapshot directory also holds ram-<seq>-<boot id>: the memory of
// header <seq> laid out flat, a cache of the store written during this
// boot of the host (lazy.go). Resume maps it copy-on-write into a new QEMU
// (memory-backend-file share=off), loads the device state with -incoming
// defer + x-ignore-shared and continues: nothing is copied, pages come in
// through the page cache when the guest first touches them, so a resume
// costs the same for any guest size. When the file is missing (a template
// never spawned from in this boot, or after a host reboot) it is
// materialised once from the chain (sparse: ZERO blocks are holes; runs
// placed with FICLONERANGE, copy_file_range or pread/pwrite).
//
// Pausing such a machine: its RAM is private, so QEMU's x-ignore-shared
// does not skip it; QEMU migrates into a pipe and the driver takes the
// guest RAM pages out of the stream (vmm/qemu splitRAM), so the state file
// is device state only. When the machine was restored from this
// directory's current snapshot, its RAM file is moved to a staging name
// and the pages whose hash differs from the header's are patched into it
// (zeroed ones punched out) and recorded as a diff; a failed pause rolls
// the patches back from the parent. Otherwise (a template's child pausing
// for the first time) the pages go to a new sparse file, written in full.
// After the commit the file is renamed ram-<new seq>-<boot>: the next
// resume maps it at once. A booted machine's first pause (shared RAM file
// in MemoryDir) copies that file into the directory the same way.
//
// Working set: WorkingSetWindow after a lazy restore, the pages of the RAM
// file present in QEMU's page table (/proc/PID/pagemap) are saved as the
// directory's working set; the next restore from that directory reads
// them ahead into the page cache (posix_fadvise WILLNEED) before QEMU
// starts (wset.go).
//
// Costs: a paused sandbox's memory is on disk twice (store + RAM file;
// Options.EagerRestore restores the old behaviour: a RAM file of its own
// in MemoryDir per running sandbox, built at every resume), and a pause
// of a lazily resumed VM streams all of its memory through the pipe
// (~1-2 GB/s here) instead of hashing a shared file in place.
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
// new directory, staged and renamed. Capture (QEMU) makes the same
// directory from a running machine without stopping it for longer than
// the capture: QMP stop + migrate the device state, copy the guest's memory
// (data extents only), run the caller's hook (the agent reflinks the
// disk), QMP cont (block devices re-activated), then write the copy as one
// generation while the guest runs. Restore takes a template's directory
// like a sandbox's: every child spawned from it maps the template's one
// RAM file copy-on-write, so N children hold one copy of the pages they
// only read (in the page cache) plus each its own copies of the pages it
// wrote; a child's first pause writes its memory in full into its own
// directory. The agent keeps the template's disk byte for byte (see
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
