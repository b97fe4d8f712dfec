package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/image"
	"github.com/hearth-sandbox/hearth/internal/rootfs"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/templatebuild"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// A built template's artefacts on this host, named by its artefact ID
// (one per successful build, so a new version never touches the files
// sandboxes of the previous one use):
//
//	images/<id>/rootfs.ext4     the flattened root disk (boots like base/tiny)
//	images/<id>/manifest.json   image.Manifest
//	images/<id>/build.json      buildMeta: the template's env, user, workdir, start command
//	templates/<id>/             with a start command: the snapshot template
//	                            taken once the ready check passed
const buildMetaFile = "build.json"

type buildMeta struct {
	templatebuild.Result
	Snapshot   bool `json:"snapshot"`
	DiskSizeMB int  `json:"disk_size_mb"`
}

// BuildRequest is one template build on this host.
type BuildRequest struct {
	ArtifactID string
	Plan       templatebuild.Plan
	Auth       templatebuild.RegistryAuth
	VCPUs      int
	MemoryMB   int
	DiskSizeMB int // the working disk while steps run (0: 4096)
	// TemplateDiskMB is the template's root disk (0: see MinFreeDiskMB).
	TemplateDiskMB int
	// MinFreeDiskMB (E2B's minFreeDiskMb), when set and TemplateDiskMB is
	// 0, makes the disk the built file system plus this much.
	MinFreeDiskMB *int
	SkipCache     bool
	// ReadyTimeout bounds the wait for the ready check (0: 5 minutes).
	ReadyTimeout time.Duration
	Log          func(templatebuild.Log)
}

// BuildResult is a finished build.
type BuildResult struct {
	templatebuild.Result
	// Snapshot: the template has a start command and was frozen after its
	// ready check: create it with KindSnapshot and the artefact ID.
	Snapshot bool
	// DiskSizeMB is the template's root disk: sandboxes of it get it.
	DiskSizeMB int
}

// BuildTemplate builds req.Plan into the artefacts of req.ArtifactID. FROM
// names a template on this host first (an image such as base or tiny, or
// a built template's artefact), anything else is an OCI image. On error
// nothing of the artefact remains.
func (m *Manager) BuildTemplate(ctx context.Context, req BuildRequest) (res BuildResult, err error) {
	if !validTemplate.MatchString(req.ArtifactID) {
		return res, &FieldError{Field: "artifact_id", Msg: fmt.Sprintf("%q", req.ArtifactID)}
	}
	if req.VCPUs <= 0 {
		req.VCPUs = 2
	}
	if req.MemoryMB <= 0 {
		req.MemoryMB = 1024
	}
	logf := func(level, format string, args ...any) {
		if req.Log != nil {
			req.Log(templatebuild.Log{Time: time.Now().UTC(), Level: level, Message: fmt.Sprintf(format, args...)})
		}
	}
	m.builds.RLock()
	defer func() {
		m.builds.RUnlock()
		m.pruneBuildCache()
	}()
	imgDir := filepath.Join(m.d.DataDir, "images", req.ArtifactID)
	if exists(imgDir) {
		return res, fmt.Errorf("artefact %s: %w", req.ArtifactID, ErrAlreadyExists)
	}
	defer func() {
		if err != nil {
			m.dropArtifact(context.WithoutCancel(ctx), req.ArtifactID)
		}
	}()
	b, err := templatebuild.New(templatebuild.Options{
		Dir:           filepath.Join(m.d.DataDir, "builds"),
		Runner:        m.BuildRunner(),
		GuestBinaries: templatebuild.GuestBinariesFrom(m.guestBinariesImage()),
	})
	if err != nil {
		return res, err
	}
	treq := templatebuild.Request{
		Plan: req.Plan, Auth: req.Auth, SkipCache: req.SkipCache, DiskSizeMB: req.DiskSizeMB,
		Shape:  templatebuild.Shape{VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, AllowInternet: true},
		Output: filepath.Join(imgDir, "rootfs.ext4"), Log: req.Log,
	}
	if err := m.resolveFrom(&treq); err != nil {
		return res, err
	}
	t0 := time.Now()
	out, err := b.Build(ctx, treq)
	if err != nil {
		return res, err
	}
	if u, _, _ := strings.Cut(out.Config.User, ":"); u != "" {
		// envd runs a sandbox's commands as an account of the image: a
		// USER without one would fail every command.
		passwd, err := exec.CommandContext(ctx, "debugfs", "-R", "cat /etc/passwd", treq.Output).Output()
		if err != nil || !passwdHas(passwd, u) {
			logf("warn", "USER %s has no account in the image's /etc/passwd: sandboxes of the template run as the image's default user", u)
			out.Config.User = ""
		}
	}
	res.Result = out
	meta := image.Manifest{
		Name: req.ArtifactID, Files: map[string]int64{"rootfs.ext4": out.DiskBytes},
		BuiltAt: time.Now().UTC(), BuildSeconds: time.Since(t0).Seconds(),
	}
	if err := writeJSON(image.ManifestPath(m.d.DataDir, req.ArtifactID), meta); err != nil {
		return res, err
	}
	if res.DiskSizeMB, err = templateDisk(req, out.DiskBytes); err != nil {
		return res, err
	}
	logf("info", "template disk %d MiB", res.DiskSizeMB)
	res.Snapshot = out.StartCmd != ""
	// Before the start command's sandbox boots: its user and workdir come
	// from here, and are frozen into the snapshot template.
	if err := writeJSON(filepath.Join(imgDir, buildMetaFile), buildMeta{Result: out, Snapshot: res.Snapshot, DiskSizeMB: res.DiskSizeMB}); err != nil {
		return res, err
	}
	if res.Snapshot {
		if err := m.snapshotStarted(ctx, req, res.DiskSizeMB, out, logf); err != nil {
			return res, err
		}
	}
	return res, nil
}

