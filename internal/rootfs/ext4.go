package rootfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// fsSize reads an ext4 superblock and returns the filesystem size in bytes
// (block count × block size) and the block size. Reading it directly is
// cheaper than running dumpe2fs on every create.
func fsSize(path string) (size, blockSize int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return 0, 0, fmt.Errorf("read superblock of %s: %w", path, err)
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xEF53 {
		return 0, 0, fmt.Errorf("%s: not an ext2/3/4 filesystem", path)
	}
	blocks := uint64(binary.LittleEndian.Uint32(sb[0x4:]))
	const incompat64bit = 0x80
	if binary.LittleEndian.Uint32(sb[0x60:])&incompat64bit != 0 {
		blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
	}
	bs := int64(1024) << binary.LittleEndian.Uint32(sb[0x18:])
	return int64(blocks) * bs, bs, nil
}

// run executes a command by argument list and returns its stdout; stderr
// goes into the error.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// e2fsck runs `e2fsck -f -p`; exit status 1 (errors corrected) is success.
// resize2fs insists on a freshly checked filesystem.
func e2fsck(ctx context.Context, path string) error {
	cmd := exec.CommandContext(ctx, "e2fsck", "-f", "-p", path)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("e2fsck -f -p %s: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// resizeImage makes the ext4 filesystem in the unmounted image at path
// size bytes (see the block-group caveat below), growing or shrinking, and
// the file exactly size bytes.
// Growing is sparse: new block groups are lazily initialised, so the file
// gains almost no allocated blocks.
func resizeImage(ctx context.Context, path string, size int64) error {
	cur, bs, err := fsSize(path)
	if err != nil {
		return err
	}
	if size%bs != 0 {
		return fmt.Errorf("resize %s: %d bytes is not a multiple of the filesystem block size %d", path, size, bs)
	}
	if cur == size {
		return ensureFileSize(path, size)
	}
	if size > cur {
		if err := ensureFileSize(path, size); err != nil {
			return err
		}
	}
	if err := e2fsck(ctx, path); err != nil {
		return err
	}
	if _, err := run(ctx, "resize2fs", path, strconv.FormatInt(size/1024, 10)+"K"); err != nil {
		return err
	}
	// resize2fs leaves out a last block group too small to hold its own
	// bitmaps and inode table (e.g. 10241 MB: a 1 MB tail group), so the
	// filesystem may end short of the device by less than one group
	// (8 × blocksize² bytes: 128 MiB with 4 KiB blocks). The disk itself is
	// always exactly size; sizes on a group boundary (every multiple of
	// 128 MiB, e.g. 10240 or 20480 MB) are exact.
	got, _, err := fsSize(path)
	if err != nil {
		return err
	}
	if got > size || size-got >= 8*bs*bs {
		return fmt.Errorf("resize %s: filesystem is %d bytes after resize2fs, want %d", path, got, size)
	}
	return os.Truncate(path, size)
}

// ensureFileSize grows (never shrinks) a file to at least size, sparsely.
func ensureFileSize(path string, size int64) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() < size {
		return os.Truncate(path, size)
	}
	return nil
}

// shrinkImage shrinks the filesystem to its minimum (resize2fs -M) and the
// file to the filesystem.
func shrinkImage(ctx context.Context, path string) error {
	if err := e2fsck(ctx, path); err != nil {
		return err
	}
	if _, err := run(ctx, "resize2fs", "-M", path); err != nil {
		return err
	}
	size, _, err := fsSize(path)
	if err != nil {
		return err
	}
	return os.Truncate(path, size)
}
