package rootfs

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// CopyFile copies src to a new file dst byte for byte, keeping holes: a
// reflink (FICLONE) where the filesystem allows, else only the data extents
// (SEEK_DATA/SEEK_HOLE with copy_file_range, or read/write across
// filesystems). The block layout inside the image is untouched, which is
// what a memory-snapshot template's disk needs (the frozen guest kernel has
// it cached). dst is fsynced.
func CopyFile(src, dst string) error {
	if err := reflinkFile(src, dst); err == nil {
		d, err := os.Open(dst)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}
	return sparseCopy(src, dst)
}

// Reflink clones src into a new file dst (FICLONE, same filesystem only):
// milliseconds and no space, or an error where the filesystem cannot.
func Reflink(src, dst string) error { return reflinkFile(src, dst) }

// reflinkFile clones src into a new file dst with FICLONE: no data is
// copied, blocks are shared copy-on-write (xfs with reflink=1, btrfs).
func reflinkFile(src, dst string) error {
	s, err := os.Open(src)
	if err != nil {
		return err
	}
	defer s.Close()
	d, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := unix.IoctlFileClone(int(d.Fd()), int(s.Fd())); err != nil {
		d.Close()
		os.Remove(dst)
		return fmt.Errorf("FICLONE %s → %s: %w", src, dst, err)
	}
	return d.Close()
}

// sparseCopy copies src into a new file dst, keeping holes: only the data
// extents (SEEK_DATA/SEEK_HOLE) are copied, with copy_file_range. Sources
// without SEEK_DATA support (block devices) are read in chunks and zero
// chunks are skipped.
func sparseCopy(src, dst string) (err error) {
	s, err := os.Open(src)
	if err != nil {
		return err
	}
	defer s.Close()
	size, err := s.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	d, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if err := d.Truncate(size); err != nil {
		return err
	}
	sfd, dfd := int(s.Fd()), int(d.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			if err := chunkCopy(s, d, off, size); err != nil {
				return err
			}
			break
		}
		if err != nil {
			return fmt.Errorf("SEEK_DATA %s: %w", src, err)
		}
		hole, err := unix.Seek(sfd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("SEEK_HOLE %s: %w", src, err)
		}
		for data < hole {
			in, out := data, data
			n, err := unix.CopyFileRange(sfd, &in, dfd, &out, int(min(hole-data, 1<<30)), 0)
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
				// Different filesystem types, or a block device: copy
				// through memory.
				if err := chunkCopy(s, d, data, hole); err != nil {
					return err
				}
				break
			}
			if err != nil {
				return fmt.Errorf("copy_file_range %s: %w", src, err)
			}
			if n == 0 {
				return fmt.Errorf("copy_file_range %s: unexpected end at %d", src, data)
			}
			data += int64(n)
		}
		off = hole
	}
	return d.Sync()
}

// chunkCopy copies [off, end) in 1 MiB chunks, leaving all-zero chunks as
// holes (dst was truncated beforehand).
func chunkCopy(s, d *os.File, off, end int64) error {
	buf := make([]byte, 1<<20)
	for off < end {
		n, err := s.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
		if n > 0 && !allZero(buf[:n]) {
			if _, werr := d.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// canReflink reports whether dir's filesystem supports FICLONE.
func canReflink(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	a, err := os.CreateTemp(dir, ".reflink-probe-*")
	if err != nil {
		return err
	}
	defer os.Remove(a.Name())
	if _, err := a.Write(make([]byte, 4096)); err != nil {
		a.Close()
		return err
	}
	a.Close()
	b := a.Name() + ".clone"
	defer os.Remove(b)
	return reflinkFile(a.Name(), b)
}
