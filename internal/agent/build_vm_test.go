//go:build vm

package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hearth-sandbox/hearth/internal/netns"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/templatebuild"
	"github.com/hearth-sandbox/hearth/internal/templatebuild/ocitest"
)

// newBuildVMEnv is newVMEnv on network objects and addresses of its own:
// the other VM tests of this process use e2eNetPrefix and e2eNetPool, and a
// shared guest address answers with someone else's envd.
func newBuildVMEnv(tb testing.TB, adjust ...func(*Options)) *vmEnv {
	tb.Helper()
	return newVMEnvWith(tb, func(o *Options) {
		for _, a := range adjust {
			a(o)
		}
		prefix, pool := testNetIdentity(os.Getpid(), 1)
		nm, err := netns.NewManager(context.Background(), netns.Config{
			Prefix: prefix, Pool: pool, Logger: o.Logger,
		})
		if err != nil {
			tb.Fatal(err)
		}
		o.Net = netAdapter{nm}
	}, "tiny")
}

type buildLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *buildLog) add(x templatebuild.Log) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, x.Time.Format("15:04:05.000")+" "+x.Message)
}

func (l *buildLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// buildDockerfile writes a context dir with the files and builds it.
func buildDockerfile(t *testing.T, ctx context.Context, m *Manager, artifact, ctxDir, df string) (BuildResult, *buildLog, error) {
	t.Helper()
	return buildDockerfileWith(t, ctx, m, BuildRequest{ArtifactID: artifact}, ctxDir, df)
}

// buildDockerfileWith builds df with req's artefact and disk fields (1
// vCPU, 256 MiB, a 512 MiB working disk).
func buildDockerfileWith(t *testing.T, ctx context.Context, m *Manager, req BuildRequest, ctxDir, df string) (BuildResult, *buildLog, error) {
	t.Helper()
	p, err := templatebuild.ParseDockerfile([]byte(df), ctxDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.ReadyCmd = "wget -q -O /dev/null http://127.0.0.1:8000/index.html"
	l := &buildLog{}
	req.Plan, req.VCPUs, req.MemoryMB, req.DiskSizeMB, req.Log = p, 1, 256, 512, l.add
	res, err := m.BuildTemplate(ctx, req)
	return res, l, err
}

// serveContext is a build context with index.html ("v1").
func serveContext(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

const serveDockerfile = `FROM tiny
ENV GREETING=hello
WORKDIR /srv
COPY index.html ./
RUN echo "$GREETING from RUN as $(id -un)" > /srv/run.txt
CMD ["httpd", "-f", "-p", "8000", "-h", "/srv"]
`

func TestVMTemplateBuild(t *testing.T) {
	e := newBuildVMEnv(t)
	m := e.agent.Manager()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ctxDir := serveContext(t)

	t0 := time.Now()
	res, l, err := buildDockerfile(t, ctx, m, "t1", ctxDir, serveDockerfile)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, l)
	}
	first := time.Since(t0)
	t.Logf("first build %s\n%s", first, l)
	if !res.Snapshot {
		t.Fatalf("no snapshot template for a template with a start command: %+v", res)
	}
	for i, c := range res.Cached {
		if c && i != 0 { // ENV is metadata
			t.Errorf("first build: step %d cached", i+1)
		}
	}

	// Create from the built template: the server answers at once, without
	// a boot (a snapshot template).
	t0 = time.Now()
	if _, err := m.Create(ctx, Spec{ID: "fromtpl1", TemplateID: "t1", TemplateKind: sbx.KindSnapshot, VCPUs: 1, MemoryMB: 256, AccessToken: "tok"}); err != nil {
		t.Fatal(err)
	}
	create := time.Since(t0)
	out := vmExec(t, e.client, "fromtpl1", "wget -q -O - http://127.0.0.1:8000/run.txt; wget -q -O - http://127.0.0.1:8000/index.html")
	if out != "hello from RUN as root\nv1\n" {
		t.Errorf("served by the start command right after create: %q", out)
	}
	t.Logf("create from the snapshot template: %s", create)
	if err := m.Destroy(ctx, "fromtpl1"); err != nil {
		t.Fatal(err)
	}

	// Unchanged rebuild: every step cached.
	t0 = time.Now()
	res, l, err = buildDockerfile(t, ctx, m, "t2", ctxDir, serveDockerfile)
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, l)
	}
	t.Logf("cached rebuild %s (first %s, ratio %.2f)", time.Since(t0), first, float64(time.Since(t0))/float64(first))
	for i, c := range res.Cached {
		if !c {
			t.Errorf("rebuild: step %d not cached\n%s", i+1, l)
		}
	}

	// A changed COPY rebuilds from there on.
	if err := os.WriteFile(filepath.Join(ctxDir, "index.html"), []byte("v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, l, err = buildDockerfile(t, ctx, m, "t3", ctxDir, serveDockerfile)
	if err != nil {
		t.Fatalf("changed build: %v\n%s", err, l)
	}
	if want := []bool{true, true, false, false}; !equalCached(res.Cached, want) {
		t.Errorf("changed build cached %v, want %v", res.Cached, want)
	}
	// The previous version stays usable.
	if _, err := m.Create(ctx, Spec{ID: "fromtpl2", TemplateID: "t1", TemplateKind: sbx.KindSnapshot, VCPUs: 1, MemoryMB: 256, AccessToken: "tok"}); err != nil {
		t.Fatal(err)
	}
	if out := vmExec(t, e.client, "fromtpl2", "wget -q -O - http://127.0.0.1:8000/index.html"); out != "v1\n" {
		t.Errorf("old version serves %q", out)
	}
	if err := m.Destroy(ctx, "fromtpl2"); err != nil {
		t.Fatal(err)
	}

	// A failing RUN: the step, its exit code and its output; nothing left.
	_, l, err = buildDockerfile(t, ctx, m, "t4", ctxDir, "FROM tiny\nRUN echo first\nRUN echo boom >&2; exit 3\n")
	var se *templatebuild.StepError
	if !errors.As(err, &se) || se.Step != 2 || se.Line != 3 || se.ExitCode != 3 || !strings.Contains(strings.Join(se.Output, "\n"), "boom") {
		t.Errorf("failing step: %v", err)
	}
	if exists(filepath.Join(e.data, "images", "t4")) || exists(m.templateDir("t4")) {
		t.Error("a failed build left its artefact")
	}

	// A cancelled build stops its VM and leaves nothing.
	cctx, ccancel := context.WithCancel(ctx)
	go func() {
		for !strings.Contains(l.String(), "RUN sleep") {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		ccancel()
	}()
	l = &buildLog{}
	p, _ := templatebuild.ParseDockerfile([]byte("FROM tiny\nRUN sleep 600\n"), ctxDir, nil)
	_, err = m.BuildTemplate(cctx, BuildRequest{ArtifactID: "t5", Plan: p, VCPUs: 1, MemoryMB: 256, DiskSizeMB: 512, Log: l.add})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled build: %v", err)
	}
	if exists(filepath.Join(e.data, "images", "t5")) {
		t.Error("a cancelled build left its artefact")
	}
	if ents, _ := os.ReadDir(filepath.Join(e.data, "builds", "vms")); len(ents) > 0 {
		t.Errorf("build VMs left: %v", ents)
	}
	if left, _ := filepath.Glob(filepath.Join(e.data, "builds", "cache", "*.tmp-*")); len(left) > 0 {
		t.Errorf("staging files left: %v", left)
	}
	if out, _ := exec.Command("pgrep", "-f", filepath.Join(e.data, "builds")).Output(); len(out) > 0 {
		t.Errorf("build VMM processes left: %s", out)
	}
}

func equalCached(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestVMTemplateBuildFromOCI builds from an image in an in-process registry
// (the tiny root filesystem as one layer) with a RUN step in a VM.
func TestVMTemplateBuildFromOCI(t *testing.T) {
	e := newBuildVMEnv(t)
	m := e.agent.Manager()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop,ro", filepath.Join(e.data, "images", "tiny", "rootfs.ext4"), mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tiny: %v: %s", err, out)
	}
	layer := ocitest.DirLayer(t, mnt)
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	reg := ocitest.Registry(t)
	ocitest.Push(t, reg+"/lib/busybox:1", v1.Config{Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "FROM_IMAGE=yes"}}, layer)

	p, err := templatebuild.ParseDockerfile([]byte("FROM "+reg+"/lib/busybox:1\nRUN echo \"image env: $FROM_IMAGE\" > /built.txt\n"), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l := &buildLog{}
	res, err := m.BuildTemplate(ctx, BuildRequest{ArtifactID: "oci1", Plan: p, VCPUs: 1, MemoryMB: 256, DiskSizeMB: 512, Log: l.add})
	if err != nil {
		t.Fatalf("build: %v\n%s", err, l)
	}
	t.Logf("%s", l)
	if res.Snapshot {
		t.Error("snapshot without a start command")
	}
	if _, err := m.Create(ctx, Spec{ID: "fromoci", TemplateID: "oci1", VCPUs: 1, MemoryMB: 256, AccessToken: "tok"}); err != nil {
		t.Fatal(err)
	}
	if out := vmExec(t, e.client, "fromoci", "cat /built.txt; id -un"); out != "image env: yes\nuser\n" {
		t.Errorf("sandbox from the OCI-built template: %q", out)
	}
	if err := m.Destroy(ctx, "fromoci"); err != nil {
		t.Fatal(err)
	}

	// An image without a shell: COPY works, a shell-form RUN says what it
	// needs.
	ocitest.Push(t, reg+"/lib/scratch:1", v1.Config{}, ocitest.Layer(t, ocitest.Entry{Name: "app", Dir: true}, ocitest.Entry{Name: "app/run", Body: "x", Mode: 0o755}))
	sctx := t.TempDir()
	if err := os.WriteFile(filepath.Join(sctx, "data.txt"), []byte("d"), 0o644); err != nil {
		t.Fatal(err)
	}
	sp, err := templatebuild.ParseDockerfile([]byte("FROM "+reg+"/lib/scratch:1\nCOPY data.txt /app/\nRUN echo hi\n"), sctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.BuildTemplate(ctx, BuildRequest{ArtifactID: "oci3", Plan: sp, VCPUs: 1, MemoryMB: 256, DiskSizeMB: 256})
	var se *templatebuild.StepError
	if !errors.As(err, &se) || se.Step != 2 || !strings.Contains(err.Error(), "no /bin/sh") {
		t.Errorf("shell-form RUN in an image without a shell: %v", err)
	}

	// A missing image fails fast, naming it and the registry's answer.
	p.FromImage = reg + "/lib/busybox:nope"
	t0 := time.Now()
	_, err = m.BuildTemplate(ctx, BuildRequest{ArtifactID: "oci2", Plan: p, VCPUs: 1, MemoryMB: 256})
	if err == nil || !strings.Contains(err.Error(), "busybox:nope") || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
		t.Errorf("missing image: %v", err)
	}
	t.Logf("missing image failed in %s", time.Since(t0))
}