// templateDisk decides the template's root disk size from the request and
// the built file system's size (the flattened disk, shrunk to its
// contents): an explicit size must hold the file system; E2B's
// minFreeDiskMb is free space on top of it; neither is the default
// sandbox disk (or the file system when that is larger).
func templateDisk(req BuildRequest, fsBytes int64) (int, error) {
	fsMB := int((fsBytes + 1<<20 - 1) >> 20)
	switch {
	case req.TemplateDiskMB > 0:
		if req.TemplateDiskMB < fsMB {
			return 0, &FieldError{Field: "disk_size_mb", Msg: fmt.Sprintf("%d: the built root file system needs %d MiB; ask for more", req.TemplateDiskMB, fsMB)}
		}
		return req.TemplateDiskMB, nil
	case req.MinFreeDiskMB != nil:
		// At least the smallest disk a sandbox may ask for, so sandboxes
		// of the template pass the control plane's bounds.
		return max(fsMB+max(*req.MinFreeDiskMB, 0), sbx.Public().DiskSizeMB.Min), nil
	}
	return max(fsMB, sbx.DefaultDiskSizeMB), nil
}

// resolveFrom decides whether FROM is a template of this host or an OCI
// image (DESIGN.md §8: a hearth template wins).
func (m *Manager) resolveFrom(r *templatebuild.Request) error {
	p := &r.Plan
	name := p.FromTemplate
	if name == "" && validTemplate.MatchString(p.FromImage) && !strings.ContainsAny(p.FromImage, ":/") {
		if exists(m.d.Images.RootfsPath(p.FromImage)) {
			name = p.FromImage
		}
	}
	if name == "" {
		return nil
	}
	if !validTemplate.MatchString(name) {
		return &FieldError{Field: "from_template", Msg: fmt.Sprintf("%q", name)}
	}
	p.FromTemplate, p.FromImage = name, ""
	for _, disk := range []string{m.d.Images.RootfsPath(name), filepath.Join(m.templateDir(name), "rootfs.ext4")} {
		if exists(disk) {
			r.FromDisk = disk
			break
		}
	}
	if r.FromDisk == "" {
		return fmt.Errorf("template %s is not on this host: %w", name, ErrNotFound)
	}
	if bm, err := readBuildMeta(filepath.Dir(m.d.Images.RootfsPath(name))); err == nil {
		r.FromConfig = bm.Config
	}
	return nil
}

