package sandboxsnap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hearth-sandbox/hearth/internal/snapshot"
	"golang.org/x/sys/unix"
)

// MaterializeStats says how a RAM file was built.
type MaterializeStats struct {
	Bytes int64  // data bytes placed (zero blocks stay holes)
	Mode  string // "clone" (FICLONERANGE), "copy_file_range" or "copy"
}

// Materialize writes the guest memory of snap to path as a sparse file
// (ZERO blocks are holes), through a temporary file renamed into place.
//
// Each run of blocks stored back to back in one generation file is placed
// with the cheapest mechanism the filesystems allow, tried in order:
// FICLONERANGE (reflink: no data copied; xfs/btrfs, same filesystem),
// copy_file_range (in-kernel copy; same filesystem type), then pread/pwrite.
// The RAM files live in a tmpfs (see Options.MemoryDir), where only the last
// applies: measured on the dev host, a 256 MiB guest with ~100 MiB in use
// materializes in tens of milliseconds (page-cache to tmpfs copy).
func Materialize(ctx context.Context, snap *snapshot.Snapshot, path string) (st MaterializeStats, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return st, fmt.Errorf("materialize: %w", err)
	}
	defer func() {
		tmp.Close()
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Truncate(snap.Size()); err != nil {
		return st, fmt.Errorf("materialize: size RAM file: %w", err)
	}
	h := snap.Header()
	bs := int64(h.BlockSize)
	n := len(h.Entries)
	const maxRun = 64 << 20
	mode := "clone"
	buf := make([]byte, 0)
	for i := 0; i < n; {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return st, fmt.Errorf("materialize: %w", err)
			}
		}
		e := h.Entries[i]
		if e.Zero() {
			i++
			continue
		}
		j := i + 1
		for j < n && int64(j-i+1)*bs <= maxRun && h.Entries[j].Gen == e.Gen && h.Entries[j].Slot == e.Slot+uint32(j-i) {
			j++
		}
		src, srcOff, _ := snap.Source(i)
		dstOff, length := int64(i)*bs, int64(j-i)*bs
		mode, buf, err = placeRun(src, tmp, srcOff, dstOff, length, mode, buf)
		if err != nil {
			return st, fmt.Errorf("materialize block %d: %w", i, err)
		}
		st.Bytes += length
		i = j
	}
	st.Mode = mode
	if err := os.Rename(tmp.Name(), path); err != nil {
		return st, fmt.Errorf("materialize: %w", err)
	}
	return st, nil
}

// placeRun copies [srcOff, srcOff+length) of src to dstOff in dst with the
// given mode, downgrading the mode (returned) when the filesystems refuse.
func placeRun(src, dst *os.File, srcOff, dstOff, length int64, mode string, buf []byte) (string, []byte, error) {
	if mode == "clone" {
		err := unix.IoctlFileCloneRange(int(dst.Fd()), &unix.FileCloneRange{
			Src_fd: int64(src.Fd()), Src_offset: uint64(srcOff), Src_length: uint64(length), Dest_offset: uint64(dstOff),
		})
		if err == nil {
			return mode, buf, nil
		}
		if !unsupported(err) {
			return mode, buf, fmt.Errorf("FICLONERANGE: %w", err)
		}
		mode = "copy_file_range"
	}
	if mode == "copy_file_range" {
		in, out, left := srcOff, dstOff, length
		for left > 0 {
			k, err := unix.CopyFileRange(int(src.Fd()), &in, int(dst.Fd()), &out, int(left), 0)
			if err != nil {
				if unsupported(err) && left == length {
					mode = "copy"
					break
				}
				return mode, buf, fmt.Errorf("copy_file_range: %w", err)
			}
			if k == 0 {
				return mode, buf, errors.New("copy_file_range: short source")
			}
			left -= int64(k)
		}
		if mode == "copy_file_range" {
			return mode, buf, nil
		}
	}
	if int64(cap(buf)) < min(length, 4<<20) {
		buf = make([]byte, 4<<20)
	}
	for done := int64(0); done < length; {
		c := buf[:min(int64(cap(buf)), length-done)]
		if _, err := src.ReadAt(c, srcOff+done); err != nil {
			return mode, buf, err
		}
		if _, err := dst.WriteAt(c, dstOff+done); err != nil {
			return mode, buf, err
		}
		done += int64(len(c))
	}
	return mode, buf, nil
}

func unsupported(err error) bool {
	return errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EBADF)
}
