// Package pagesrv is a userfaultfd page server: it resumes a guest lazily by
// serving its memory pages from an internal/snapshot Snapshot as the guest
// touches them, and prefetches the pages the previous resume touched.
//
// # Protocol (Firecracker's Uffd memory backend)
//
// The server listens on a unix socket (Listen). The VMM creates a
// non-blocking userfaultfd, registers its anonymous guest memory for
// missing-page faults (and asks for UFFD_EVENT_REMOVE when a balloon is
// configured), connects, and sends in one sendmsg a JSON array of Region
// ({base_host_virt_addr, size, offset, page_size | page_size_kib}) with the
// uffd attached as SCM_RIGHTS. It then closes the socket: socket EOF is not a
// sign of death. ReadHandshake checks that exactly one descriptor arrived and
// that it is a userfaultfd, makes it O_NONBLOCK (a blocking uffd makes poll
// report POLLERR), and validates the regions.
//
// # Serving
//
// One goroutine polls the uffd and reads uffd_msg batches:
//   - PAGEFAULT: guest address → region → memory offset → snapshot block;
//     data blocks are copied with UFFDIO_COPY straight from a read-only mmap of
//     the generation file, ZERO blocks get UFFDIO_ZEROPAGE. EEXIST (the page
//     is already there, e.g. prefetch won) is fine: the page is skipped and the
//     faulting thread woken with UFFDIO_WAKE. EAGAIN (the VMM's mappings are
//     changing: a REMOVE/UNMAP event is queued) parks the fault and retries it
//     after the next batch of events.
//   - REMOVE (balloon inflation, madvise(MADV_DONTNEED)): the kernel has
//     dropped the pages; the range is marked so that later faults there are
//     zero-filled instead of served from the snapshot (Firecracker's documented
//     semantics), and prefetch skips it.
//   - UNMAP: the range is never served again; once every region is unmapped the
//     session ends. REMAP of a whole region follows the move. FORK: the child's
//     uffd is closed (not served).
//
// # Working set and prefetch
//
// Every faulted 4 KiB page is recorded in first-touch order; at the end of the
// session the list (previously prefetched pages first, then this session's
// misses, capped by Config.MaxWorkingSet) is written atomically to
// Config.WorkingSet (default: "workingset" in the snapshot directory). With
// Config.Prefetch, the next session loads it and a second goroutine maps it
// while faults are served, in runs of up to Config.PrefetchRun bytes that are
// contiguous in a generation file: 4 KiB per-fault copies are slow on these
// hosts (cross-CPU wake-ups dominate), bulk copies are 10-30x faster per byte.
// A read/write lock orders prefetch copies against event handling so that a
// page removed by the VMM is never refilled with snapshot data.
//
// # Peer death
//
// The session ends cleanly (Run returns nil, all descriptors closed, no
// goroutine left) when the VMM process exits (pidfd from SO_PEERCRED), when
// its address space is gone (ESRCH from an ioctl), or when it unmapped all
// registered memory. Cancelling the context ends it with ctx.Err().
//
// # Two ways to use it
//
// Firecracker (production): Listen + Serve (or ServeConn) in the host agent,
// with backend_path set to the socket. In-process (e.g. a VMM whose memory
// this process maps itself): OpenUserfaultfd, EnableAPI, RegisterMissing,
// then NewSession(...).Run, no socket needed.
package pagesrv