// BenchmarkVMTemplateBuild measures, in one run: a first build (every step
// run: skipCache) against an unchanged rebuild (every step cached; the
// start command and snapshot still run), and a create from the built
// snapshot template (its server already serving) against a cold boot of
// its base image. Run with -benchtime=1x; each iteration builds twice and
// creates 3 sandboxes of each kind.
func BenchmarkVMTemplateBuild(b *testing.B) {
	e := newBuildVMEnv(b)
	m := e.agent.Manager()
	ctx := context.Background()
	ctxDir := b.TempDir()
	if err := os.WriteFile(filepath.Join(ctxDir, "index.html"), []byte("v1\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	p, err := templatebuild.ParseDockerfile([]byte(serveDockerfile), ctxDir, nil)
	if err != nil {
		b.Fatal(err)
	}
	p.ReadyCmd = "wget -q -O /dev/null http://127.0.0.1:8000/index.html"
	var first, cached, spawn, cold []time.Duration
	n := 0
	for b.Loop() {
		build := func(skip bool) time.Duration {
			n++
			t0 := time.Now()
			l := &buildLog{}
			defer func() { b.Logf("build %d (skipCache %v):\n%s", n, skip, l) }()
			if _, err := m.BuildTemplate(ctx, BuildRequest{ArtifactID: fmt.Sprintf("bench%d", n), Plan: p, VCPUs: 1, MemoryMB: 256, DiskSizeMB: 512, SkipCache: skip, Log: l.add}); err != nil {
				b.Fatal(err)
			}
			return time.Since(t0)
		}
		first = append(first, build(true))
		cached = append(cached, build(false))
		artifact := fmt.Sprintf("bench%d", n)
		for i := 0; i < 3; i++ {
			for _, kind := range []sbx.TemplateKind{sbx.KindSnapshot, sbx.KindBase} {
				tpl := artifact
				if kind == sbx.KindBase {
					tpl = "tiny"
				}
				id := fmt.Sprintf("bc%s%d%d", kind[:1], n, i)
				t0 := time.Now()
				if _, err := m.Create(ctx, Spec{ID: id, TemplateID: tpl, TemplateKind: kind, VCPUs: 1, MemoryMB: 256, AccessToken: "tok"}); err != nil {
					b.Fatal(err)
				}
				d := time.Since(t0)
				if kind == sbx.KindSnapshot {
					spawn = append(spawn, d)
				} else {
					cold = append(cold, d)
				}
				if err := m.Destroy(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	med := func(d []time.Duration) float64 {
		slices.Sort(d)
		return d[len(d)/2].Seconds()
	}
	b.ReportMetric(med(first), "first-build-s")
	b.ReportMetric(med(cached), "cached-build-s")
	b.ReportMetric(med(cached)/med(first), "cached/first")
	b.ReportMetric(med(spawn)*1000, "create-from-template-ms")
	b.ReportMetric(med(cold)*1000, "cold-boot-tiny-ms")
	b.ReportMetric(med(spawn)/med(cold), "template/cold")
}

// TestVMTemplateDiskSize: a build's disk size is baked into the template
// and its sandboxes see it in the guest (df /): an explicit size for a
// snapshot template (frozen with that disk), E2B's minFreeDiskMb on top of
// the built file system for a disk-only one.
func TestVMTemplateDiskSize(t *testing.T) {
	e := newBuildVMEnv(t)
	m := e.agent.Manager()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ctxDir := serveContext(t)
	dfSize := func(id string) string {
		f := strings.Fields(vmExec(t, e.client, id, "df -B1 / | tail -1"))
		if len(f) < 2 {
			t.Fatalf("df / in %s: %q", id, f)
		}
		return f[1]
	}

	res, l, err := buildDockerfileWith(t, ctx, m, BuildRequest{ArtifactID: "d1", TemplateDiskMB: 3072}, ctxDir, serveDockerfile)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, l)
	}
	if !res.Snapshot || res.DiskSizeMB != 3072 {
		t.Fatalf("snapshot template: %+v, want a snapshot with a 3072 MiB disk", res)
	}
	if _, err := m.Create(ctx, Spec{ID: "disk1", TemplateID: "d1", TemplateKind: sbx.KindSnapshot, VCPUs: 1, MemoryMB: 256, DiskSizeMB: 3072, AccessToken: "tok"}); err != nil {
		t.Fatal(err)
	}
	if got := dfSize("disk1"); !sizeNear(got, 3072) {
		t.Errorf("df / of a sandbox of a 3072 MiB snapshot template: %s bytes", got)
	}
	if err := m.Destroy(ctx, "disk1"); err != nil {
		t.Fatal(err)
	}

	// No start command: the flattened disk, grown to the template's size
	// when a sandbox boots from it.
	free := 1500
	res, l, err = buildDockerfileWith(t, ctx, m, BuildRequest{ArtifactID: "d2", MinFreeDiskMB: &free}, ctxDir, "FROM tiny\nRUN echo hi > /hi\n")
	if err != nil {
		t.Fatalf("build: %v\n%s", err, l)
	}
	fsMB := int((res.DiskBytes + 1<<20 - 1) >> 20)
	if res.Snapshot || res.DiskSizeMB != fsMB+free {
		t.Fatalf("disk template: %+v, want no snapshot and %d+%d MiB", res, fsMB, free)
	}
	if _, err := m.Create(ctx, Spec{ID: "disk2", TemplateID: "d2", TemplateKind: sbx.KindBase, VCPUs: 1, MemoryMB: 256, DiskSizeMB: res.DiskSizeMB, AccessToken: "tok"}); err != nil {
		t.Fatal(err)
	}
	if got := dfSize("disk2"); !sizeNear(got, int64(res.DiskSizeMB)) {
		t.Errorf("df / of a sandbox of a %d MiB template: %s bytes", res.DiskSizeMB, got)
	}
	if err := m.Destroy(ctx, "disk2"); err != nil {
		t.Fatal(err)
	}
}

// TestVMTemplateUserWorkdirReady: a template's last USER and WORKDIR are
// its sandboxes' default user and directory (as E2B's setUser and
// setWorkdir persist), and the SDK's waitForPort and waitForURL pass in an
// image that has neither ss nor curl (tiny: busybox without them).
func TestVMTemplateUserWorkdirReady(t *testing.T) {
	e := newBuildVMEnv(t)
	m := e.agent.Manager()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ctxDir := serveContext(t)
	const df = `FROM tiny
RUN echo 'app:x:1500:1500::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1500:' >> /etc/group
USER app
WORKDIR /srv/www
COPY index.html ./
CMD ["httpd", "-f", "-p", "8000", "-h", "/srv/www"]
`
	for _, bin := range []string{"ss", "curl"} {
		if imageHas(t, e, "tiny", bin) {
			t.Fatalf("tiny has %s: the test would not show the agent's own ready check", bin)
		}
	}
	tests := []struct {
		artifact, ready string
	}{
		// The commands the e2b SDK 2.x sends for waitForPort(8000) and
		// waitForURL('http://localhost:8000/index.html').
		{"uw1", `[ -n "$(ss -Htuln sport = :8000)" ]`},
		{"uw2", `curl -s -o /dev/null -w "%{http_code}" http://localhost:8000/index.html | grep -q "200"`},
	}
	for _, tc := range tests {
		res, l, err := buildDF(t, ctx, m, tc.artifact, df, ctxDir, tc.ready)
		if err != nil {
			t.Fatalf("%s: build: %v\n%s", tc.ready, err, l)
		}
		if !res.Snapshot || res.Config.User != "app" || res.Config.Workdir != "/srv/www" {
			t.Fatalf("%s: result %+v", tc.ready, res)
		}
		// No user or directory named: the template's.
		if out := runInTemplate(t, ctx, e, tc.artifact, sbx.KindSnapshot, "id -un; pwd; wget -q -O - http://127.0.0.1:8000/index.html"); out != "app\n/srv/www\nv1\n" {
			t.Errorf("%s: sandbox of the template: %q", tc.ready, out)
		}
	}
}

// imageHas reports whether the image's root disk has bin in a PATH
// directory (read with debugfs, no boot).
func imageHas(t *testing.T, e *vmEnv, img, bin string) bool {
	t.Helper()
	for _, dir := range []string{"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin"} {
		out, _ := exec.Command("debugfs", "-R", "stat "+dir+"/"+bin, filepath.Join(e.data, "images", img, "rootfs.ext4")).CombinedOutput()
		if strings.Contains(string(out), "Inode:") {
			return true
		}
	}
	return false
}

// TestVMTemplateBuildCacheCap: after a build the step cache is trimmed to
// its cap (here 1 byte: everything goes), the template stays usable, and
// the next build of the same steps runs them again.
func TestVMTemplateBuildCacheCap(t *testing.T) {
	e := newBuildVMEnv(t, func(o *Options) { o.BuildCacheBytes = 1 })
	m := e.agent.Manager()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i, artifact := range []string{"cap1", "cap2"} {
		res, l, err := buildDF(t, ctx, m, artifact, "FROM tiny\nRUN echo cached? > /c.txt\n", "", "")
		if err != nil {
			t.Fatalf("build %d: %v\n%s", i+1, err, l)
		}
		if len(res.Cached) != 1 || res.Cached[0] {
			t.Errorf("build %d: cached %v: the pruned step came from the cache", i+1, res.Cached)
		}
		left, _ := filepath.Glob(filepath.Join(e.data, "builds", "cache", "*.ext4"))
		if len(left) != 0 {
			t.Errorf("build %d: the cache holds %v over its cap", i+1, left)
		}
	}
	if out := runInTemplate(t, ctx, e, "cap2", sbx.KindBase, "cat /c.txt"); out != "cached?\n" {
		t.Errorf("sandbox of the template: %q", out)
	}
}

// A USER without an account in the image is reported and not made the
// sandboxes' default (envd could run nothing as it).
func TestVMTemplateUnknownUser(t *testing.T) {
	e := newBuildVMEnv(t)
	m := e.agent.Manager()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, l, err := buildDF(t, ctx, m, "nouser", "FROM tiny\nUSER 4242\n", "", "")
	if err != nil {
		t.Fatalf("build: %v\n%s", err, l)
	}
	if res.Config.User != "" || !strings.Contains(l.String(), "USER 4242 has no account") {
		t.Errorf("config %+v, log:\n%s", res.Config, l)
	}
	if out := runInTemplate(t, ctx, e, "nouser", sbx.KindBase, "id -un"); out != "user\n" {
		t.Errorf("sandbox user: %q", out)
	}
}

// runInTemplate runs script in a new sandbox of the template (1 vCPU,
// 256 MiB), destroyed afterwards, and returns its output.
func runInTemplate(t *testing.T, ctx context.Context, e *vmEnv, template string, kind sbx.TemplateKind, script string) string {
	t.Helper()
	m := e.agent.Manager()
	id := "run" + strings.ToLower(strings.NewReplacer("-", "", "_", "", ".", "").Replace(template))
	if _, err := m.Create(ctx, Spec{ID: id, TemplateID: template, TemplateKind: kind, VCPUs: 1, MemoryMB: 256, AccessToken: "tok"}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Destroy(context.WithoutCancel(ctx), id); err != nil {
			t.Error(err)
		}
	}()
	return vmExec(t, e.client, id, script)
}

// buildDF parses df (context ctxDir, "" for none) and builds it as
// artifact with 1 vCPU, 256 MiB and a 512 MiB working disk; ready is the
// ready command ("" for none).
func buildDF(t *testing.T, ctx context.Context, m *Manager, artifact, df, ctxDir, ready string) (BuildResult, *buildLog, error) {
	t.Helper()
	if ctxDir == "" {
		ctxDir = t.TempDir()
	}
	p, err := templatebuild.ParseDockerfile([]byte(df), ctxDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.ReadyCmd = ready
	l := &buildLog{}
	res, err := m.BuildTemplate(ctx, BuildRequest{ArtifactID: artifact, Plan: p, VCPUs: 1, MemoryMB: 256, DiskSizeMB: 512, ReadyTimeout: 2 * time.Minute, Log: l.add})
	return res, l, err
}
