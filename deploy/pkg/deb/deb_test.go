package deb_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/deploy/internal/buildtest"
	"github.com/hearth-sandbox/hearth/deploy/pkg/deb"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The package installs (dpkg into a separate root, maintainer scripts
// included) and its units pass systemd-analyze verify.
func TestDebInstallsAndUnitsVerify(t *testing.T) {
	bin := buildtest.Hearth(t)
	out := t.TempDir()
	pkg, err := deb.Build(deb.Options{Dir: buildtest.DeployDir(), Binary: bin, Version: "0.1.0", OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	info := run(t, "dpkg-deb", "--info", pkg)
	for _, want := range []string{"Package: hearth", "Version: 0.1.0", "postinst"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}

	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The root has no other packages: its dependencies are not there.
	run(t, "dpkg", "--root="+root, "--force-script-chrootless", "--force-depends", "--force-not-root", "-i", pkg)
	status := run(t, "dpkg", "--root="+root, "-s", "hearth")
	if !strings.Contains(status, "Status: install ok installed") {
		t.Fatalf("not installed:\n%s", status)
	}
	for _, f := range []string{"usr/bin/hearth", "lib/systemd/system/hearth-server.service", "lib/systemd/system/hearth-agent.service",
		"etc/hearth/server.env", "etc/hearth/agent.env", "usr/lib/sysusers.d/hearth.conf"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("installed file: %v", err)
		}
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil || !strings.Contains(string(passwd), "hearth:x:") {
		t.Errorf("postinst did not create the hearth user: %v %q", err, passwd)
	}
	if v := run(t, filepath.Join(root, "usr/bin/hearth"), "--help"); !strings.Contains(v, "server") {
		t.Errorf("installed binary --help: %s", v)
	}

	// systemd-analyze checks ExecStart exists: point it at the installed
	// binary, nothing else changes.
	units := t.TempDir()
	var paths []string
	for _, u := range []string{"hearth-server.service", "hearth-agent.service"} {
		b, err := os.ReadFile(filepath.Join(root, "lib/systemd/system", u))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(units, u)
		unit := strings.ReplaceAll(string(b), "ExecStart=/usr/bin/hearth", "ExecStart="+filepath.Join(root, "usr/bin/hearth"))
		if err := os.WriteFile(p, []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	verify := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, paths...)...)
	if vout, err := verify.CombinedOutput(); err != nil || len(strings.TrimSpace(string(vout))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, vout)
	}

	run(t, "dpkg", "--root="+root, "--force-script-chrootless", "--force-not-root", "--purge", "hearth")
	if _, err := os.Stat(filepath.Join(root, "usr/bin/hearth")); !os.IsNotExist(err) {
		t.Errorf("binary left after purge: %v", err)
	}
}
