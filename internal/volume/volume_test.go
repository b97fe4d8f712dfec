package volume

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDirContent(t *testing.T) {
	d := Dir{Root: t.TempDir()}
	const id = "vol1"
	if err := d.Create(id); err != nil {
		t.Fatal(err)
	}
	data, _ := d.DataPath(id)
	if fi, err := os.Stat(d.Root); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("volumes directory: %v %v, want 0700", fi.Mode(), err)
	}
	outside := filepath.Join(d.Root, "secret")
	if err := os.WriteFile(outside, []byte("host"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A guest may plant a symlink pointing out of the volume.
	if err := os.Symlink(outside, filepath.Join(data, "escape")); err != nil {
		t.Fatal(err)
	}
	mode := uint32(0o600)
	e, err := d.Write(id, "/a/b/f.txt", strings.NewReader("hello"), Attrs{Mode: &mode})
	if err != nil || e.Type != "file" || e.Size != 5 || e.Mode != 0o600 || e.Path != "/a/b/f.txt" || e.UID != DefaultOwner {
		t.Fatalf("write: %+v %v", e, err)
	}
	f, err := d.Open(id, "a/b/f.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "hello" {
		t.Fatalf("read %q", b)
	}
	list, err := d.List(id, "/", 3)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range list {
		paths = append(paths, e.Path+":"+e.Type)
	}
	if got := strings.Join(paths, ","); got != "/a:directory,/a/b:directory,/a/b/f.txt:file,/escape:symlink" {
		t.Fatalf("list = %s", got)
	}
	for _, tc := range []struct {
		name string
		op   func() error
		want error
	}{
		{"read through symlink", func() error { _, err := d.Open(id, "/escape"); return err }, nil},
		{"dotdot stays inside", func() error { _, err := d.Stat(id, "/../secret"); return err }, fs.ErrNotExist},
		{"write through symlink", func() error { _, err := d.Write(id, "/escape/x", strings.NewReader("x"), Attrs{}); return err }, nil},
		{"remove root", func() error { return d.Remove(id, "/") }, ErrInvalid},
		{"bad id", func() error { _, err := d.Stat("../x", "/"); return err }, ErrInvalid},
		{"missing", func() error { _, err := d.Stat(id, "/nope"); return err }, fs.ErrNotExist},
		{"mkdir exists", func() error { _, err := d.Mkdir(id, "/a", false, Attrs{}); return err }, fs.ErrExist},
	} {
		err := tc.op()
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if b, _ := os.ReadFile(outside); string(b) != "host" {
		t.Fatalf("the file outside the volume changed: %q", b)
	}
	if err := d.Remove(id, "/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(id, "/a/b/f.txt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after remove: %v", err)
	}
	if err := d.Delete(id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after delete: %v", err)
	}
}
