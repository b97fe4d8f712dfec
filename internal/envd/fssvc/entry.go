package fssvc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	rpc "github.com/hearth-sandbox/hearth/gen/envd/filesystem"
)

// MetadataXattrPrefix is the xattr namespace holding user metadata set with
// X-Metadata-* headers on upload (the E2B envd convention).
const MetadataXattrPrefix = "user.e2b."

// Entry describes path without following a final symlink.
func Entry(path string) (*rpc.EntryInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	return entryFromInfo(path, fi), nil
}

func entryFromInfo(path string, fi fs.FileInfo) *rpc.EntryInfo {
	e := &rpc.EntryInfo{
		Name:         fi.Name(),
		Path:         path,
		Size:         fi.Size(),
		Mode:         uint32(fi.Mode().Perm()),
		Permissions:  fi.Mode().String(),
		ModifiedTime: timestamppb.New(fi.ModTime()),
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		e.Type = rpc.FileType_FILE_TYPE_SYMLINK
		if target, err := os.Readlink(path); err == nil {
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(path), target)
			}
			e.SymlinkTarget = &target
		}
	case fi.IsDir():
		e.Type = rpc.FileType_FILE_TYPE_DIRECTORY
	default:
		e.Type = rpc.FileType_FILE_TYPE_FILE
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.Owner = userName(st.Uid)
		e.Group = groupName(st.Gid)
	}
	if e.Type != rpc.FileType_FILE_TYPE_SYMLINK {
		if md := ReadMetadata(path); len(md) > 0 {
			e.Metadata = md
		}
	}
	return e
}

func userName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	return id
}

func groupName(gid uint32) string {
	id := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(id); err == nil {
		return g.Name
	}
	return id
}

// ReadMetadata returns the user.e2b.* xattrs of path with the prefix removed.
// Filesystems without user xattrs simply yield none.
func ReadMetadata(path string) map[string]string {
	size, err := unix.Listxattr(path, nil)
	if err != nil || size <= 0 {
		return nil
	}
	buf := make([]byte, size)
	size, err = unix.Listxattr(path, buf)
	if err != nil {
		return nil
	}
	var out map[string]string
	for name := range strings.SplitSeq(string(buf[:size]), "\x00") {
		key, ok := strings.CutPrefix(name, MetadataXattrPrefix)
		if !ok || key == "" {
			continue
		}
		vsize, err := unix.Getxattr(path, name, nil)
		if err != nil {
			continue
		}
		val := make([]byte, vsize)
		if vsize > 0 {
			if vsize, err = unix.Getxattr(path, name, val); err != nil {
				continue
			}
		}
		if out == nil {
			out = map[string]string{}
		}
		out[key] = string(val[:vsize])
	}
	return out
}

// WriteMetadata replaces path's user.e2b.* xattrs with md (keys absent from md
// are removed, so an empty md clears them).
func WriteMetadata(path string, md map[string]string) error {
	for key := range ReadMetadata(path) {
		if _, keep := md[key]; !keep {
			if err := unix.Removexattr(path, MetadataXattrPrefix+key); err != nil && !errors.Is(err, unix.ENODATA) {
				return fmt.Errorf("removing metadata %q: %w", key, err)
			}
		}
	}
	for key, val := range md {
		if err := unix.Setxattr(path, MetadataXattrPrefix+key, []byte(val), 0); err != nil {
			return fmt.Errorf("setting metadata %q: %w", key, err)
		}
	}
	return nil
}

// ConnectError maps a filesystem error to the Connect code the SDK expects
// (it turns not_found into NotFoundError, already_exists into a false return
// from makeDir, and so on).
func ConnectError(err error, format string, args ...any) error {
	wrapped := fmt.Errorf(format+": %w", append(args, err)...)
	var code connect.Code
	switch {
	case errors.Is(err, fs.ErrNotExist):
		code = connect.CodeNotFound
	case errors.Is(err, fs.ErrExist):
		code = connect.CodeAlreadyExists
	case errors.Is(err, fs.ErrPermission):
		code = connect.CodePermissionDenied
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENOTEMPTY):
		code = connect.CodeInvalidArgument
	case errors.Is(err, syscall.ENOSPC):
		code = connect.CodeResourceExhausted
	default:
		code = connect.CodeInternal
	}
	return connect.NewError(code, wrapped)
}
