package templatebuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-sandbox/hearth/internal/image"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
)

// Shape is the microVM a build's RUN steps get (the template's own).
type Shape struct {
	VCPUs         int
	MemoryMB      int
	AllowInternet bool
}

// Command is one process to run in a build VM.
type Command struct {
	Args []string
	Env  map[string]string
	Cwd  string
	User string
}

// Runner boots build VMs. The host agent implements it with its VMM
// driver, network slots and envd, as for sandboxes.
type Runner interface {
	// Boot starts a microVM whose root disk is the raw ext4 image at disk,
	// used in place (the build owns the file).
	Boot(ctx context.Context, disk string, shape Shape) (Guest, error)
}

// Guest is a running build VM.
type Guest interface {
	// Exec runs a command to completion, streaming its output; it returns
	// the exit code. An error means the command could not run.
	Exec(ctx context.Context, c Command, out func(stderr bool, p []byte)) (int, error)
	// Close flushes the guest's writes to its disk and stops the VM; the
	// disk is consistent afterwards. Idempotent.
	Close(ctx context.Context) error
}

// Log is one build log line.
type Log struct {
	Time    time.Time `json:"timestamp"`
	Level   string    `json:"level"` // info, warn, error
	Step    int       `json:"step"`  // 1-based; 0: not a step
	Message string    `json:"message"`
}

// StepError is a step that failed: which one, its exit code (RUN) and
// its last lines of output.
type StepError struct {
	Step     int
	Line     int // Dockerfile line, 0 if none
	Text     string
	ExitCode int
	Output   []string
	Err      error
}

func (e *StepError) Error() string {
	where := fmt.Sprintf("step %d", e.Step)
	if e.Line > 0 {
		where += fmt.Sprintf(" (Dockerfile line %d)", e.Line)
	}
	msg := fmt.Sprintf("%s %s: ", where, e.Text)
	if e.Err != nil {
		msg += e.Err.Error()
	} else {
		msg += fmt.Sprintf("exit code %d", e.ExitCode)
	}
	if len(e.Output) > 0 {
		msg += "; last output:\n" + strings.Join(e.Output, "\n")
	}
	return msg
}

func (e *StepError) Unwrap() error { return e.Err }

// Options configure a Builder.
type Options struct {
	// Dir holds the step cache and work files (e.g. DATA/builds).
	Dir    string
	Runner Runner
	// GuestBinaries returns hearth-init and envd, installed into images
	// that come from an OCI registry.
	GuestBinaries func(ctx context.Context) (initBin, envdBin []byte, err error)
}

// Builder runs builds. Safe for concurrent use: cache entries appear by
// rename, so two builds of one step do the work twice but never see a
// partial result.
type Builder struct{ o Options }

