package volume

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	billy "github.com/go-git/go-billy/v5"
	nfs "github.com/willscott/go-nfs"
)

// Export is one volume a sandbox mounts: the guest mounts "/"+Name.
type Export struct {
	Name string // "vol0", "vol1", ... (the guest's hearth.volume tag)
	Dir  string // the volume's data directory on the host
}

// Server is one sandbox's NFSv3 server: it serves exactly that sandbox's
// volumes, each confined to its directory (rootFS), on a listener the
// caller opened inside the sandbox's network namespace.
type Server struct {
	l     net.Listener
	h     *handler
	done  chan struct{}
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	once  sync.Once
}

// Serve starts serving exports on l until Stop.
func Serve(l net.Listener, exports []Export) (*Server, error) {
	if len(exports) > 256 {
		return nil, fmt.Errorf("%d volume exports: at most 256 (one byte of each file handle)", len(exports))
	}
	h := &handler{exports: map[string]*rootFS{}, byFS: map[*rootFS]byte{}, paths: map[[handleLen]byte][]string{}}
	for i, e := range exports {
		r, err := os.OpenRoot(e.Dir)
		if err != nil {
			h.close()
			return nil, fmt.Errorf("volume export %s: %w", e.Name, err)
		}
		f := &rootFS{r: r}
		h.exports["/"+e.Name] = f
		h.byFS[f] = byte(i)
		h.fss = append(h.fss, f)
	}
	s := &Server{l: l, h: h, done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	srv := &nfs.Server{Handler: h, Context: context.Background()}
	go func() {
		defer close(s.done)
		_ = srv.Serve(trackingListener{l, s})
	}()
	return s, nil
}

// Stop closes the listener and every connection (a paused or destroyed
// guest's: a request it sent and got no reply for is sent again on its
// next connection), then the exports; idempotent.
func (s *Server) Stop() {
	_ = s.l.Close()
	<-s.done
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	s.once.Do(s.h.close)
}

// trackingListener records accepted connections so Stop can close them.
type trackingListener struct {
	net.Listener
	s *Server
}

func (t trackingListener) Accept() (net.Conn, error) {
	c, err := t.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: t.s}
	t.s.mu.Lock()
	t.s.conns[tc] = struct{}{}
	t.s.mu.Unlock()
	return tc, nil
}

// trackedConn leaves the server's set when closed (a guest's reconnect
// does not accumulate dead connections).
type trackedConn struct {
	net.Conn
	s *Server
}

func (c *trackedConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}

// handleLen: one byte of export index and 19 of a path hash; a multiple
// of 4 (go-nfs reads the argument after a handle without skipping XDR's
// padding). A handle
// is a pure function of (export, path), so a restarted agent (crash
// recovery) or a new server after a resume understands the handles a
// guest kept; the reverse map is rebuilt by walking the export on a miss.
const handleLen = 20

type handler struct {
	exports map[string]*rootFS
	fss     []*rootFS
	byFS    map[*rootFS]byte
	mu      sync.Mutex
	paths   map[[handleLen]byte][]string
}

var _ nfs.Handler = (*handler)(nil)

func (h *handler) close() {
	for _, f := range h.fss {
		_ = f.r.Close()
	}
}

func (h *handler) Mount(_ context.Context, _ net.Conn, req nfs.MountRequest) (nfs.MountStatus, billy.Filesystem, []nfs.AuthFlavor) {
	f, ok := h.exports[path.Clean("/"+string(req.Dirpath))]
	if !ok {
		return nfs.MountStatusErrNoEnt, nil, nil
	}
	return nfs.MountStatusOk, f, []nfs.AuthFlavor{nfs.AuthFlavorNull}
}

func (h *handler) Change(f billy.Filesystem) billy.Change {
	r, _ := f.(*rootFS)
	return r
}

func (h *handler) FSStat(context.Context, billy.Filesystem, *nfs.FSStat) error { return nil }

func handleOf(idx byte, p []string) [handleLen]byte {
	var k [handleLen]byte
	sum := sha256.Sum256([]byte(strings.Join(p, "/")))
	k[0] = idx
	copy(k[1:], sum[:handleLen-1])
	return k
}

func (h *handler) ToHandle(f billy.Filesystem, p []string) []byte {
	r, _ := f.(*rootFS)
	idx, ok := h.byFS[r]
	if !ok {
		return nil
	}
	k := handleOf(idx, p)
	h.mu.Lock()
	h.paths[k] = slicesClone(p)
	h.mu.Unlock()
	return k[:]
}

func slicesClone(p []string) []string { return append([]string(nil), p...) }

var errStale = errors.New("stale file handle")

