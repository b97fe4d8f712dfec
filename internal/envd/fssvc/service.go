// Package fssvc implements the envd filesystem.Filesystem Connect service
// (stat, list, mkdir, move, remove, directory watches) and the file helpers
// the REST /files handler shares with it.
package fssvc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	rpc "github.com/hearth-sandbox/hearth/gen/envd/filesystem"
	"github.com/hearth-sandbox/hearth/gen/envd/filesystem/filesystemconnect"
	"github.com/hearth-sandbox/hearth/internal/envd/userenv"
)

// KeepaliveHeader is the request header (seconds) asking for KeepAlive events.
const KeepaliveHeader = "Keepalive-Ping-Interval"

// Service implements filesystemconnect.FilesystemHandler.
type Service struct {
	state *userenv.State
	log   *slog.Logger

	mu       sync.Mutex
	watchers map[string]*pollWatcher
}

var _ filesystemconnect.FilesystemHandler = (*Service)(nil)

// New returns a Service resolving users and paths through state.
func New(state *userenv.State, log *slog.Logger) *Service {
	return &Service{state: state, log: log, watchers: make(map[string]*pollWatcher)}
}

// Close stops every polling watcher.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, w := range s.watchers {
		w.watch.Close()
		delete(s.watchers, id)
	}
}

// resolve returns the request's user and p made absolute for that user.
func (s *Service) resolve(h http.Header, p string) (userenv.User, string, error) {
	name, err := userenv.UserName(h)
	if err != nil {
		return userenv.User{}, "", connect.NewError(connect.CodeInvalidArgument, err)
	}
	u, err := s.state.Resolve(name)
	if err != nil {
		return userenv.User{}, "", connect.NewError(connect.CodeUnauthenticated, err)
	}
	return u, s.state.ExpandPath(p, u), nil
}