// New returns a Builder.
func New(o Options) (*Builder, error) {
	if o.Dir == "" || o.Runner == nil || o.GuestBinaries == nil {
		return nil, errors.New("templatebuild: Dir, Runner and GuestBinaries are required")
	}
	for _, d := range []string{"cache", "work"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	return &Builder{o: o}, nil
}

// Request is one build.
type Request struct {
	Plan Plan
	// FromDisk is the root disk of Plan.FromTemplate (resolved by the
	// caller), FromConfig that template's configuration.
	FromDisk   string
	FromConfig Config
	Auth       RegistryAuth
	Shape      Shape
	// DiskSizeMB is the working disk's size while steps run (the result is
	// shrunk to its contents).
	DiskSizeMB int
	SkipCache  bool
	// Output is where the flattened root disk is written (atomically).
	Output string
	Log    func(Log)
}

// Result describes a finished build.
type Result struct {
	Config   Config `json:"config"`
	StartCmd string `json:"start_cmd,omitempty"`
	ReadyCmd string `json:"ready_cmd,omitempty"`
	// Cached[i] says whether step i+1 came from the cache.
	Cached    []bool `json:"cached"`
	DiskBytes int64  `json:"disk_bytes"`
}

type run struct {
	b   *Builder
	req Request
	cfg Config
}

func (r *run) log(step int, level, format string, args ...any) {
	if r.req.Log != nil {
		r.req.Log(Log{Time: time.Now().UTC(), Level: level, Step: step, Message: fmt.Sprintf(format, args...)})
	}
}

func (b *Builder) cachePath(key string) string {
	return filepath.Join(b.o.Dir, "cache", key+".ext4")
}

// Build runs req to completion. On error nothing is left at req.Output.
func (b *Builder) Build(ctx context.Context, req Request) (Result, error) {
	if req.DiskSizeMB <= 0 {
		req.DiskSizeMB = 4096
	}
	if req.Shape.VCPUs <= 0 {
		req.Shape.VCPUs = 2
	}
	if req.Shape.MemoryMB <= 0 {
		req.Shape.MemoryMB = 1024
	}
	r := &run{b: b, req: req}
	p := req.Plan
	for _, n := range p.Notes {
		r.log(0, "warn", "%s", n)
	}
	key, disk, start, err := r.source(ctx)
	if err != nil {
		return Result{}, err
	}
	res := Result{StartCmd: start, ReadyCmd: p.ReadyCmd}
	if p.StartCmd != "" {
		res.StartCmd = p.StartCmd
	}
	force := req.SkipCache
	for i, s := range p.Steps {
		n := i + 1
		force = force || s.Force
		if s.Type == StepCopy && s.FilesHash == "" {
			h, err := filesHash(s.Context, s.Args[:len(s.Args)-1])
			if err != nil {
				return Result{}, &StepError{Step: n, Line: s.Line, Text: s.String(), Err: err}
			}
			s.FilesHash = h
		}
		key = stepKey(key, s, r.cfg)
		t0 := time.Now()
		switch s.Type {
		case StepEnv:
			for j := 0; j+1 < len(s.Args); j += 2 {
				r.cfg.Env[s.Args[j]] = s.Args[j+1]
			}
			r.log(n, "info", "%s", s)
			res.Cached = append(res.Cached, true)
			continue
		case StepUser:
			r.cfg.User = s.Args[0]
			r.log(n, "info", "%s", s)
			res.Cached = append(res.Cached, true)
			continue
		case StepWorkdir:
			r.cfg.Workdir = resolveDir(r.cfg.Workdir, s.Args[0])
		case StepRun, StepCopy:
		default:
			return Result{}, &StepError{Step: n, Line: s.Line, Text: s.String(), Err: fmt.Errorf("unknown step type %q", s.Type)}
		}
		out := b.cachePath(key)
		if !force && exists(out) {
			touch(out)
			r.log(n, "info", "CACHED %s", s)
			res.Cached = append(res.Cached, true)
			disk = out
			continue
		}
		r.log(n, "info", "%s", s)
		if err := r.step(ctx, n, s, disk, out); err != nil {
			return Result{}, err
		}
		r.log(n, "info", "done in %s", time.Since(t0).Round(time.Millisecond))
		res.Cached = append(res.Cached, false)
		disk = out
	}
	r.log(0, "info", "flattening the root disk")
	if err := rootfs.FlattenRootfs(ctx, rootfs.Disk{Path: disk, Format: "raw"}, req.Output); err != nil {
		return Result{}, err
	}
	st, err := os.Stat(req.Output)
	if err != nil {
		return Result{}, err
	}
	res.Config, res.DiskBytes = r.cfg, st.Size()
	r.log(0, "info", "root disk %d MiB", st.Size()>>20)
	return res, nil
}

// source prepares the build's starting disk: a hearth template's disk or
// an OCI image unpacked with the guest essentials added, grown to the
// working size. It returns the cache key chain's start.
func (r *run) source(ctx context.Context) (key, disk, start string, err error) {
	p := r.req.Plan
	size := int64(r.req.DiskSizeMB) << 20
	switch {
	case p.FromTemplate != "":
		r.cfg = r.req.FromConfig.clone()
		st, err := os.Stat(r.req.FromDisk)
		if err != nil {
			return "", "", "", fmt.Errorf("template %s: %w", p.FromTemplate, err)
		}
		key = hashParts("template", p.FromTemplate, r.req.FromDisk, st.ModTime().UTC().String(), fmt.Sprint(st.Size()), fmt.Sprint(size))
		r.log(0, "info", "FROM template %s", p.FromTemplate)
		out := r.b.cachePath(key)
		if exists(out) && !r.req.SkipCache {
			touch(out)
			return key, out, "", nil
		}
		err = stage(out, func(tmp string) error {
			if err := rootfs.CopyFile(r.req.FromDisk, tmp); err != nil {
				return err
			}
			return rootfs.ResizeImage(ctx, tmp, size)
		})
		return key, out, "", err
	case p.FromImage != "":
		r.log(0, "info", "FROM image %s: resolving", p.FromImage)
		img, err := resolveImage(ctx, p.FromImage, r.req.Auth)
		if err != nil {
			return "", "", "", err
		}
		r.cfg = img.config.clone()
		initBin, envdBin, err := r.b.o.GuestBinaries(ctx)
		if err != nil {
			return "", "", "", fmt.Errorf("guest binaries: %w", err)
		}
		key = hashParts("image", img.digest, sha(initBin), sha(envdBin), fmt.Sprint(size))
		r.log(0, "info", "image %s is %s", p.FromImage, img.digest)
		out := r.b.cachePath(key)
		if exists(out) && !r.req.SkipCache {
			touch(out)
			r.log(0, "info", "CACHED image %s", img.digest)
			return key, out, img.start, nil
		}
		tree, err := os.MkdirTemp(filepath.Join(r.b.o.Dir, "work"), "tree-")
		if err != nil {
			return "", "", "", err
		}
		defer os.RemoveAll(tree)
		if err := img.unpack(ctx, tree, func(f string, a ...any) { r.log(0, "info", f, a...) }); err != nil {
			return "", "", "", err
		}
		if err := image.InstallGuest(tree, initBin, envdBin); err != nil {
			return "", "", "", fmt.Errorf("install hearth init and envd: %w", err)
		}
		err = stage(out, func(tmp string) error {
			return image.MkfsFromDir(ctx, tree, tmp, int64(r.req.DiskSizeMB))
		})
		return key, out, img.start, err
	}
	return "", "", "", errors.New("nothing to build from: set a template or an image")
}

// step runs one disk-changing step on a copy of disk, renamed to out
// when it succeeds.
func (r *run) step(ctx context.Context, n int, s Step, disk, out string) error {
	return stage(out, func(tmp string) error {
		if err := rootfs.CopyFile(disk, tmp); err != nil {
			return err
		}
		var err error
		switch s.Type {
		case StepRun:
			err = r.runStep(ctx, n, s, tmp)
		case StepCopy, StepWorkdir:
			err = withMounted(ctx, tmp, filepath.Join(r.b.o.Dir, "work"), func(root *os.Root) error {
				if s.Type == StepWorkdir {
					return mkdirOwned(root, r.cfg.Workdir, r.cfg.User)
				}
				return copyStep(root, s, r.cfg)
			})
		}
		if err != nil {
			var se *StepError
			if !errors.As(err, &se) {
				err = &StepError{Step: n, Line: s.Line, Text: s.String(), Err: err}
			}
			r.log(n, "error", "%v", err)
		}
		return err
	})
}

const keepLines = 10

func (r *run) runStep(ctx context.Context, n int, s Step, disk string) error {
	g, err := r.b.o.Runner.Boot(ctx, disk, r.req.Shape)
	if err != nil {
		return fmt.Errorf("boot the build VM: %w", err)
	}
	defer g.Close(context.WithoutCancel(ctx))
	args := s.Args
	if !s.Exec {
		args = []string{"/bin/sh", "-c", s.Args[0]}
	}
	env := map[string]string{}
	for k, v := range r.cfg.Env {
		env[k] = v
	}
	for _, kv := range s.ArgEnv {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := env[k]; !ok {
			env[k] = v
		}
	}
	user := r.cfg.User
	if s.User != "" {
		user = s.User
	}
	if user == "" {
		user = "root"
	}
	cwd := r.cfg.Workdir
	if cwd == "" {
		cwd = "/"
	}
	lw := &lineWriter{emit: func(line string) { r.log(n, "info", "%s", line) }}
	code, err := g.Exec(ctx, Command{Args: args, Env: env, Cwd: cwd, User: user}, func(_ bool, p []byte) { lw.write(p) })
	lw.flush()
	if err != nil {
		if msg := err.Error(); !s.Exec && strings.Contains(msg, "/bin/sh") && (strings.Contains(msg, "no such file") || strings.Contains(msg, "not found")) {
			err = fmt.Errorf("the image has no /bin/sh, which a shell-form RUN needs (use the exec form [\"/path/cmd\", \"arg\"] or an image with a shell): %w", err)
		}
		return &StepError{Step: n, Line: s.Line, Text: s.String(), Err: err, Output: lw.last}
	}
	if code != 0 {
		return &StepError{Step: n, Line: s.Line, Text: s.String(), ExitCode: code, Output: lw.last}
	}
	return g.Close(ctx)
}

// lineWriter turns output chunks into lines and keeps the last few.
type lineWriter struct {
	buf  []byte
	last []string
	emit func(string)
}

func (l *lineWriter) write(p []byte) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return
		}
		l.line(string(bytes.TrimRight(l.buf[:i], "\r")))
		l.buf = l.buf[i+1:]
	}
}

