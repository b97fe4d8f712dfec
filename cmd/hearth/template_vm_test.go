//go:build vm

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/devstack"
	"github.com/hearth-sandbox/hearth/internal/templatebuild/ocitest"
)

// TestTemplateCLIDev drives `hearth template` against a real dev stack
// (control plane + agent in this process, QEMU microVMs): a build from a
// Dockerfile whose FROM is a private image (credentials through
// --registry-user and $HEARTH_REGISTRY_PASSWORD, refused ones a 400 naming
// the registry) with --build-arg and a .dockerignore'd context; ls, logs;
// a sandbox of it starting in its WORKDIR; a rebuild reclaiming the
// superseded version once its sandbox is gone; a failing build's exit code
// and message; rm. The password is in no file of the data dir and no log
// line.
func TestTemplateCLIDev(t *testing.T) {
	images := devImages(t)
	const user, pass = "ada", "Pa55-in-no-log-9f3c"
	reg := ocitest.PrivateRegistry(t, user, pass)
	ref := reg + "/team/busybox:1"
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop,ro", filepath.Join(images, "images", "tiny", "rootfs.ext4"), mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tiny: %v: %s", err, out)
	}
	layer := ocitest.DirLayer(t, mnt)
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	ocitest.PushPrivate(t, ref, user, pass, v1.Config{Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}, layer)

	data := t.TempDir()
	cfg := config.Default()
	cfg.DataDir, cfg.Listen = data, "127.0.0.1:0"
	// The stack's log, outside the data dir: read at the end.
	logFile, err := os.Create(filepath.Join(t.TempDir(), "hearth.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	ctx := context.Background()
	stack, err := devstack.Start(ctx, devstack.Options{Config: cfg, ImagesFrom: images, Logger: slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatalf("start the dev stack: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := stack.Close(cctx); err != nil {
			t.Errorf("close the dev stack: %v", err)
		}
		unmountUnder(data)
	})
	t.Setenv(cli.EnvConfig, filepath.Join(t.TempDir(), "cli.json"))
	t.Setenv(cli.EnvURL, stack.URL)
	t.Setenv(cli.EnvAPIKey, stack.Credentials.APIKey)
	t.Setenv(cli.EnvToken, "")

	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Dockerfile", "FROM "+ref+`
ARG GREETING=hi
RUN echo "$GREETING from RUN" | tee /greeting.txt
WORKDIR /app
COPY . ./
CMD ["httpd", "-f", "-p", "8000", "-h", "/app"]
`)
	write(".dockerignore", "secret.txt\n*.log\n")
	write("index.html", "v1\n")
	write("secret.txt", "not for the image\n")
	write("debug.log", "noise\n")
	build := func(args ...string) (apiwire.Build, result) {
		t.Helper()
		r := hearth(t, "", append([]string{"template", "build", "-o", "json", "--build-arg", "GREETING=hello", "--registry-user", user,
			"--ready-cmd", "wget -q -O /dev/null http://127.0.0.1:8000/index.html", "--cpus", "1", "--memory", "256"}, args...)...)
		var b apiwire.Build
		if r.err == nil {
			if err := json.Unmarshal([]byte(r.stdout), &b); err != nil {
				t.Fatalf("build -o json printed %q: %v", r.stdout, err)
			}
		}
		return b, r
	}

	// Refused credentials: a 400 naming the registry, before any build runs.
	t.Setenv(envRegistryPassword, "wrong")
	_, r := build("--name", "web", dir)
	if r.err == nil || !strings.Contains(r.err.Error(), "registry "+reg+" refused the credentials") || !strings.Contains(r.err.Error(), "HTTP 400") || cli.ExitCode(r.err) != 1 {
		t.Fatalf("wrong registry password: %v", r.err)
	}
	t.Setenv(envRegistryPassword, pass)
	b1, r := build("--name", "web", dir)
	if r.err != nil {
		t.Fatalf("build: %v\nstderr:\n%s", r.err, r.stderr)
	}
	if b1.Status != "ready" || !strings.Contains(r.stderr, "hello from RUN") {
		t.Fatalf("build %+v, log:\n%s", b1, r.stderr)
	}

	r = hearth(t, "", "template", "ls").ok(t)
	if !strings.Contains(r.stdout, "web ") || !strings.Contains(r.stdout, "start: httpd -f -p 8000 -h /app") {
		t.Errorf("template ls:\n%s", r.stdout)
	}
	r = hearth(t, "", "template", "logs", "web").ok(t)
	if !strings.Contains(r.stdout, "hello from RUN") || !strings.Contains(r.stdout, "build ready") {
		t.Errorf("template logs:\n%s", r.stdout)
	}

	// A sandbox of it: in the WORKDIR, the .dockerignore'd files absent.
	id := strings.TrimSpace(hearth(t, "", "sandbox", "create", "-t", "web", "-q").ok(t).stdout)
	r = hearth(t, "", "sandbox", "exec", id, "--", "sh", "-c", "pwd; cat /greeting.txt; ls -A; wget -q -O - http://127.0.0.1:8000/index.html").ok(t)
	if want := "/app\nhello from RUN\n.dockerignore\nDockerfile\nindex.html\nv1\n"; r.stdout != want {
		t.Errorf("in the sandbox: %q, want %q", r.stdout, want)
	}

	// A rebuild supersedes the first version; its files stay while the
	// sandbox made from it lives, and go after.
	write("index.html", "v2\n")
	b2, r := build("--name", "web", dir)
	if r.err != nil || b2.Status != "ready" {
		t.Fatalf("rebuild: %v %+v\n%s", r.err, b2, r.stderr)
	}
	oldFiles := filepath.Join(data, "images", b1.ID)
	if _, err := os.Stat(oldFiles); err != nil {
		t.Errorf("the superseded version's files went while a sandbox of it runs: %v", err)
	}
	oldSnap := filepath.Join(data, "templates", b1.ID)
	oldBytes := diskUse(t, oldFiles) + diskUse(t, oldSnap)
	hearth(t, "", "sandbox", "rm", id).ok(t)
	if n, _ := stack.ControlPlane.Service.ReclaimOnce(ctx); n != 1 {
		t.Errorf("reclaimed %d builds, want the superseded one", n)
	}
	for _, p := range []string{oldFiles, oldSnap} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("the superseded version's files: %v", err)
		}
	}
	t.Logf("reclaimed the superseded version: %.1f MiB of disk", float64(oldBytes)/(1<<20))
	// Both builds are listed; the first says its files are gone.
	c := cli.NewClient(stack.URL, stack.Credentials.APIKey, "")
	if got, err := c.GetBuild(ctx, "web", b1.ID); err != nil || got.ReclaimedAt == nil {
		t.Errorf("the superseded build: %+v, %v", got, err)
	}
	if got, err := c.GetBuild(ctx, "web", b2.ID); err != nil || got.ReclaimedAt != nil || got.Status != "ready" {
		t.Errorf("the current build: %+v, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(data, "images", b2.ID, "rootfs.ext4")); err != nil {
		t.Errorf("the current version: %v", err)
	}

	// A failing build: exit code 1, the step, its exit code and output.
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "Dockerfile"), []byte("FROM tiny\nRUN echo about to fail; exit 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = hearth(t, "", "template", "build", "--name", "broken", bad)
	if r.err == nil || cli.ExitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "step 1 (Dockerfile line 2)") ||
		!strings.Contains(r.err.Error(), "exit code 3") || !strings.Contains(r.err.Error(), "about to fail") {
		t.Errorf("failing build: exit %d, %v", cli.ExitCode(r.err), r.err)
	}

	hearth(t, "", "template", "rm", "web").ok(t)
	if r = hearth(t, "", "template", "ls").ok(t); strings.Contains(r.stdout, "web ") {
		t.Errorf("ls after rm:\n%s", r.stdout)
	}
	if _, err := os.Stat(filepath.Join(data, "images", b2.ID)); !os.IsNotExist(err) {
		t.Errorf("files after rm: %v", err)
	}

	// The password is nowhere: not in the store, the build logs or the
	// process's log.
	if logged, err := os.ReadFile(logFile.Name()); err != nil || len(logged) == 0 || bytes.Contains(logged, []byte(pass)) {
		t.Errorf("the log (%d bytes, %v) shows the registry password, or is not there", len(logged), err)
	}
	scanned := false
	err = filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil // a data dir entry gone meanwhile (a VM's run dir)
		}
		if fi, err := d.Info(); err != nil || !fi.Mode().IsRegular() || fi.Size() > 64<<20 {
			return nil // root disks and memory files: the guest never got the password
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		if bytes.Contains(b, []byte(pass)) {
			t.Errorf("%s holds the registry password", p)
		}
		// The store's records of the build are among what was read.
		scanned = scanned || bytes.Contains(b, []byte(b1.ID))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !scanned {
		t.Error("no file of the data dir records the build: the password check read nothing that matters")
	}
}

// diskUse is the disk space the files under dir take (allocated blocks).
func diskUse(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		n += st.Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// unmountUnder unmounts what the agent left mounted under dir (its rootfs
// pool), deepest first.
func unmountUnder(dir string) {
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var under []string
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], filepath.Clean(dir)+"/") {
			under = append(under, f[1])
		}
	}
	for i := len(under) - 1; i >= 0; i-- {
		_ = exec.Command("umount", "-l", under[i]).Run()
	}
}
