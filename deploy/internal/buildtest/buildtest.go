// Package buildtest builds the hearth binary of the enclosing repository
// for the packaging tests (once per test binary).
package buildtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	once sync.Once
	path string
	err  error
	out  []byte
)

// Hearth returns a statically linked hearth built from ../cmd/hearth; the
// build cache keeps repeated runs fast.
func Hearth(t *testing.T) string {
	t.Helper()
	once.Do(func() {
		var dir string
		dir, err = os.MkdirTemp("", "hearth-package-test-")
		if err != nil {
			return
		}
		path = filepath.Join(dir, "hearth")
		cmd := exec.Command("go", "build", "-trimpath", "-o", path, "./cmd/hearth")
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err = cmd.CombinedOutput()
	})
	if err != nil {
		t.Fatalf("build hearth: %v\n%s", err, out)
	}
	return path
}

// repoRoot is the directory above deploy/.
func repoRoot() string {
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "deploy", "go.mod")); err == nil {
			return d
		}
	}
	return wd
}

// DeployDir is the deploy/ directory.
func DeployDir() string { return filepath.Join(repoRoot(), "deploy") }
