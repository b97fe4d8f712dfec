package fssvc

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"connectrpc.com/connect"
	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	rpc "github.com/hearth-sandbox/hearth/gen/envd/filesystem"
)

var syscallENOTDIR = syscall.ENOTDIR

// eventQueue is an unbounded FIFO of events with a wake-up channel.
type eventQueue struct {
	mu     sync.Mutex
	events []*rpc.FilesystemEvent
	notify chan struct{}
}

func (q *eventQueue) push(ev *rpc.FilesystemEvent) {
	q.mu.Lock()
	q.events = append(q.events, ev)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (q *eventQueue) take() []*rpc.FilesystemEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	ev := q.events
	q.events = nil
	return ev
}

// Filesystem magic numbers (statfs f_type) of network and FUSE mounts, where
// inotify sees only local changes.
var networkFS = map[int64]string{
	0x6969:     "nfs",
	0xFF534D42: "cifs",
	0x517B:     "smb",
	0xFE534D42: "smb2",
	0x65735546: "fuse",
}

// watch turns fsnotify events under root into FilesystemEvents.
type watch struct {
	fsw          *fsnotify.Watcher
	root         string
	recursive    bool
	includeEntry bool
	emit         func(*rpc.FilesystemEvent)
	log          *slog.Logger
	failed       chan error // receives at most one fatal error
	closeOnce    sync.Once
	done         chan struct{}
}

func startWatch(root string, recursive, includeEntry, allowNetwork bool, emit func(*rpc.FilesystemEvent), log *slog.Logger) (*watch, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, ConnectError(err, "watching %s", root)
	}
	if !fi.IsDir() {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path %s is not a directory", root))
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(root, &sfs); err == nil {
		if kind, ok := networkFS[int64(sfs.Type)]; ok && !allowNetwork {
			return nil, connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("%s is on a %s mount where change events are unreliable; set allow_network_mounts to watch it anyway", root, kind))
		}
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("creating watcher: %w", err))
	}
	w := &watch{
		fsw: fsw, root: root, recursive: recursive, includeEntry: includeEntry,
		emit: emit, log: log, failed: make(chan error, 1), done: make(chan struct{}),
	}
	if err := w.add(root); err != nil {
		_ = fsw.Close()
		return nil, ConnectError(err, "watching %s", root)
	}
	go w.run()
	return w, nil
}

// add watches dir and, for recursive watches, every directory below it.
func (w *watch) add(dir string) error {
	if !w.recursive {
		return w.fsw.Add(dir)
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			return nil
		}
		if d.IsDir() {
			if err := w.fsw.Add(p); err != nil && p == dir {
				return err
			}
		}
		return nil
	})
}

func (w *watch) run() {
	for {
		select {
		case <-w.done:
			return
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				w.log.Warn("watch event overflow", "root", w.root)
				continue
			}
			select {
			case w.failed <- err:
			default:
			}
			return
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			w.handle(ev)
		}
	}
}

func (w *watch) handle(ev fsnotify.Event) {
	if w.recursive && ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
			_ = w.add(ev.Name)
		}
	}
	name, err := filepath.Rel(w.root, ev.Name)
	if err != nil {
		name = ev.Name
	}
	for _, m := range []struct {
		op fsnotify.Op
		t  rpc.EventType
	}{
		{fsnotify.Create, rpc.EventType_EVENT_TYPE_CREATE},
		{fsnotify.Write, rpc.EventType_EVENT_TYPE_WRITE},
		{fsnotify.Remove, rpc.EventType_EVENT_TYPE_REMOVE},
		{fsnotify.Rename, rpc.EventType_EVENT_TYPE_RENAME},
		{fsnotify.Chmod, rpc.EventType_EVENT_TYPE_CHMOD},
	} {
		if !ev.Has(m.op) {
			continue
		}
		out := &rpc.FilesystemEvent{Name: name, Type: m.t}
		if w.includeEntry && m.t != rpc.EventType_EVENT_TYPE_REMOVE && m.t != rpc.EventType_EVENT_TYPE_RENAME {
			if e, err := Entry(ev.Name); err == nil {
				out.Entry = e
			}
		}
		w.emit(out)
	}
}

// Close stops the watch; it is safe to call more than once.
func (w *watch) Close() {
	w.closeOnce.Do(func() {
		close(w.done)
		_ = w.fsw.Close()
	})
}
