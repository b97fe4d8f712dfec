// Package layering pins hearth's layering rules with `go list`, as
// Tailscale's dependency tests do: a forbidden import fails here, in the
// ordinary test suite, rather than in a reviewer's reading.
package layering

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const module = "github.com/hearth-sandbox/hearth/"

// hostSide runs on every host; controlPlane is the server's. The host side
// must build without any of the control plane (go list -deps, tests
// excluded).
var (
	hostSide     = []string{"agent", "vmm", "rootfs", "netns", "sandboxsnap", "pagesrv", "snapshot", "templatebuild", "volume", "egressproxy"}
	controlPlane = []string{"service", "store", "proxy", "api", "e2bapi", "controlplane", "scheduler", "reconciler", "dashboard", "fleet", "citemplate"}
)

func TestHostSideImportsNoControlPlane(t *testing.T) {
	var patterns []string
	for _, p := range hostSide {
		patterns = append(patterns, "./internal/"+p+"/...")
	}
	deps := goList(t, append([]string{"-tags", "vm", "-f", "{{.ImportPath}} {{join .Deps \" \"}}"}, patterns...)...)
	for _, root := range hostSide {
		if !hasPkgUnder(deps, root) {
			t.Fatalf("no package under internal/%s: the rule would pass vacuously", root)
		}
	}
	for pkg, ds := range deps {
		for _, d := range ds {
			if cp := controlPlanePkg(d); cp != "" {
				t.Errorf("%s depends on control-plane package %s", strings.TrimPrefix(pkg, module), strings.TrimPrefix(d, module))
			}
		}
	}
}

// The forbidden list names packages that exist, so a rename cannot make
// the test above pass by forgetting one.
func TestControlPlanePackagesExist(t *testing.T) {
	var patterns []string
	for _, p := range controlPlane {
		patterns = append(patterns, "./internal/"+p)
	}
	got := goList(t, append([]string{"-f", "{{.ImportPath}}"}, patterns...)...)
	for _, p := range controlPlane {
		if _, ok := got[module+"internal/"+p]; !ok {
			t.Errorf("control-plane package internal/%s does not exist: update the list", p)
		}
	}
}

// The check itself recognises a violation (a test that cannot fail is a
// defect): the control plane's own packages do depend on the store.
func TestDetectsAViolation(t *testing.T) {
	deps := goList(t, "-f", "{{.ImportPath}} {{join .Deps \" \"}}", "./internal/reconciler")
	found := false
	for _, d := range deps[module+"internal/reconciler"] {
		found = found || controlPlanePkg(d) == "store"
	}
	if !found {
		t.Fatal("internal/reconciler shows no dependency on internal/store: the dependency listing is broken")
	}
}

func controlPlanePkg(importPath string) string {
	rest, ok := strings.CutPrefix(importPath, module+"internal/")
	if !ok {
		return ""
	}
	top, _, _ := strings.Cut(rest, "/")
	for _, cp := range controlPlane {
		if top == cp {
			return cp
		}
	}
	return ""
}

func hasPkgUnder(deps map[string][]string, root string) bool {
	for p := range deps {
		if p == module+"internal/"+root || strings.HasPrefix(p, module+"internal/"+root+"/") {
			return true
		}
	}
	return false
}

// goList runs `go list args...` at the module root and maps each output
// line's first field to the rest.
func goList(t *testing.T, args ...string) map[string][]string {
	t.Helper()
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), append([]string{"list"}, args...)...)
	cmd.Dir = filepath.Join("..", "..")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, stderr.String())
	}
	m := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			m[f[0]] = f[1:]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}