func readBuildMeta(dir string) (buildMeta, error) {
	var bm buildMeta
	b, err := os.ReadFile(filepath.Join(dir, buildMetaFile))
	if err != nil {
		return bm, err
	}
	return bm, json.Unmarshal(b, &bm)
}

// guestBinariesImage is the image whose hearth-init and envd go into
// images pulled from a registry.
func (m *Manager) guestBinariesImage() string {
	for _, n := range []string{image.Tiny, image.Base} {
		if p := m.d.Images.RootfsPath(n); exists(p) {
			return p
		}
	}
	return m.d.Images.RootfsPath(image.Tiny)
}

// snapshotStarted boots the built disk as a sandbox, starts the start
// command, waits for the ready check and freezes the result as the
// snapshot template of the artefact.
func (m *Manager) snapshotStarted(ctx context.Context, req BuildRequest, diskMB int, out templatebuild.Result, logf func(string, string, ...any)) error {
	id := "bs" + randomHex(8)
	logf("info", "starting the template: %s", out.StartCmd)
	if _, err := m.Create(ctx, Spec{
		ID: id, TemplateID: req.ArtifactID, TemplateKind: sbx.KindBase, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB,
		DiskSizeMB: diskMB, Env: out.Config.Env, AccessToken: randomHex(16), Egress: egress.Open(), Internal: true,
	}); err != nil {
		return fmt.Errorf("boot the template: %w", err)
	}
	defer func() {
		if err := m.Destroy(context.WithoutCancel(ctx), id); err != nil {
			m.log.Warn("build: destroy the start-command sandbox", "sandbox", id, "err", err)
		}
	}()
	e, _, err := m.envdOf(id)
	if err != nil {
		return err
	}
	user, cwd := out.Config.User, out.Config.Workdir
	if user == "" {
		user = "root"
	}
	if cwd == "" {
		cwd = "/"
	}
	// The start command keeps running after its stream is cancelled (envd
	// does not kill a process whose client went away) and so is in the
	// frozen state.
	startCtx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	startDone := make(chan error, 1)
	go func() {
		res, err := e.Exec(startCtx, ExecSpec{Cmd: "/bin/sh", Args: []string{"-c", out.StartCmd}, Env: out.Config.Env, Cwd: cwd, User: user},
			func(_ Stream, p []byte) error {
				for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
					logf("info", "[start] %s", l)
				}
				return nil
			})
		// A start command that daemonises exits 0: the ready check decides.
		if err == nil && res.Code != 0 {
			err = fmt.Errorf("the start command failed with exit code %d before the template was ready", res.Code)
		}
		if err != nil && startCtx.Err() == nil {
			startDone <- err
		}
	}()
	if err := m.waitReady(ctx, id, e, req, out, user, cwd, startDone, logf); err != nil {
		return err
	}
	logf("info", "ready: taking the snapshot template")
	if _, err := m.CreateSnapshot(ctx, id, req.ArtifactID); err != nil {
		return fmt.Errorf("snapshot the started template: %w", err)
	}
	return nil
}

