package templatebuild

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
)

// sources expands COPY sources (globs allowed) inside the context root,
// sorted. A source that matches nothing is an error naming it.
func sources(ctxRoot *os.Root, srcs []string) ([]string, error) {
	var out []string
	for _, s := range srcs {
		p, ok := cleanPath(s)
		if !ok {
			return nil, fmt.Errorf("COPY source %q is outside the build context", s)
		}
		m, err := fs.Glob(ctxRoot.FS(), p)
		if err != nil {
			return nil, fmt.Errorf("COPY source %q: %w", s, err)
		}
		if len(m) == 0 {
			return nil, fmt.Errorf("COPY source %q: no such file in the build context", s)
		}
		sort.Strings(m)
		out = append(out, m...)
	}
	return out, nil
}

// filesHash is the content hash of COPY sources: every file's relative
// path, mode, link target and bytes.
func filesHash(contextDir string, srcs []string) (string, error) {
	if contextDir == "" {
		return "", fmt.Errorf("COPY needs a build context")
	}
	root, err := os.OpenRoot(contextDir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	matched, err := sources(root, srcs)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, m := range matched {
		err := fs.WalkDir(root.FS(), m, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s\x00%o\x00", p, fi.Mode())
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				t, err := root.Readlink(p)
				if err != nil {
					return err
				}
				fmt.Fprintf(h, "%s\x00", t)
			case fi.Mode().IsRegular():
				f, err := root.Open(p)
				if err != nil {
					return err
				}
				_, err = io.Copy(h, f)
				f.Close()
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyStep copies a COPY step's sources from its context into the mounted
// image root, as Docker does: a directory's contents go into the
// destination; several sources or a destination ending in "/" make the
// destination a directory; owned by --chown (default root).
func copyStep(dst *os.Root, s Step, cfg Config) error {
	src, err := os.OpenRoot(s.Context)
	if err != nil {
		return err
	}
	defer src.Close()
	srcs, dest := s.Args[:len(s.Args)-1], s.Args[len(s.Args)-1]
	matched, err := sources(src, srcs)
	if err != nil {
		return err
	}
	uid, gid, err := lookupOwner(dst, s.Chown)
	if err != nil {
		return err
	}
	var mode fs.FileMode
	if s.Mode != "" {
		m, err := strconv.ParseUint(s.Mode, 8, 32)
		if err != nil || m > 0o7777 {
			return fmt.Errorf("COPY mode %q: want octal permissions like 0755", s.Mode)
		}
		mode = fs.FileMode(m)
	}
	destDir := strings.HasSuffix(dest, "/") || len(matched) > 1
	dest = strings.TrimPrefix(resolveDir(cfg.Workdir, dest), "/")
	if dest == "" {
		dest, destDir = ".", true
	}
	if fi, err := dst.Stat(dest); err == nil && fi.IsDir() {
		destDir = true
	}
	for _, m := range matched {
		fi, err := src.Lstat(m)
		if err != nil {
			return err
		}
		target := dest
		if fi.IsDir() {
			if err := mkdirAllOwned(dst, dest, uid, gid); err != nil {
				return err
			}
		} else if destDir {
			if err := mkdirAllOwned(dst, dest, uid, gid); err != nil {
				return err
			}
			target = path.Join(dest, path.Base(m))
		} else if err := mkdirAllOwned(dst, path.Dir(dest), uid, gid); err != nil {
			return err
		}
		err = fs.WalkDir(src.FS(), m, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel := relTo(m, p)
			out := target
			if rel != "" {
				out = path.Join(target, rel)
			}
			if err := copyEntry(src, dst, p, out, uid, gid); err != nil {
				return err
			}
			if mode != 0 && !d.IsDir() && d.Type()&fs.ModeSymlink == 0 {
				return dst.Chmod(out, mode)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// relTo is p (an fs.WalkDir path under root) relative to root: "" for
// root itself. Not a prefix trim: root "." would eat the dot of
// ".dockerignore".
func relTo(root, p string) string {
	switch {
	case p == root:
		return ""
	case root == ".":
		return p
	}
	return strings.TrimPrefix(p, root+"/")
}

func copyEntry(src, dst *os.Root, from, to string, uid, gid int) error {
	fi, err := src.Lstat(from)
	if err != nil {
		return err
	}
	mode := fi.Mode()
	switch {
	case mode.IsDir():
		if err := dst.MkdirAll(to, 0o755); err != nil {
			return err
		}
	case mode&fs.ModeSymlink != 0:
		t, err := src.Readlink(from)
		if err != nil {
			return err
		}
		_ = dst.RemoveAll(to)
		if err := dst.Symlink(t, to); err != nil {
			return err
		}
		return dst.Lchown(to, uid, gid)
	case mode.IsRegular():
		if fi, err := dst.Lstat(to); err == nil && !fi.Mode().IsRegular() {
			if err := dst.RemoveAll(to); err != nil {
				return err
			}
		}
		in, err := src.Open(from)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := dst.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, in)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("COPY %s: unsupported file type %s", from, mode.Type())
	}
	if err := dst.Lchown(to, uid, gid); err != nil {
		return err
	}
	return dst.Chmod(to, mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
}

// mkdirAllOwned creates dir and its missing parents owned by uid:gid.
func mkdirAllOwned(r *os.Root, dir string, uid, gid int) error {
	if dir == "." || dir == "" {
		return nil
	}
	if _, err := r.Stat(dir); err == nil {
		return nil
	}
	if err := mkdirAllOwned(r, path.Dir(dir), uid, gid); err != nil {
		return err
	}
	if err := r.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return err
	}
	return r.Lchown(dir, uid, gid)
}

// mkdirOwned is WORKDIR: the directory exists afterwards, new parts owned
// by the current user.
func mkdirOwned(r *os.Root, dir, user string) error {
	uid, gid, err := lookupOwner(r, user)
	if err != nil {
		return err
	}
	return mkdirAllOwned(r, strings.TrimPrefix(dir, "/"), uid, gid)
}

// lookupOwner resolves "user[:group]" (names or numbers) against the
// image's /etc/passwd and /etc/group; "" is root.
func lookupOwner(r *os.Root, spec string) (uid, gid int, err error) {
	if spec == "" {
		return 0, 0, nil
	}
	u, g, hasGroup := strings.Cut(spec, ":")
	uid, pgid, err := lookupID(r, "etc/passwd", u, 3)
	if err != nil {
		return 0, 0, err
	}
	gid = pgid
	if hasGroup {
		if gid, _, err = lookupID(r, "etc/group", g, -1); err != nil {
			return 0, 0, err
		}
	}
	return uid, gid, nil
}

// lookupID finds name (or a number) in a passwd-style file: its ID (field
// 2) and, when extra >= 0, the number in field extra.
func lookupID(r *os.Root, file, name string, extra int) (int, int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, n, nil
	}
	data, err := r.ReadFile(file)
	if err != nil {
		return 0, 0, fmt.Errorf("look up %q: %w", name, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 3 || f[0] != name {
			continue
		}
		id, err := strconv.Atoi(f[2])
		if err != nil {
			return 0, 0, fmt.Errorf("/%s: bad entry for %s", file, name)
		}
		x := id
		if extra >= 0 && len(f) > extra {
			if x, err = strconv.Atoi(f[extra]); err != nil {
				return 0, 0, fmt.Errorf("/%s: bad entry for %s", file, name)
			}
		}
		return id, x, nil
	}
	return 0, 0, fmt.Errorf("no %q in the image's /%s", name, file)
}

// resolveDir resolves dir against the current working directory.
func resolveDir(cwd, dir string) string {
	if path.IsAbs(dir) {
		return path.Clean(dir)
	}
	if cwd == "" {
		cwd = "/"
	}
	return path.Join(cwd, dir)
}

func randHex() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
