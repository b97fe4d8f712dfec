// Package volume keeps a host's volumes: one directory each,
// DATA/volumes/<id>/data, served to the guests that mount it over NFSv3
// (see Serve) and read and written by the control plane's
// content API through the host agent (the methods of Dir). Every path a
// caller gives is resolved inside the volume with os.Root, so neither
// ".." nor a symlink a guest planted leads out of it.
package volume

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

// DefaultOwner owns what the content API creates without a uid/gid: the
// guest images' default user (internal/image), so the sandbox user can
// change it.
const DefaultOwner = 1000

// ErrInvalid: a bad volume ID or path (wrapped with the reason).
var ErrInvalid = errors.New("invalid volume path")

var validID = regexp.MustCompile(`^[a-z0-9]{1,63}$`)

// Dir is the volumes directory of a host (DATA/volumes).
type Dir struct{ Root string }

// DataPath is the directory a volume's files live in (what a sandbox's
// NFS server exports).
func (d Dir) DataPath(id string) (string, error) {
	if !validID.MatchString(id) {
		return "", fmt.Errorf("%w: volume ID %q", ErrInvalid, id)
	}
	return filepath.Join(d.Root, id, "data"), nil
}

// Create makes the volume's directory; an existing one is kept. The
// root is world-writable: guests write it as whatever user they run as.
// What guests create belongs to root (the NFS server does not take
// their credentials): the volumes directory is 0700, out of reach of the
// host's other users.
func (d Dir) Create(id string) error {
	p, err := d.DataPath(id)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.Root, 0o700); err != nil {
		return fmt.Errorf("create volume %s: %w", id, err)
	}
	if err := os.Chmod(d.Root, 0o700); err != nil {
		return fmt.Errorf("create volume %s: %w", id, err)
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		return fmt.Errorf("create volume %s: %w", id, err)
	}
	if err := os.Chmod(p, 0o777|os.ModeSticky); err != nil {
		return fmt.Errorf("create volume %s: %w", id, err)
	}
	return nil
}

// Delete removes the volume and its files; an unknown one is no error.
func (d Dir) Delete(id string) error {
	p, err := d.DataPath(id)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Dir(p)); err != nil {
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	return nil
}

// Entry is a file's information as the content API reports it.
type Entry struct {
	Name, Path, Type    string // Path from the volume's root, "/..."
	Size                int64
	Mode, UID, GID      uint32
	Atime, Mtime, Ctime time.Time
	Target              string // a symlink's
}

// Attrs are optional owner and mode changes.
type Attrs struct{ UID, GID, Mode *uint32 }

// open returns the volume's root and p cleaned relative to it ("." for
// the root itself).
func (d Dir) open(id, p string) (*os.Root, string, error) {
	dir, err := d.DataPath(id)
	if err != nil {
		return nil, "", err
	}
	if strings.ContainsRune(p, 0) {
		return nil, "", fmt.Errorf("%w: NUL in path", ErrInvalid)
	}
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	if rel == "" {
		rel = "."
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, "", fmt.Errorf("volume %s: %w", id, err)
	}
	return r, rel, nil
}

func entryOf(r *os.Root, rel string, fi fs.FileInfo) Entry {
	e := Entry{Name: fi.Name(), Path: "/" + strings.TrimPrefix(rel, "."), Size: fi.Size(), Mode: uint32(fi.Mode().Perm()), Mtime: fi.ModTime().UTC()}
	if rel == "." {
		e.Name, e.Path = "", "/"
	}
	switch {
	case fi.Mode().IsRegular():
		e.Type = "file"
	case fi.IsDir():
		e.Type = "directory"
	case fi.Mode()&fs.ModeSymlink != 0:
		e.Type = "symlink"
		e.Target, _ = r.Readlink(rel)
	default:
		e.Type = "unknown"
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.UID, e.GID = st.Uid, st.Gid
		e.Atime = time.Unix(st.Atim.Unix()).UTC()
		e.Ctime = time.Unix(st.Ctim.Unix()).UTC()
	}
	return e
}

// Stat describes path (a symlink itself, not its target).
func (d Dir) Stat(id, p string) (Entry, error) {
	r, rel, err := d.open(id, p)
	if err != nil {
		return Entry{}, err
	}
	defer r.Close()
	fi, err := r.Lstat(rel)
	if err != nil {
		return Entry{}, err
	}
	return entryOf(r, rel, fi), nil
}