// waitReady polls the ready command until it exits 0 (no ready command:
// ready as soon as the start command runs). The SDK's waitForPort and
// waitForURL are also checked by the agent itself (readyProbe), so they
// pass in images without ss or curl.
func (m *Manager) waitReady(ctx context.Context, id string, e Envd, req BuildRequest, out templatebuild.Result, user, cwd string, startDone <-chan error, logf func(string, string, ...any)) error {
	limit := req.ReadyTimeout
	if limit <= 0 {
		limit = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if out.ReadyCmd == "" {
		return nil
	}
	logf("info", "waiting for the ready check: %s", out.ReadyCmd)
	probe, native := parseReadyCmd(out.ReadyCmd)
	for {
		if native && m.probe(ctx, id, e, probe) {
			return nil
		}
		res, err := e.Exec(ctx, ExecSpec{Cmd: "/bin/sh", Args: []string{"-c", out.ReadyCmd}, Env: out.Config.Env, Cwd: cwd, User: user},
			func(Stream, []byte) error { return nil })
		if err == nil && res.Code == 0 {
			return nil
		}
		select {
		case err := <-startDone:
			return err
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("the ready check %q did not pass within %s", out.ReadyCmd, limit)
			}
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// DefaultBuildCacheBytes is the default cap of the build step cache.
const DefaultBuildCacheBytes = 8 << 30

// pruneBuildCache trims the step cache to Deps.BuildCacheBytes when no
// build runs (one that starts meanwhile waits for the pruning to end).
func (m *Manager) pruneBuildCache() {
	if !m.builds.TryLock() {
		return
	}
	defer m.builds.Unlock()
	n, freed, err := templatebuild.PruneCache(filepath.Join(m.d.DataDir, "builds"), m.d.BuildCacheBytes)
	if err != nil {
		m.log.Warn("build: prune the step cache", "err", err)
	}
	if n > 0 {
		m.log.Info("build: pruned the step cache", "entries", n, "freed_mb", freed>>20, "cap_mb", m.d.BuildCacheBytes>>20)
	}
}

// DeleteBuild removes a built template's artefacts from this host (its
// snapshot template, its root disk and cached variants) unless sandboxes
// here were made from it (ErrInUse: a superseded version stays until
// they are gone). Idempotent.
func (m *Manager) DeleteBuild(ctx context.Context, artifactID string) error {
	if !validTemplate.MatchString(artifactID) {
		return &FieldError{Field: "artifact_id", Msg: fmt.Sprintf("%q", artifactID)}
	}
	var users []string
	m.mu.Lock()
	for id, sb := range m.sandboxes {
		if sb.spec.TemplateID == artifactID {
			users = append(users, id)
		}
	}
	m.mu.Unlock()
	if len(users) > 0 {
		return fmt.Errorf("template %s is used by sandboxes %v: %w", artifactID, users, ErrInUse)
	}
	if err := m.DeleteSnapshot(ctx, artifactID); err != nil {
		return err
	}
	m.dropArtifact(ctx, artifactID)
	return nil
}

func (m *Manager) dropArtifact(ctx context.Context, artifactID string) {
	if err := m.DeleteSnapshot(ctx, artifactID); err != nil {
		m.log.Warn("build: remove snapshot template", "artifact", artifactID, "err", err)
	}
	disk := m.d.Images.RootfsPath(artifactID)
	if p, ok := m.d.Disks.(rootfs.VariantPruner); ok {
		if _, err := p.DropVariants(ctx, disk); err != nil {
			m.log.Warn("build: drop disk variants", "artifact", artifactID, "err", err)
		}
	}
	if err := os.RemoveAll(filepath.Dir(disk)); err != nil {
		m.log.Warn("build: remove artefact", "artifact", artifactID, "err", err)
	}
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// cleanBuildLeftovers removes what builds of a crashed agent left: build
// VMs (their VMMs outlive the agent) and staging files. Their network
// slots go with the stale-slot cleanup that follows; the control plane
// marks the builds failed.
func (m *Manager) cleanBuildLeftovers() {
	builds := filepath.Join(m.d.DataDir, "builds")
	vms, _ := os.ReadDir(filepath.Join(builds, "vms"))
	for _, e := range vms {
		dir := filepath.Join(builds, "vms", e.Name())
		if pid := readPIDFile(filepath.Join(dir, "vm", vmm.PIDFileName)); pid > 0 {
			killStale(pid, dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			m.log.Warn("build: remove a crashed build's VM dir", "dir", dir, "err", err)
		}
	}
	staged, _ := filepath.Glob(filepath.Join(builds, "cache", "*.tmp-*"))
	work, _ := filepath.Glob(filepath.Join(builds, "work", "*"))
	for _, p := range append(staged, work...) {
		// A COPY step's loop mount: detach it before removing anything.
		_ = unix.Unmount(p, unix.MNT_DETACH)
		if err := os.RemoveAll(p); err != nil {
			m.log.Warn("build: remove a crashed build's files", "path", p, "err", err)
		}
	}
}