// Stat describes one entry.
func (s *Service) Stat(_ context.Context, req *connect.Request[rpc.StatRequest]) (*connect.Response[rpc.StatResponse], error) {
	_, path, err := s.resolve(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	e, err := Entry(path)
	if err != nil {
		return nil, ConnectError(err, "stat %s", path)
	}
	return connect.NewResponse(&rpc.StatResponse{Entry: e}), nil
}

// MakeDir creates a directory and its missing parents, owned by the user.
func (s *Service) MakeDir(_ context.Context, req *connect.Request[rpc.MakeDirRequest]) (*connect.Response[rpc.MakeDirResponse], error) {
	u, path, err := s.resolve(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil {
		if fi.IsDir() {
			return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("directory %s already exists", path))
		}
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path %s already exists and is not a directory", path))
	}
	if err := MkdirAllAs(path, u); err != nil {
		return nil, ConnectError(err, "creating directory %s", path)
	}
	e, err := Entry(path)
	if err != nil {
		return nil, ConnectError(err, "stat %s", path)
	}
	return connect.NewResponse(&rpc.MakeDirResponse{Entry: e}), nil
}

// Move renames source to destination, creating the destination's parents.
func (s *Service) Move(_ context.Context, req *connect.Request[rpc.MoveRequest]) (*connect.Response[rpc.MoveResponse], error) {
	u, src, err := s.resolve(req.Header(), req.Msg.GetSource())
	if err != nil {
		return nil, err
	}
	dst := s.state.ExpandPath(req.Msg.GetDestination(), u)
	if _, err := os.Lstat(src); err != nil {
		return nil, ConnectError(err, "source %s", src)
	}
	if err := MkdirAllAs(filepath.Dir(dst), u); err != nil {
		return nil, ConnectError(err, "creating parent of %s", dst)
	}
	if err := os.Rename(src, dst); err != nil {
		return nil, ConnectError(err, "moving %s to %s", src, dst)
	}
	e, err := Entry(dst)
	if err != nil {
		return nil, ConnectError(err, "stat %s", dst)
	}
	return connect.NewResponse(&rpc.MoveResponse{Entry: e}), nil
}

// ListDir lists a directory down to depth levels (0 and 1 mean its entries).
func (s *Service) ListDir(_ context.Context, req *connect.Request[rpc.ListDirRequest]) (*connect.Response[rpc.ListDirResponse], error) {
	_, root, err := s.resolve(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	depth := int(req.Msg.GetDepth())
	if depth < 1 {
		depth = 1
	}
	// A symlink to a directory is listed as the directory (as `ls` would).
	fi, err := os.Stat(root)
	if err != nil {
		return nil, ConnectError(err, "listing %s", root)
	}
	if !fi.IsDir() {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path %s is not a directory", root))
	}
	var entries []*rpc.EntryInfo
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, werr error) error {
		if p == root {
			return werr
		}
		if werr != nil {
			// An unreadable subdirectory should not fail the whole listing.
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		info, ierr := d.Info()
		if ierr != nil {
			return nil // vanished meanwhile
		}
		entries = append(entries, entryFromInfo(p, info))
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && strings.Count(rel, string(filepath.Separator))+1 >= depth {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, ConnectError(err, "listing %s", root)
	}
	return connect.NewResponse(&rpc.ListDirResponse{Entries: entries}), nil
}

// Remove deletes a file or a directory tree; a missing path is not an error
// (E2B's envd behaves like `rm -rf`).
func (s *Service) Remove(_ context.Context, req *connect.Request[rpc.RemoveRequest]) (*connect.Response[rpc.RemoveResponse], error) {
	_, path, err := s.resolve(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(path); err != nil {
		return nil, ConnectError(err, "removing %s", path)
	}
	return connect.NewResponse(&rpc.RemoveResponse{}), nil
}

// WatchDir streams filesystem events under a directory until the client
// disconnects or its deadline passes.
func (s *Service) WatchDir(ctx context.Context, req *connect.Request[rpc.WatchDirRequest], stream *connect.ServerStream[rpc.WatchDirResponse]) error {
	_, path, err := s.resolve(req.Header(), req.Msg.GetPath())
	if err != nil {
		return err
	}
	q := &eventQueue{notify: make(chan struct{}, 1)}
	w, err := startWatch(path, req.Msg.GetRecursive(), req.Msg.GetIncludeEntry(), req.Msg.GetAllowNetworkMounts(), q.push, s.log)
	if err != nil {
		return err
	}
	defer w.Close()
	if err := stream.Send(&rpc.WatchDirResponse{Event: &rpc.WatchDirResponse_Start{Start: &rpc.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}
	var tick <-chan time.Time
	if secs, err := strconv.Atoi(req.Header().Get(KeepaliveHeader)); err == nil && secs > 0 {
		t := time.NewTicker(time.Duration(secs) * time.Second)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.failed:
			return connect.NewError(connect.CodeInternal, fmt.Errorf("watching %s: %w", path, err))
		case <-tick:
			if err := stream.Send(&rpc.WatchDirResponse{Event: &rpc.WatchDirResponse_Keepalive{Keepalive: &rpc.WatchDirResponse_KeepAlive{}}}); err != nil {
				return err
			}
		case <-q.notify:
			for _, ev := range q.take() {
				if err := stream.Send(&rpc.WatchDirResponse{Event: &rpc.WatchDirResponse_Filesystem{Filesystem: ev}}); err != nil {
					return err
				}
			}
		}
	}
}

type pollWatcher struct {
	watch *watch
	queue *eventQueue
}

// CreateWatcher starts a watch whose events are collected for polling.
func (s *Service) CreateWatcher(_ context.Context, req *connect.Request[rpc.CreateWatcherRequest]) (*connect.Response[rpc.CreateWatcherResponse], error) {
	_, path, err := s.resolve(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	q := &eventQueue{notify: make(chan struct{}, 1)}
	w, err := startWatch(path, req.Msg.GetRecursive(), req.Msg.GetIncludeEntry(), req.Msg.GetAllowNetworkMounts(), q.push, s.log)
	if err != nil {
		return nil, err
	}
	id := uuid.NewString()
	s.mu.Lock()
	s.watchers[id] = &pollWatcher{watch: w, queue: q}
	s.mu.Unlock()
	return connect.NewResponse(&rpc.CreateWatcherResponse{WatcherId: id}), nil
}

// GetWatcherEvents returns and forgets the events collected so far.
func (s *Service) GetWatcherEvents(_ context.Context, req *connect.Request[rpc.GetWatcherEventsRequest]) (*connect.Response[rpc.GetWatcherEventsResponse], error) {
	s.mu.Lock()
	w, ok := s.watchers[req.Msg.GetWatcherId()]
	s.mu.Unlock()
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("watcher %q not found", req.Msg.GetWatcherId()))
	}
	select {
	case err := <-w.watch.failed:
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("watcher failed: %w", err))
	default:
	}
	return connect.NewResponse(&rpc.GetWatcherEventsResponse{Events: w.queue.take()}), nil
}

// RemoveWatcher stops a polling watcher.
func (s *Service) RemoveWatcher(_ context.Context, req *connect.Request[rpc.RemoveWatcherRequest]) (*connect.Response[rpc.RemoveWatcherResponse], error) {
	s.mu.Lock()
	w, ok := s.watchers[req.Msg.GetWatcherId()]
	delete(s.watchers, req.Msg.GetWatcherId())
	s.mu.Unlock()
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("watcher %q not found", req.Msg.GetWatcherId()))
	}
	w.watch.Close()
	return connect.NewResponse(&rpc.RemoveWatcherResponse{}), nil
}

// MkdirAllAs creates dir and its missing parents, giving each directory it
// creates to u (envd runs as root; files must belong to the acting user).
func MkdirAllAs(dir string, u userenv.User) error {
	dir = filepath.Clean(dir)
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s: %w", p, syscallENOTDIR)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := ChownTo(missing[i], u); err != nil {
			return err
		}
	}
	return nil
}

// ChownTo gives path to u when envd acts for another user; unprivileged envd
// (dev hosts) acting as itself leaves ownership alone.
func ChownTo(path string, u userenv.User) error {
	if !userenv.NeedsCredential(u) {
		return nil
	}
	if err := os.Lchown(path, int(u.UID), int(u.GID)); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, u.Name, err)
	}
	return nil
}