func (l *lineWriter) flush() {
	if len(l.buf) > 0 {
		l.line(string(l.buf))
		l.buf = nil
	}
}

func (l *lineWriter) line(s string) {
	l.emit(s)
	l.last = append(l.last, s)
	if len(l.last) > keepLines {
		l.last = l.last[1:]
	}
}

// withMounted loop-mounts the ext4 image and calls fn on its root.
func withMounted(ctx context.Context, img, workDir string, fn func(*os.Root) error) (err error) {
	mnt, err := os.MkdirTemp(workDir, "mnt-")
	if err != nil {
		return err
	}
	defer os.Remove(mnt)
	if out, err := exec.CommandContext(ctx, "mount", "-o", "loop", "-t", "ext4", img, mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("mount %s: %w: %s", img, err, bytes.TrimSpace(out))
	}
	defer func() {
		out, uerr := exec.Command("umount", mnt).CombinedOutput()
		if uerr != nil && err == nil {
			err = fmt.Errorf("umount %s: %w: %s", mnt, uerr, bytes.TrimSpace(out))
		}
	}()
	root, err := os.OpenRoot(mnt)
	if err != nil {
		return err
	}
	defer root.Close()
	return fn(root)
}

// stage builds dst through a temporary file renamed into place. Not
// rootfs's stageFile: its staging name is per process, and builds in one
// process stage concurrently.
func stage(dst string, build func(tmp string) error) error {
	tmp := dst + ".tmp-" + randHex()
	if err := build(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func stepKey(parent string, s Step, cfg Config) string {
	parts := []string{"step", parent, s.Type, fmt.Sprint(s.Exec), s.Chown, s.Mode, s.User, s.FilesHash, cfg.User, cfg.Workdir}
	parts = append(parts, s.Args...)
	parts = append(parts, "env")
	parts = append(parts, cfg.envList()...)
	parts = append(parts, s.ArgEnv...)
	return hashParts(parts...)
}

func hashParts(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s\n", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// touch marks a cache entry used now: PruneCache removes the least
// recently used first.
func touch(p string) {
	now := time.Now()
	_ = os.Chtimes(p, now, now)
}

// PruneCache removes the least recently used entries of the step cache in
// dir (Options.Dir) until the disk space they take is at most maxBytes,
// and returns how many it removed and the bytes freed. Call it when no
// build runs: a running build reads its parent entry.
func PruneCache(dir string, maxBytes int64) (removed int, freed int64, err error) {
	paths, err := filepath.Glob(filepath.Join(dir, "cache", "*.ext4"))
	if err != nil {
		return 0, 0, err
	}
	type entry struct {
		path  string
		used  time.Time
		bytes int64
	}
	var entries []entry
	var total int64
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			continue
		}
		// Allocated blocks: the entries are sparse disk images.
		e := entry{p, time.Unix(st.Mtim.Unix()), st.Blocks * 512}
		entries = append(entries, e)
		total += e.bytes
	}
	slices.SortFunc(entries, func(a, b entry) int { return a.used.Compare(b.used) })
	for _, e := range entries {
		if total <= maxBytes {
			break
		}
		if err := os.Remove(e.path); err != nil {
			return removed, freed, err
		}
		removed++
		freed += e.bytes
		total -= e.bytes
	}
	return removed, freed, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
