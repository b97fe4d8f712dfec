package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// apt wraps the host's apt tools: every package hearth puts in a guest
// comes from the apt sources this machine is configured with.
type apt struct {
	progress *progress
	updated  bool
}

// run executes a command and returns its stdout; stderr goes into the error.
func run(ctx context.Context, dir string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(stderr.String(), 5))
	}
	return out, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// update runs apt-get update once, used only when the package lists do
// not know a package (fresh machine).
func (a *apt) update(ctx context.Context) error {
	if a.updated {
		return nil
	}
	a.updated = true
	a.progress.logf("apt-get update")
	_, err := run(ctx, "", "apt-get", "update", "-q")
	return err
}

// candidate returns the version apt would install for pkg.
func (a *apt) candidate(ctx context.Context, pkg string) (string, error) {
	for attempt := 0; ; attempt++ {
		out, err := run(ctx, "", "apt-cache", "show", "--no-all-versions", pkg)
		if err == nil {
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "Version: "); ok {
					return strings.TrimSpace(v), nil
				}
			}
		}
		if attempt > 0 {
			return "", fmt.Errorf("package %s unknown to apt: %w", pkg, err)
		}
		if uerr := a.update(ctx); uerr != nil {
			return "", uerr
		}
	}
}

// kernelPackage resolves the versioned kernel package the metapackage
// depends on (linux-image-cloud-amd64 -> linux-image-6.1.0-NN-cloud-amd64).
func (a *apt) kernelPackage(ctx context.Context, meta string) (string, error) {
	if _, err := a.candidate(ctx, meta); err != nil {
		return "", err
	}
	out, err := run(ctx, "", "apt-cache", "depends", meta)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		dep, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Depends: ")
		if ok && strings.HasPrefix(dep, "linux-image-") {
			return strings.Trim(dep, "<>"), nil
		}
	}
	return "", fmt.Errorf("%s depends on no linux-image-* package", meta)
}

// download fetches pkg=version into cacheDir/debs/<pkg>_<version>/ unless
// it is there already, and returns the .deb path.
func (a *apt) download(ctx context.Context, cacheDir, pkg, version string) (string, error) {
	dir := filepath.Join(cacheDir, "debs", pkg+"_"+strings.ReplaceAll(version, ":", "%3a"))
	if m, _ := filepath.Glob(filepath.Join(dir, "*.deb")); len(m) == 1 {
		return m[0], nil
	}
	tmp := dir + ".partial"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	a.progress.logf("apt-get download %s=%s", pkg, version)
	// Sandbox::User=root: the _apt user cannot write into a root-owned
	// data dir; the download itself is still verified by apt.
	if _, err := run(ctx, tmp, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg+"="+version); err != nil {
		return "", err
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	m, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(m) != 1 {
		return "", fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(m))
	}
	return m[0], nil
}

// aptMirror returns the first Debian mirror URI (and suite) configured for
// apt on this host, so debootstrap uses the same source as apt. Both the
// deb822 *.sources format and the one-line sources.list are read.
func aptMirror(root string) (uri, suite string, err error) {
	var files []string
	files = append(files, filepath.Join(root, "etc/apt/sources.list"))
	m, _ := filepath.Glob(filepath.Join(root, "etc/apt/sources.list.d/*.sources"))
	files = append(files, m...)
	m, _ = filepath.Glob(filepath.Join(root, "etc/apt/sources.list.d/*.list"))
	files = append(files, m...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var u, s string
		if strings.HasSuffix(f, ".sources") {
			u, s = parseDeb822(string(b))
		} else {
			u, s = parseOneLine(string(b))
		}
		if u != "" {
			return u, s, nil
		}
	}
	return "", "", errors.New("no Debian main mirror found in /etc/apt/sources.list{,.d}")
}

// isMainSuite rejects -security/-updates/-backports suites: debootstrap
// needs the release itself.
func isMainSuite(s string) bool {
	return s != "" && !strings.Contains(s, "-") && !strings.Contains(s, "/")
}

func parseDeb822(text string) (string, string) {
	for _, stanza := range strings.Split(text, "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if ok && !strings.HasPrefix(line, " ") {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if !strings.Contains(" "+fields["types"]+" ", " deb ") || !strings.Contains(" "+fields["components"]+" ", " main ") {
			continue
		}
		if strings.EqualFold(fields["enabled"], "no") {
			continue
		}
		uris := strings.Fields(fields["uris"])
		for _, s := range strings.Fields(fields["suites"]) {
			if isMainSuite(s) && len(uris) > 0 {
				return uris[0], s
			}
		}
	}
	return "", ""
}

func parseOneLine(text string) (string, string) {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") { // options: [arch=amd64 signed-by=...]
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) == 0 {
				continue
			}
			f = f[1:]
		}
		if len(f) >= 3 && isMainSuite(f[1]) && contains(f[2:], "main") {
			return f[0], f[1]
		}
	}
	return "", ""
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
