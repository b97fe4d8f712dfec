package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	pb "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
)

// writeTemplateFiles lays out a built snapshot template: a disk with data
// at 0 and at 100 MiB in a 1 GiB sparse file, metadata, a snapshot dir.
func writeTemplateFiles(t *testing.T, dir, id string) {
	t.Helper()
	for _, d := range []string{filepath.Join(dir, "images", id), filepath.Join(dir, "templates", id, "snapshot")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(filepath.Join(dir, "templates", id, "rootfs.ext4"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte("a"), 3<<20+5), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tail"), 100<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for p, data := range map[string]string{
		filepath.Join("images", id, "rootfs.ext4"):        "flattened disk",
		filepath.Join("images", id, "build.json"):         `{"snapshot":true}`,
		filepath.Join("templates", id, "template.json"):   `{"template_id":"` + id + `"}`,
		filepath.Join("templates", id, "snapshot", "mem"): "memory",
	} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// transfer runs an export of id from src into an import into dst,
// through change (nil: untouched).
func transfer(t *testing.T, src, dst, id string, change func(*pb.TemplateChunk)) (int64, error) {
	t.Helper()
	var chunks []*pb.TemplateChunk
	if err := exportTemplate(context.Background(), src, id, func(c *pb.TemplateChunk) error {
		chunks = append(chunks, c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	i := 0
	_, n, err := importTemplate(context.Background(), dst, func() (*pb.TemplateChunk, error) {
		if i == len(chunks) {
			return nil, io.ErrUnexpectedEOF
		}
		c := chunks[i]
		i++
		if change != nil {
			change(c)
		}
		return c, nil
	})
	return n, err
}

func TestTemplateTransfer(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	writeTemplateFiles(t, src, "tpl1")
	n, err := transfer(t, src, dst, "tpl1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Holes are not sent: 3 MiB + a few bytes of the 1 GiB disk.
	if n > 8<<20 {
		t.Errorf("%d bytes sent for a sparse disk with ~3 MiB of data", n)
	}
	for _, p := range []string{
		filepath.Join("images", "tpl1", "rootfs.ext4"), filepath.Join("images", "tpl1", "build.json"),
		filepath.Join("templates", "tpl1", "template.json"), filepath.Join("templates", "tpl1", "snapshot", "mem"),
		filepath.Join("templates", "tpl1", "rootfs.ext4"),
	} {
		a, err := os.ReadFile(filepath.Join(src, p))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dst, p))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: copy differs (%v)", p, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dst, "templates", "tpl1", "rootfs.ext4"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 1<<30 || st.Blocks*512 > 16<<20 {
		t.Errorf("copied disk: size %d, %d bytes allocated; want 1 GiB, still sparse", st.Size, st.Blocks*512)
	}
	if left, _ := filepath.Glob(filepath.Join(dst, "templates", ".staging-*")); len(left) > 0 {
		t.Errorf("staging left: %v", left)
	}
	// A second copy of a template already here changes nothing.
	if _, err := transfer(t, src, dst, "tpl1", nil); err != nil {
		t.Errorf("second import: %v", err)
	}
}

func TestTemplateTransferRefusesBadStreams(t *testing.T) {
	src := t.TempDir()
	writeTemplateFiles(t, src, "tpl1")
	for _, tc := range []struct {
		name   string
		change func(*pb.TemplateChunk)
	}{
		{"a flipped byte", func(c *pb.TemplateChunk) {
			if len(c.Data) > 1000 {
				c.Data[999] ^= 1
			}
		}},
		{"a path outside the template", func(c *pb.TemplateChunk) {
			if c.Path == filepath.Join("images", "tpl1", "build.json") {
				c.Path = filepath.Join("images", "tpl1", "..", "..", "etc", "x")
			}
		}},
		{"another template's path", func(c *pb.TemplateChunk) {
			if c.Path == filepath.Join("images", "tpl1") {
				c.Path = filepath.Join("images", "other")
			}
		}},
		{"cut short", func(c *pb.TemplateChunk) {
			if c.Sha256 != nil {
				*c = pb.TemplateChunk{}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := t.TempDir()
			if _, err := transfer(t, src, dst, "tpl1", tc.change); err == nil {
				t.Fatal("imported")
			}
			for _, p := range []string{"images/tpl1", "templates/tpl1", "images/other", "etc"} {
				if _, err := os.Stat(filepath.Join(dst, p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s exists after a refused import", p)
				}
			}
			if left, _ := filepath.Glob(filepath.Join(dst, "templates", ".staging-*")); len(left) > 0 {
				t.Errorf("staging left: %v", left)
			}
		})
	}
	if err := exportTemplate(context.Background(), src, "missing", func(*pb.TemplateChunk) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("export of a missing template: %v", err)
	}
}