// List returns the entries under directory p, depth levels deep (< 1: 1),
// by name, directories before their contents.
func (d Dir) List(id, p string, depth int) ([]Entry, error) {
	r, rel, err := d.open(id, p)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	fi, err := r.Lstat(rel)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrInvalid, p)
	}
	out := []Entry{}
	var walk func(dir string, level int) error
	walk = func(dir string, level int) error {
		f, err := r.Open(dir)
		if err != nil {
			return err
		}
		infos, err := f.Readdir(-1)
		f.Close()
		if err != nil {
			return err
		}
		slices.SortFunc(infos, func(a, b fs.FileInfo) int { return strings.Compare(a.Name(), b.Name()) })
		for _, fi := range infos {
			child := path.Join(dir, fi.Name())
			out = append(out, entryOf(r, child, fi))
			if fi.IsDir() && level < depth {
				if err := walk(child, level+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return out, walk(rel, 1)
}

// Mkdir creates directory p (and its parents with parents) owned as
// attrs say, by default DefaultOwner with mode 0755.
func (d Dir) Mkdir(id, p string, parents bool, a Attrs) (Entry, error) {
	r, rel, err := d.open(id, p)
	if err != nil {
		return Entry{}, err
	}
	defer r.Close()
	if rel == "." {
		return Entry{}, fmt.Errorf("%w: the volume's root exists", fs.ErrExist)
	}
	if parents {
		err = r.MkdirAll(rel, 0o755)
	} else {
		err = r.Mkdir(rel, 0o755)
	}
	if err != nil {
		return Entry{}, err
	}
	return setAttrs(r, rel, a, 0o755)
}

// Remove deletes p, a directory with everything in it. The root stays.
func (d Dir) Remove(id, p string) error {
	r, rel, err := d.open(id, p)
	if err != nil {
		return err
	}
	defer r.Close()
	if rel == "." {
		return fmt.Errorf("%w: the volume's root cannot be removed", ErrInvalid)
	}
	if _, err := r.Lstat(rel); err != nil {
		return err
	}
	return r.RemoveAll(rel)
}

// SetAttrs changes p's owner and mode.
func (d Dir) SetAttrs(id, p string, a Attrs) (Entry, error) {
	r, rel, err := d.open(id, p)
	if err != nil {
		return Entry{}, err
	}
	defer r.Close()
	if _, err := r.Lstat(rel); err != nil {
		return Entry{}, err
	}
	return setAttrs(r, rel, a, 0)
}

// setAttrs applies a (defaults: DefaultOwner and defMode when defMode is
// not 0) and stats the result.
func setAttrs(r *os.Root, rel string, a Attrs, defMode uint32) (Entry, error) {
	uid, gid, mode := -1, -1, defMode
	if defMode != 0 {
		uid, gid = DefaultOwner, DefaultOwner
	}
	if a.UID != nil {
		uid = int(*a.UID)
	}
	if a.GID != nil {
		gid = int(*a.GID)
	}
	if a.Mode != nil {
		mode = *a.Mode & 0o7777
	}
	if uid >= 0 || gid >= 0 {
		if err := r.Lchown(rel, uid, gid); err != nil {
			return Entry{}, err
		}
	}
	if a.Mode != nil || defMode != 0 {
		if err := r.Chmod(rel, fileMode(mode)); err != nil {
			return Entry{}, err
		}
	}
	fi, err := r.Lstat(rel)
	if err != nil {
		return Entry{}, err
	}
	return entryOf(r, rel, fi), nil
}

// fileMode turns unix permission bits into an fs.FileMode.
func fileMode(m uint32) fs.FileMode {
	fm := fs.FileMode(m & 0o777)
	if m&syscall.S_ISUID != 0 {
		fm |= fs.ModeSetuid
	}
	if m&syscall.S_ISGID != 0 {
		fm |= fs.ModeSetgid
	}
	if m&syscall.S_ISVTX != 0 {
		fm |= fs.ModeSticky
	}
	return fm
}

// Open opens regular file p for reading.
func (d Dir) Open(id, p string) (*os.File, error) {
	r, rel, err := d.open(id, p)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	f, err := r.Open(rel)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalid, p)
	}
	return f, nil
}

// Write replaces file p with what src yields (missing parents are
// created), atomically: a reader sees the old or the new content.
func (d Dir) Write(id, p string, src io.Reader, a Attrs) (Entry, error) {
	r, rel, err := d.open(id, p)
	if err != nil {
		return Entry{}, err
	}
	defer r.Close()
	if rel == "." {
		return Entry{}, fmt.Errorf("%w: cannot write the volume's root", ErrInvalid)
	}
	if dir := path.Dir(rel); dir != "." {
		if err := r.MkdirAll(dir, 0o755); err != nil {
			return Entry{}, err
		}
	}
	tmp := path.Join(path.Dir(rel), ".hearth-write-"+path.Base(rel))
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return Entry{}, err
	}
	_, err = io.Copy(f, src)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		_, err = setAttrs(r, tmp, a, 0o644)
	}
	if err == nil {
		err = r.Rename(tmp, rel)
	}
	if err != nil {
		_ = r.Remove(tmp)
		return Entry{}, err
	}
	fi, err := r.Lstat(rel)
	if err != nil {
		return Entry{}, err
	}
	return entryOf(r, rel, fi), nil
}
