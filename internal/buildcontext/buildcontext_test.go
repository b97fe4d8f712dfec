package buildcontext

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func names(t *testing.T, archive []byte) []string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
	}
}

// TestPackDockerignore packs contexts with Docker's .dockerignore rules:
// globs, directories, "**", exclusions bringing files back, comments.
func TestPackDockerignore(t *testing.T) {
	files := []string{
		"Dockerfile", "app.py", "README.md", "notes.md", "secret.env",
		"node_modules/x/index.js", "build/out.bin", "build/keep.txt",
		"src/a.go", "src/a_test.go", "src/deep/b_test.go", ".git/HEAD",
	}
	tests := []struct {
		name   string
		ignore string // "" : no .dockerignore
		want   []string
	}{
		{"no .dockerignore: all but .git", "", []string{
			"Dockerfile", "README.md", "app.py", "build/", "build/keep.txt", "build/out.bin", "node_modules/", "node_modules/x/",
			"node_modules/x/index.js", "notes.md", "secret.env", "src/", "src/a.go", "src/a_test.go", "src/deep/", "src/deep/b_test.go",
		}},
		{"patterns", "# comment\nnode_modules\n*.md\n!README.md\nsecret.env\n**/*_test.go\nbuild\n!build/keep.txt\n", []string{
			".dockerignore", "Dockerfile", "README.md", "app.py", "build/keep.txt", "src/", "src/a.go", "src/deep/",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range files {
				p := filepath.Join(dir, f)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.ignore != "" {
				if err := os.WriteFile(filepath.Join(dir, IgnoreFile), []byte(tc.ignore), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var buf bytes.Buffer
			if err := Pack(dir, &buf); err != nil {
				t.Fatal(err)
			}
			got := names(t, buf.Bytes())
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("packed\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestPackBadPattern(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, IgnoreFile), []byte("[\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Pack(dir, io.Discard); err == nil {
		t.Error("a malformed pattern packed")
	}
}
