package templatebuild

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hearth-sandbox/hearth/internal/templatebuild/ocitest"
)

// noVM is the Runner of builds without RUN steps: booting is a test failure.
type noVM struct{ t *testing.T }

func (n noVM) Boot(context.Context, string, Shape) (Guest, error) {
	n.t.Error("this build has no RUN step and must not boot a VM")
	return nil, errors.New("no VM in this test")
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop mounts and file ownership")
	}
}

func newBuilder(t *testing.T) *Builder {
	b, err := New(Options{Dir: t.TempDir(), Runner: noVM{t}, GuestBinaries: func(context.Context) ([]byte, []byte, error) {
		return []byte("#!init\n"), []byte("#!envd\n"), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// debugfsCat reads a file out of an unmounted ext4 image.
func debugfsCat(t *testing.T, img, p string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+p, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", p, err)
	}
	return string(out)
}

func debugfsStat(t *testing.T, img, p string) string {
	t.Helper()
	out, _ := exec.Command("debugfs", "-R", "stat "+p, img).CombinedOutput()
	return string(out)
}

type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) add(x Log) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, x.Message)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func TestOCILayersAndCopyBuild(t *testing.T) {
	needRoot(t)
	reg := ocitest.Registry(t)
	ref := reg + "/hearth/layers:1"
	ocitest.Push(t, ref, v1.Config{
		Env: []string{"PATH=/bin", "LANG=C.UTF-8"}, WorkingDir: "/srv", User: "app",
		Entrypoint: []string{"/bin/serve"}, Cmd: []string{"--port", "80 80"},
	},
		ocitest.Layer(t,
			ocitest.Entry{Name: "bin", Dir: true},
			ocitest.Entry{Name: "bin/serve", Body: "v1", Mode: 0o755},
			ocitest.Entry{Name: "etc", Dir: true},
			ocitest.Entry{Name: "etc/passwd", Body: "root:x:0:0::/root:/bin/sh\napp:x:1500:1600::/srv:/bin/sh\n"},
			ocitest.Entry{Name: "etc/group", Body: "root:x:0:\napp:x:1600:\n"},
			ocitest.Entry{Name: "gone.txt", Body: "lower"},
			ocitest.Entry{Name: "opq", Dir: true},
			ocitest.Entry{Name: "opq/old.txt", Body: "lower"},
			ocitest.Entry{Name: "opq/sub", Dir: true},
			ocitest.Entry{Name: "opq/sub/deep.txt", Body: "lower"},
			ocitest.Entry{Name: "keep", Dir: true},
			ocitest.Entry{Name: "keep/a.txt", Body: "lower"},
		),
		ocitest.Layer(t,
			// The opaque marker after this layer's own file: only lower
			// content goes.
			ocitest.Entry{Name: "opq/new.txt", Body: "upper"},
			ocitest.Entry{Name: "opq/.wh..wh..opq"},
			ocitest.Entry{Name: ".wh.gone.txt"},
			ocitest.Entry{Name: "bin/serve", Body: "v2", Mode: 0o755},
			ocitest.Entry{Name: "link", Linkname: "bin/serve"},
		),
	)

	ctxDir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(ctxDir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ctxDir, name), []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	write("app.py", "print('v1')\n")
	write("conf/a.conf", "a\n")
	df := []byte("FROM " + ref + "\nWORKDIR /opt/app\nCOPY --chown=app app.py ./\nCOPY conf /etc/conf/\nENV MODE=prod\nEXPOSE 80\n")

	b := newBuilder(t)
	build := func(skip bool) (Result, string, *logs) {
		t.Helper()
		p, err := ParseDockerfile(df, ctxDir, nil)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "rootfs.ext4")
		l := &logs{}
		res, err := b.Build(context.Background(), Request{Plan: p, Output: out, DiskSizeMB: 256, SkipCache: skip, Log: l.add})
		if err != nil {
			t.Fatalf("build: %v\n%s", err, l)
		}
		return res, out, l
	}
	res, img, l := build(false)
	if !strings.Contains(l.String(), "EXPOSE has no effect") {
		t.Errorf("EXPOSE not reported:\n%s", l)
	}
	for p, want := range map[string]string{
		"/bin/serve": "v2", "/opq/new.txt": "upper", "/keep/a.txt": "lower",
		"/opt/app/app.py": "print('v1')\n", "/etc/conf/a.conf": "a\n",
		"/sbin/init": "#!init\n", "/usr/bin/envd": "#!envd\n",
	} {
		if got := debugfsCat(t, img, p); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	for _, gone := range []string{"/gone.txt", "/opq/old.txt", "/opq/sub"} {
		if st := debugfsStat(t, img, gone); !strings.Contains(st, "not found") {
			t.Errorf("%s survived its whiteout: %s", gone, st)
		}
	}
	if st := debugfsStat(t, img, "/opt/app/app.py"); !strings.Contains(st, "User:  1500   Group:  1600") {
		t.Errorf("--chown=app not applied: %s", st)
	}
	if st := debugfsStat(t, img, "/etc/conf/a.conf"); !strings.Contains(st, "User:     0   Group:     0") || !strings.Contains(st, "Mode:  0640") {
		t.Errorf("COPY without --chown: want root, mode kept: %s", st)
	}
	if !strings.Contains(debugfsCat(t, img, "/etc/passwd"), "user:x:1000:1000") {
		t.Error("no hearth user account added to the image")
	}
	if res.Config.Env["MODE"] != "prod" || res.Config.Env["LANG"] != "C.UTF-8" || res.Config.Workdir != "/opt/app" || res.Config.User != "app" {
		t.Errorf("config = %+v", res.Config)
	}
	if res.StartCmd != "/bin/serve --port '80 80'" {
		t.Errorf("start command from the image config = %q", res.StartCmd)
	}
	if want := []bool{false, false, false, true}; !equalBools(res.Cached, want) {
		t.Errorf("first build cached = %v", res.Cached)
	}

	// Unchanged: every step from the cache.
	res, _, l = build(false)
	for i, c := range res.Cached {
		if !c {
			t.Errorf("rebuild: step %d not cached\n%s", i+1, l)
		}
	}
	// A changed file rebuilds its COPY and what follows, not what precedes.
	write("conf/a.conf", "b\n")
	res, img, _ = build(false)
	if want := []bool{true, true, false, true}; !equalBools(res.Cached, want) {
		t.Errorf("after a change cached = %v, want %v", res.Cached, want)
	}
	if got := debugfsCat(t, img, "/etc/conf/a.conf"); got != "b\n" {
		t.Errorf("changed file = %q", got)
	}
	// skipCache rebuilds every disk step.
	res, _, _ = build(true)
	if want := []bool{false, false, false, true}; !equalBools(res.Cached, want) {
		t.Errorf("skipCache cached = %v, want %v", res.Cached, want)
	}
}

func equalBools(a, b []bool) bool {
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

func TestBuildBadInput(t *testing.T) {
	needRoot(t)
	reg := ocitest.Registry(t)
	ocitest.Push(t, reg+"/hearth/min:1", v1.Config{}, ocitest.Layer(t, ocitest.Entry{Name: "etc", Dir: true}))
	b := newBuilder(t)
	ctxDir := t.TempDir()
	// An image with no account database still gets root and user.
	p, err := ParseDockerfile([]byte("FROM "+reg+"/hearth/min:1\n"), ctxDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	if _, err := b.Build(context.Background(), Request{Plan: p, Output: out, DiskSizeMB: 128}); err != nil {
		t.Fatal(err)
	}
	if pw := debugfsCat(t, out, "/etc/passwd"); !strings.HasPrefix(pw, "root:x:0:0:") || !strings.Contains(pw, "\nuser:x:1000:1000:") {
		t.Errorf("passwd of a minimal image: %q", pw)
	}
	for _, tc := range []struct {
		name, df string
		want     []string
	}{
		{"unknown tag", "FROM " + reg + "/hearth/min:nope\n", []string{reg + "/hearth/min:nope", "MANIFEST_UNKNOWN"}},
		{"unknown repository", "FROM " + reg + "/nobody/here\n", []string{reg + "/nobody/here", "NAME_UNKNOWN"}},
		{"no registry", "FROM 127.0.0.1:1/x/y:1\n", []string{"127.0.0.1:1/x/y:1", "connection refused"}},
		{"missing copy source", "FROM " + reg + "/hearth/min:1\nCOPY nothere /x\n", []string{"step 1", "line 2", `"nothere"`, "no such file"}},
		{"unknown chown user", "FROM " + reg + "/hearth/min:1\nCOPY --chown=ghost . /x\n", []string{"step 1", `no "ghost"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseDockerfile([]byte(tc.df), ctxDir, nil)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "rootfs.ext4")
			t0 := time.Now()
			_, err = b.Build(context.Background(), Request{Plan: p, Output: out, DiskSizeMB: 128})
			if err == nil {
				t.Fatal("build succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if d := time.Since(t0); d > 30*time.Second {
				t.Errorf("failing took %s", d)
			}
			if _, serr := os.Stat(out); serr == nil {
				t.Error("a failed build left an output file")
			}
			left, _ := filepath.Glob(filepath.Join(b.o.Dir, "cache", "*.tmp-*"))
			work, _ := os.ReadDir(filepath.Join(b.o.Dir, "work"))
			if len(left) > 0 || len(work) > 0 {
				t.Errorf("leftovers: %v %v", left, work)
			}
		})
	}
}

// TestPruneCache: the least recently used entries go until the cache fits
// its cap; partial entries (.tmp-) and other files are left alone.
func TestPruneCache(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "cache"), 0o700); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Hour)
	entry := func(name string, mib int, age time.Duration) string {
		t.Helper()
		p := filepath.Join(dir, "cache", name)
		if err := os.WriteFile(p, bytes.Repeat([]byte{1}, mib<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, base.Add(-age), base.Add(-age)); err != nil {
			t.Fatal(err)
		}
		return p
	}
	oldest := entry("a.ext4", 2, 3*time.Minute)
	older := entry("b.ext4", 2, 2*time.Minute)
	recent := entry("c.ext4", 2, time.Minute)
	partial := entry("d.ext4.tmp-1", 2, time.Hour)
	touch(oldest) // used just now: the most recent
	n, freed, err := PruneCache(dir, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || freed < 2<<20 {
		t.Errorf("removed %d entries, %d bytes; want 1, 2 MiB", n, freed)
	}
	for p, want := range map[string]bool{oldest: true, older: false, recent: true, partial: true} {
		if got := exists(p); got != want {
			t.Errorf("%s present %v, want %v", filepath.Base(p), got, want)
		}
	}
}
