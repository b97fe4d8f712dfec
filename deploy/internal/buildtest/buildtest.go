// Package buildtest builds the hearth binary of the enclosing repository
// for the packaging tests.
package buildtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Hearth returns a statically linked hearth built from ../cmd/hearth into
// the test's temporary directory; Go's build cache keeps it quick.
func Hearth(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hearth")
	cmd := exec.Command("go", "build", "-trimpath", "-o", path, "./cmd/hearth")
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
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
