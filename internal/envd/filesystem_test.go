package envd_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"

	rpc "github.com/hearth-sandbox/hearth/gen/envd/filesystem"
)

func TestStatMakeDirMoveRemove(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	for _, codec := range codecs {
		t.Run(codec.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			fc := h.fs(codec.opts)
			dir := t.TempDir()
			file := filepath.Join(dir, "f.txt")
			if err := os.WriteFile(file, []byte("12345"), 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("f.txt", filepath.Join(dir, "link")); err != nil {
				t.Fatal(err)
			}

			st, err := fc.Stat(ctx, connect.NewRequest(&rpc.StatRequest{Path: file}))
			if err != nil {
				t.Fatal(err)
			}
			e := st.Msg.GetEntry()
			if e.GetName() != "f.txt" || e.GetType() != rpc.FileType_FILE_TYPE_FILE || e.GetSize() != 5 ||
				e.GetMode() != 0o640 || e.GetPermissions() != "-rw-r-----" || e.GetOwner() != "root" || e.GetPath() != file || e.GetModifiedTime() == nil {
				t.Errorf("stat file = %v", e)
			}
			st, err = fc.Stat(ctx, connect.NewRequest(&rpc.StatRequest{Path: filepath.Join(dir, "link")}))
			if err != nil {
				t.Fatal(err)
			}
			if st.Msg.GetEntry().GetType() != rpc.FileType_FILE_TYPE_SYMLINK || st.Msg.GetEntry().GetSymlinkTarget() != file {
				t.Errorf("stat link = %v", st.Msg.GetEntry())
			}
			_, err = fc.Stat(ctx, connect.NewRequest(&rpc.StatRequest{Path: filepath.Join(dir, "missing")}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("stat missing: %v, want not_found", err)
			}

			nested := filepath.Join(dir, "a", "b", "c")
			md, err := fc.MakeDir(ctx, connect.NewRequest(&rpc.MakeDirRequest{Path: nested}))
			if err != nil {
				t.Fatal(err)
			}
			if md.Msg.GetEntry().GetType() != rpc.FileType_FILE_TYPE_DIRECTORY || md.Msg.GetEntry().GetPath() != nested {
				t.Errorf("makedir entry = %v", md.Msg.GetEntry())
			}
			_, err = fc.MakeDir(ctx, connect.NewRequest(&rpc.MakeDirRequest{Path: nested}))
			if connect.CodeOf(err) != connect.CodeAlreadyExists {
				t.Errorf("makedir again: %v, want already_exists", err)
			}
			_, err = fc.MakeDir(ctx, connect.NewRequest(&rpc.MakeDirRequest{Path: file}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("makedir over file: %v, want invalid_argument", err)
			}

			dst := filepath.Join(dir, "moved", "g.txt")
			mv, err := fc.Move(ctx, connect.NewRequest(&rpc.MoveRequest{Source: file, Destination: dst}))
			if err != nil {
				t.Fatal(err)
			}
			if mv.Msg.GetEntry().GetPath() != dst || mv.Msg.GetEntry().GetSize() != 5 {
				t.Errorf("move entry = %v", mv.Msg.GetEntry())
			}
			if _, err := os.Stat(file); !os.IsNotExist(err) {
				t.Errorf("source still exists: %v", err)
			}
			_, err = fc.Move(ctx, connect.NewRequest(&rpc.MoveRequest{Source: file, Destination: dst}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("move missing: %v, want not_found", err)
			}

			if _, err := fc.Remove(ctx, connect.NewRequest(&rpc.RemoveRequest{Path: filepath.Join(dir, "a")})); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, "a")); !os.IsNotExist(err) {
				t.Errorf("removed tree still exists: %v", err)
			}
			// rm -rf semantics: removing what is not there is fine.
			if _, err := fc.Remove(ctx, connect.NewRequest(&rpc.RemoveRequest{Path: filepath.Join(dir, "a")})); err != nil {
				t.Errorf("remove missing: %v", err)
			}
		})
	}
}

func TestRelativePathsResolveToHome(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	name := "envd-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Join("/root", name)) })
	if _, err := h.fs(nil).MakeDir(testCtx(t), connect.NewRequest(&rpc.MakeDirRequest{Path: name})); err != nil {
		t.Fatal(err)
	}
	st, err := h.fs(nil).Stat(testCtx(t), connect.NewRequest(&rpc.StatRequest{Path: "~/" + name}))
	if err != nil {
		t.Fatal(err)
	}
	if st.Msg.GetEntry().GetPath() != filepath.Join("/root", name) {
		t.Fatalf("path = %q", st.Msg.GetEntry().GetPath())
	}
}

func TestMakeDirOwnedByUser(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	base, err := os.MkdirTemp("", "envd-own-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	req := connect.NewRequest(&rpc.MakeDirRequest{Path: filepath.Join(base, "x", "y")})
	req.Header().Set("Authorization", basicUser("nobody"))
	res, err := h.fs(nil).MakeDir(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Msg.GetEntry().GetOwner() != "nobody" {
		t.Fatalf("owner = %q, want nobody", res.Msg.GetEntry().GetOwner())
	}
	st, err := h.fs(nil).Stat(testCtx(t), connect.NewRequest(&rpc.StatRequest{Path: filepath.Join(base, "x")}))
	if err != nil {
		t.Fatal(err)
	}
	if st.Msg.GetEntry().GetOwner() != "nobody" {
		t.Fatalf("created parent owner = %q, want nobody", st.Msg.GetEntry().GetOwner())
	}
}

func TestListDirDepth(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	dir := t.TempDir()
	for _, p := range []string{"a/b/c/deep.txt", "a/one.txt", "top.txt"} {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		depth uint32
		want  []string
	}{
		{0, []string{"a", "top.txt"}},
		{1, []string{"a", "top.txt"}},
		{2, []string{"a", "a/b", "a/one.txt", "top.txt"}},
		{3, []string{"a", "a/b", "a/b/c", "a/one.txt", "top.txt"}},
		{10, []string{"a", "a/b", "a/b/c", "a/b/c/deep.txt", "a/one.txt", "top.txt"}},
	}
	for _, codec := range codecs {
		for _, tc := range cases {
			res, err := h.fs(codec.opts).ListDir(testCtx(t), connect.NewRequest(&rpc.ListDirRequest{Path: dir, Depth: tc.depth}))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range res.Msg.GetEntries() {
				rel, _ := filepath.Rel(dir, e.GetPath())
				got = append(got, rel)
				if e.GetName() != filepath.Base(e.GetPath()) {
					t.Errorf("entry name %q vs path %q", e.GetName(), e.GetPath())
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s depth %d: got %v, want %v", codec.name, tc.depth, got, tc.want)
			}
		}
	}
	_, err := h.fs(nil).ListDir(testCtx(t), connect.NewRequest(&rpc.ListDirRequest{Path: filepath.Join(dir, "top.txt")}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("list file: %v, want invalid_argument", err)
	}
	_, err = h.fs(nil).ListDir(testCtx(t), connect.NewRequest(&rpc.ListDirRequest{Path: filepath.Join(dir, "nope")}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("list missing: %v, want not_found", err)
	}
}

type fsEvent struct {
	name string
	typ  rpc.EventType
}

func TestWatchDir(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	for _, codec := range codecs {
		for _, recursive := range []bool{false, true} {
			name := codec.name
			if recursive {
				name += "/recursive"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				sub := filepath.Join(dir, "sub")
				if err := os.Mkdir(sub, 0o755); err != nil {
					t.Fatal(err)
				}
				stream, err := h.fs(codec.opts).WatchDir(testCtx(t), connect.NewRequest(&rpc.WatchDirRequest{Path: dir, Recursive: recursive, IncludeEntry: true}))
				if err != nil {
					t.Fatal(err)
				}
				defer stream.Close()
				if !stream.Receive() || stream.Msg().GetStart() == nil {
					t.Fatalf("first message is not the start event: %v %v", stream.Msg(), stream.Err())
				}
				// The watch is active once the start event arrived.
				target := "f.txt"
				if recursive {
					target = "sub/f.txt"
				}
				full := filepath.Join(dir, target)
				if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				want := []fsEvent{
					{target, rpc.EventType_EVENT_TYPE_CREATE},
					{target, rpc.EventType_EVENT_TYPE_WRITE},
					{target, rpc.EventType_EVENT_TYPE_REMOVE},
				}
				var got []fsEvent
				for len(got) < len(want) && stream.Receive() {
					ev := stream.Msg().GetFilesystem()
					if ev == nil || ev.GetName() != target {
						continue
					}
					got = append(got, fsEvent{ev.GetName(), ev.GetType()})
					// The file exists until the write event was seen, so
					// include_entry must have filled in the entry.
					if ev.GetType() != rpc.EventType_EVENT_TYPE_REMOVE && ev.GetEntry().GetPath() != full {
						t.Errorf("%v event entry = %v, want path %s", ev.GetType(), ev.GetEntry(), full)
					}
					if ev.GetType() == rpc.EventType_EVENT_TYPE_WRITE {
						if err := os.Remove(full); err != nil {
							t.Fatal(err)
						}
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("events = %v, want %v (err %v)", got, want, stream.Err())
				}
			})
		}
	}
}

func TestWatchDirErrors(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for path, code := range map[string]connect.Code{filepath.Join(dir, "nope"): connect.CodeNotFound, file: connect.CodeInvalidArgument} {
		stream, err := h.fs(nil).WatchDir(testCtx(t), connect.NewRequest(&rpc.WatchDirRequest{Path: path}))
		if err == nil {
			for stream.Receive() {
			}
			err = stream.Err()
		}
		if connect.CodeOf(err) != code {
			t.Errorf("watch %s: %v, want %v", path, err, code)
		}
	}
}

func TestPollingWatcher(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	for _, codec := range codecs {
		t.Run(codec.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			fc := h.fs(codec.opts)
			dir := t.TempDir()
			cw, err := fc.CreateWatcher(ctx, connect.NewRequest(&rpc.CreateWatcherRequest{Path: dir}))
			if err != nil {
				t.Fatal(err)
			}
			id := cw.Msg.GetWatcherId()
			if err := os.Mkdir(filepath.Join(dir, "new"), 0o755); err != nil {
				t.Fatal(err)
			}
			var got []fsEvent
			for len(got) == 0 && ctx.Err() == nil {
				res, err := fc.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
				if err != nil {
					t.Fatal(err)
				}
				for _, ev := range res.Msg.GetEvents() {
					got = append(got, fsEvent{ev.GetName(), ev.GetType()})
				}
			}
			if len(got) == 0 || got[0] != (fsEvent{"new", rpc.EventType_EVENT_TYPE_CREATE}) {
				t.Fatalf("events = %v", got)
			}
			if _, err := fc.RemoveWatcher(ctx, connect.NewRequest(&rpc.RemoveWatcherRequest{WatcherId: id})); err != nil {
				t.Fatal(err)
			}
			_, err = fc.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("events of removed watcher: %v, want not_found", err)
			}
		})
	}
}