func (h *handler) FromHandle(b []byte) (billy.Filesystem, []string, error) {
	if len(b) != handleLen || int(b[0]) >= len(h.fss) {
		return nil, nil, errStale
	}
	k := [handleLen]byte(b)
	h.mu.Lock()
	p, ok := h.paths[k]
	h.mu.Unlock()
	if !ok {
		p, ok = h.rescan(b[0], k)
	}
	if !ok {
		return nil, nil, errStale
	}
	return h.fss[b[0]], slicesClone(p), nil
}

// rescan walks export idx recording every path's handle, until it finds
// k: the handles a guest kept from a previous server.
func (h *handler) rescan(idx byte, k [handleLen]byte) ([]string, bool) {
	var found []string
	root := h.fss[idx].r
	_ = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // an unreadable directory: skip it
		}
		var parts []string
		if p != "." {
			parts = strings.Split(p, "/")
		}
		pk := handleOf(idx, parts)
		h.mu.Lock()
		h.paths[pk] = parts
		h.mu.Unlock()
		if pk == k {
			found = parts
			return fs.SkipAll
		}
		return nil
	})
	return found, found != nil
}

func (h *handler) InvalidateHandle(_ billy.Filesystem, b []byte) error {
	if len(b) == handleLen {
		h.mu.Lock()
		delete(h.paths, [handleLen]byte(b))
		h.mu.Unlock()
	}
	return nil
}

func (h *handler) HandleLimit() int { return 1 << 20 }

// rootFS is a billy file system over an os.Root: every path resolves
// inside the volume, so neither ".." nor a symlink (the guest's own)
// leads out of it.
type rootFS struct{ r *os.Root }

var (
	_ billy.Filesystem = (*rootFS)(nil)
	_ billy.Change     = (*rootFS)(nil)
)

// rel turns a billy path ("/a/b", "a/b", "") into an os.Root one.
func rel(name string) string {
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	if p == "" {
		return "."
	}
	return p
}

func (f *rootFS) Create(name string) (billy.File, error) {
	return f.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

func (f *rootFS) Open(name string) (billy.File, error) { return f.OpenFile(name, os.O_RDONLY, 0) }

func (f *rootFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	if flag&os.O_CREATE != 0 {
		if dir := path.Dir(rel(name)); dir != "." {
			if err := f.r.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
		}
	}
	fl, err := f.r.OpenFile(rel(name), flag, perm)
	if err != nil {
		return nil, err
	}
	return &rootFile{File: fl, name: name}, nil
}

func (f *rootFS) Stat(name string) (os.FileInfo, error)  { return f.r.Stat(rel(name)) }
func (f *rootFS) Lstat(name string) (os.FileInfo, error) { return f.r.Lstat(rel(name)) }
func (f *rootFS) Rename(from, to string) error           { return f.r.Rename(rel(from), rel(to)) }
func (f *rootFS) Remove(name string) error               { return f.r.Remove(rel(name)) }
func (f *rootFS) Join(elem ...string) string             { return path.Join(elem...) }
func (f *rootFS) MkdirAll(name string, perm os.FileMode) error {
	return f.r.MkdirAll(rel(name), perm)
}
func (f *rootFS) Symlink(target, link string) error { return f.r.Symlink(target, rel(link)) }
func (f *rootFS) Readlink(link string) (string, error) {
	return f.r.Readlink(rel(link))
}
func (f *rootFS) Chmod(name string, mode os.FileMode) error { return f.r.Chmod(rel(name), mode) }
func (f *rootFS) Lchown(name string, uid, gid int) error    { return f.r.Lchown(rel(name), uid, gid) }
func (f *rootFS) Chown(name string, uid, gid int) error     { return f.r.Chown(rel(name), uid, gid) }
func (f *rootFS) Chtimes(name string, atime, mtime time.Time) error {
	return f.r.Chtimes(rel(name), atime, mtime)
}

func (f *rootFS) ReadDir(name string) ([]os.FileInfo, error) {
	d, err := f.r.Open(rel(name))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdir(-1)
}

// TempFile and Chroot: go-nfs never calls them.
func (f *rootFS) TempFile(string, string) (billy.File, error) { return nil, billy.ErrNotSupported }
func (f *rootFS) Chroot(string) (billy.Filesystem, error)     { return nil, billy.ErrNotSupported }
func (f *rootFS) Root() string                                { return "/" }

// rootFile is an *os.File as a billy.File (no advisory locks: the guests
// mount with nolock).
type rootFile struct {
	*os.File
	name string
}

func (r *rootFile) Name() string  { return r.name }
func (r *rootFile) Lock() error   { return nil }
func (r *rootFile) Unlock() error { return nil }
