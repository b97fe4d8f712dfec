// Package snapshot stores guest memory snapshots as a chain of generations
// described by one versioned header, so that each pause after a resume writes
// only the blocks that changed.
//
// # Directory layout
//
// A Store owns one directory per sandbox (or template):
//
//	CURRENT               text: the name of the live header file, e.g. "header-0000000000000007\n"
//	header-<seq>          binary header (format below); <seq> is 16 hex digits
//	gen-<id>.mem          a generation's diff file: its blocks packed back to back
//	staging-<seq>-<rand>/ in-flight write; never read; removed by the next write
//	workingset            written by internal/pagesrv; never touched by this package
//
// Every header and generation file is immutable once renamed into place.
//
// # Commit protocol (atomicity)
//
// A pause (WriteFull, WriteDiff or Merge) writes the new generation file and the
// new header into a fresh staging directory in the same directory (hence the
// same filesystem), fsyncs both, renames them into the store directory under
// names that no existing file has (sequence numbers only grow), fsyncs the
// directory, writes CURRENT.tmp, fsyncs it and renames it over CURRENT, and
// fsyncs the directory again. The rename of CURRENT is the commit point.
// Only after that do unreferenced generations and headers get deleted. A
// failure or crash at any earlier step leaves CURRENT pointing at the previous
// header, whose files are never modified or deleted by a failed write; leftovers
// (staging dirs, orphan headers/generations) are garbage-collected by the next
// successful write. If fsyncing the directory after the swap fails, CURRENT is
// rolled back to the previous header before the error is returned, so "error"
// always means "the previous snapshot is still the current one".
//
// # Header format, version 1 (all integers little-endian)
//
//	preamble (64 bytes)
//	  0   8  magic "HRTHSNAP"
//	  8   4  version = 1
//	  12  4  flags = 0 (no flags are defined in version 1; non-zero is rejected)
//	  16  4  block size in bytes: a power of two in [4096, 16 MiB]
//	  20  4  G = number of generations in the table
//	  24  8  memory size in bytes: > 0 and a multiple of the block size
//	  32  8  seq: the commit sequence number (names header-<seq>)
//	  40  8  N = number of blocks = memory size / block size
//	  48  12 reserved, zero
//	  60  4  crc32c (Castagnoli) of bytes [0, 60)
//	generation table (G × 16 bytes), sorted by strictly increasing id
//	  0   8  generation id (names gen-<id>.mem; id <= seq)
//	  8   8  number of blocks stored in that file (file size >= blocks × block size)
//	block entries (N × 8 bytes), entry i describes guest bytes [i×bs, (i+1)×bs)
//	  0   4  generation index into the table, or 0xFFFFFFFF = ZERO (all bytes zero)
//	  4   4  slot: the block lives at offset slot × block size in that generation's file
//	block hashes (N × 8 bytes)
//	  0   8  xxhash64 of the block's bytes (for ZERO blocks: the hash of a zero block)
//	trailer (4 bytes)
//	  0   4  crc32c of everything between the preamble and the trailer
//
// The file size must equal exactly 64 + 16·G + 16·N + 4; every count is checked
// against the file size before anything is allocated, so a corrupt header costs
// at most one read of the file. Each entry's slot must be below its
// generation's block count. A version-1 reader rejects any other version.
//
// # Zero blocks are recorded, never "unchanged"
//
// WriteDiff is given the set of blocks written since the last resume and reads
// each of them: a dirty block whose bytes are all zero becomes a ZERO entry.
// Clean blocks keep the parent's entry. Reading the block to decide is what
// prevents the known bug class where a page zeroed after a snapshot comes back
// with stale data from an older generation.
//
// # Merging
//
// When a diff would leave more than Options.MaxGenerations generations
// referenced, the same write instead produces one generation holding every
// non-zero block (dirty blocks from memory, the rest copied from the chain).
// Merge forces this. The decision uses the parent's chain length plus one, so a
// merge can happen one diff earlier than strictly needed when the diff happens
// to make an old generation unreferenced; that keeps the write single-pass.
//
// # Dirty tracking without a kernel log (QEMU)
//
// QEMU keeps guest RAM in a shared file, so there is no KVM dirty log to ask.
// Snapshot.DiffAgainst hashes every block of that file and compares with the
// hashes stored in the header. Trade-offs: it reads all of guest memory on every
// pause (memory bandwidth bound: holes found with SEEK_DATA are skipped for
// free), and a changed block is missed only if its xxhash64 collides
// (probability 2^-64 per changed block); in exchange it costs the guest nothing
// while running (no write-protection faults, no log) and works with any VMM that
// exposes its memory as a file. Storing hashes costs 8 bytes per block.
package snapshot
