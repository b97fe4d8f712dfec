package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// CreateSandboxInput is a create request; nil pointers mean "not given".
type CreateSandboxInput struct {
	Template      string // template ID or name (team's own or platform)
	VCPUs         *int
	MemoryMB      *int
	DiskSizeMB    *int
	TimeoutS      *int
	Env           map[string]string
	Metadata      map[string]string
	AutoPause     bool
	AutoResume    bool
	AllowInternet *bool // default true
	AllowOut      []string
	DenyOut       []string
	// Volumes to mount; the sandbox is placed on their host.
	Volumes []VolumeMountInput
	// EgressRules set headers on the guest's HTTPS to their domains;
	// values may name team secrets as ${e2b.secrets.NAME}.
	EgressRules []egress.HeaderRule
	// id presets the sandbox's ID (a fork that fails is destroyed by it:
	// its caller only gets the error).
	id string
}

// CreateSandbox validates the request against the template, records the
// sandbox as creating, places it on a host and starts it there. The returned
// sandbox carries its envd access token (shown to the creator only).
func (s *Service) CreateSandbox(ctx context.Context, p Principal, in CreateSandboxInput) (store.Sandbox, error) {
	if in.Template == "" {
		return store.Sandbox{}, InvalidArgument("template", "is required")
	}
	tpl, err := s.resolveTemplate(ctx, p, in.Template)
	if err != nil {
		return store.Sandbox{}, err
	}
	if tpl.BuildStatus != store.BuildStatusReady {
		return store.Sandbox{}, Conflict("template %s has no finished build yet (%s)", tpl.Name, tpl.BuildStatus)
	}
	in.Env = withTemplateEnv(tpl, in.Env)
	sb, err := sandboxShape(tpl, in)
	if err != nil {
		return store.Sandbox{}, err
	}
	mounts, volHost, err := s.resolveMounts(ctx, p, in.Volumes)
	if err != nil {
		return store.Sandbox{}, err
	}
	rules, err := s.resolveEgressRules(ctx, p, in.EgressRules)
	if err != nil {
		return store.Sandbox{}, err
	}
	// requested go to the host; a snapshot's sandbox mounts what its
	// source mounted (its host knows them from the template), recorded
	// here so that listings show them and deleting such a volume is a 409.
	requested := mounts
	if tpl.Kind == sandbox.KindSnapshot {
		if len(mounts) > 0 {
			return store.Sandbox{}, InvalidArgument("volumeMounts", "template %s is a snapshot, whose guest has already mounted what it mounts (a snapshot of a sandbox with volumes mounts the same ones): mount volumes in sandboxes of a base template", tpl.Name)
		}
		if tpl.SourceSandboxID != "" {
			if mounts, err = s.store.ListSandboxVolumes(ctx, tpl.SourceSandboxID); err != nil {
				return store.Sandbox{}, fmt.Errorf("snapshot source's volumes: %w", err)
			}
		}
	}
	token, err := auth.NewAccessToken()
	if err != nil {
		return store.Sandbox{}, err
	}
	sb.ID = in.id
	if sb.ID == "" {
		sb.ID = store.NewShortID()
	}
	sb.TeamID = p.TeamID
	sb.TemplateID = tpl.ID
	sb.Status = sandbox.StateCreating
	sb.AccessToken = token
	sb.EndAt = s.now().Add(secs(sb.TimeoutS))

	sb, err = s.store.CreateSandbox(ctx, sb)
	if err != nil {
		return store.Sandbox{}, fromStore(err, "sandbox", "sandbox ID collision, retry")
	}
	s.logTransition(ctx, sb, "", sandbox.StateCreating, "")
	if len(mounts) > 0 {
		if err := s.store.AddSandboxVolumes(ctx, sb.ID, mounts); err != nil {
			if derr := s.store.DeleteSandbox(context.WithoutCancel(ctx), sb.ID); derr != nil {
				s.log.ErrorContext(ctx, "drop sandbox whose mounts failed", "sandbox_id", sb.ID, "err", derr)
			}
			return store.Sandbox{}, fromStore(err, "volume", "")
		}
	}

	holders, err := s.templateHolders(ctx, tpl)
	if err != nil {
		return store.Sandbox{}, err
	}
	hostID, hc, err := s.hosts.Pick(ctx, PlacementRequest{
		TemplateID: tpl.HostTemplateID(), TemplateHosts: holders,
		VCPUs: sb.VCPUs, MemoryMB: sb.MemoryMB, DiskSizeMB: sb.DiskSizeMB, Host: volHost,
	})
	if err != nil {
		// Nothing exists on any host: forget the row rather than leave an
		// error sandbox the user never got an ID for.
		if derr := s.store.DeleteSandbox(context.WithoutCancel(ctx), sb.ID); derr != nil {
			s.log.ErrorContext(ctx, "drop unplaced sandbox", "sandbox_id", sb.ID, "err", derr)
		}
		return store.Sandbox{}, err
	}
	if err := s.store.SetSandboxHost(ctx, sb.ID, hostID); err != nil {
		return store.Sandbox{}, s.fail(ctx, sb, fmt.Errorf("record host: %w", err))
	}
	sb.Host = hostID
	if err := s.ensureTemplate(ctx, tpl, holders, hostID, hc); err != nil {
		return store.Sandbox{}, s.fail(ctx, sb, err)
	}
	_, err = hc.CreateSandbox(ctx, CreateSandboxRequest{
		SandboxID: sb.ID, TemplateID: tpl.HostTemplateID(), TemplateKind: tpl.Kind,
		VCPUs: sb.VCPUs, MemoryMB: sb.MemoryMB, DiskSizeMB: sb.DiskSizeMB,
		Env: sb.Env, AccessToken: token, TimeoutS: sb.TimeoutS, Egress: policyOf(sb),
		Volumes: hostMounts(requested), EgressRules: rules,
	})
	if err != nil {
		return store.Sandbox{}, s.fail(ctx, sb, hostErrFor("create the sandbox", err))
	}
	// The clock starts when the sandbox runs, not when it was requested.
	if err := s.store.SetSandboxEndAt(ctx, sb.ID, s.now().Add(secs(sb.TimeoutS)), sb.TimeoutS); err != nil {
		s.log.WarnContext(ctx, "reset sandbox end time", "sandbox_id", sb.ID, "err", err)
	}
	out, err := s.transition(ctx, sb.ID, []sandbox.State{sandbox.StateCreating}, sandbox.StateRunning, "")
	if err != nil {
		return store.Sandbox{}, err
	}
	out.AccessToken = token
	return out, nil
}

// sandboxShape applies defaults and bounds. Snapshot templates fix vCPUs and
// memory: they are baked into the frozen VM state.
func sandboxShape(tpl store.Template, in CreateSandboxInput) (store.Sandbox, error) {
	sb := store.Sandbox{
		TimeoutS: DefaultTimeoutS, Env: in.Env, Metadata: in.Metadata,
		AutoPause: in.AutoPause, AutoResume: in.AutoResume, AllowInternet: true,
	}
	shape := sandbox.Shape{VCPUs: tpl.VCPUs, MemoryMB: tpl.MemoryMB}.WithDefaults()
	// Snapshot and built templates bake their disk in: it is the default
	// and the minimum (a built file system may fill it).
	fixedDisk := (tpl.Kind == sandbox.KindSnapshot || tpl.ArtifactID != "") && tpl.DiskSizeMB > 0
	if fixedDisk {
		shape.DiskSizeMB = tpl.DiskSizeMB
	}
	if in.VCPUs != nil {
		shape.VCPUs = *in.VCPUs
	}
	if in.MemoryMB != nil {
		shape.MemoryMB = *in.MemoryMB
	}
	if in.DiskSizeMB != nil {
		shape.DiskSizeMB = *in.DiskSizeMB
	}
	// Requested values and templates made before bounds existed alike.
	if err := validShape(shape); err != nil {
		return sb, err
	}
	if tpl.Kind == sandbox.KindSnapshot {
		switch {
		case shape.VCPUs != tpl.VCPUs:
			return sb, InvalidArgument("vcpus", "snapshot template %s is fixed at %d vCPUs", tpl.Name, tpl.VCPUs)
		case shape.MemoryMB != tpl.MemoryMB:
			return sb, InvalidArgument("memory_mb", "snapshot template %s is fixed at %d MiB", tpl.Name, tpl.MemoryMB)
		case shape.DiskSizeMB < tpl.DiskSizeMB:
			// A snapshot's file system already fills its disk; it cannot shrink.
			return sb, InvalidArgument("disk_size_mb", "snapshot template %s needs at least %d MiB", tpl.Name, tpl.DiskSizeMB)
		}
	}
	if fixedDisk && shape.DiskSizeMB < tpl.DiskSizeMB {
		return sb, InvalidArgument("disk_size_mb", "template %s needs at least %d MiB", tpl.Name, tpl.DiskSizeMB)
	}
	sb.VCPUs, sb.MemoryMB, sb.DiskSizeMB = shape.VCPUs, shape.MemoryMB, shape.DiskSizeMB
	if in.TimeoutS != nil {
		if err := inRange("timeout_s", *in.TimeoutS, MinTimeoutS, MaxTimeoutS); err != nil {
			return sb, err
		}
		sb.TimeoutS = *in.TimeoutS
	}
	pol, err := NetworkInput{AllowInternet: in.AllowInternet, AllowOut: in.AllowOut, DenyOut: in.DenyOut}.policy()
	if err != nil {
		return sb, err
	}
	sb.AllowInternet, sb.AllowOut, sb.DenyOut = pol.AllowInternet, pol.AllowOut, pol.DenyOut
	if err := validEnv("env", in.Env); err != nil {
		return sb, err
	}
	if err := validMap("metadata", in.Metadata, maxMetaEntries); err != nil {
		return sb, err
	}
	return sb, nil
}

func (s *Service) GetSandbox(ctx context.Context, p Principal, id string) (store.Sandbox, error) {
	sb, err := s.store.GetSandbox(ctx, p.TeamID, id)
	if err != nil {
		return store.Sandbox{}, fromStore(err, "sandbox", "")
	}
	return sb, nil
}

// ListSandboxes returns the team's sandboxes ordered by creation, filtered
// by f. When f.Limit cut the list short, next is the cursor of the following
// page (pass it as f.After); on the last page it is "". Cursors stay valid
// when the sandbox they point past is deleted.
func (s *Service) ListSandboxes(ctx context.Context, p Principal, f store.SandboxFilter) (sbs []store.Sandbox, next string, err error) {
	limit := f.Limit
	if limit > 0 {
		f.Limit = limit + 1 // one row more tells whether another page exists
	}
	sbs, err = s.store.ListSandboxes(ctx, p.TeamID, f)
	if err != nil {
		return nil, "", fmt.Errorf("list sandboxes: %w", err)
	}
	if limit > 0 && len(sbs) > limit {
		sbs = sbs[:limit]
		next = store.SandboxCursor(sbs[limit-1])
	}
	return sbs, next, nil
}

// GetSandboxInternal reads a sandbox of any team. It is for trusted
// internal callers only (the sandbox proxy, which routes by sandbox ID and
// leaves authorization to envd's access token; timers; the reconciler):
// never call it to answer a team's API request, which must not see other
// teams' sandboxes (use GetSandbox).
func (s *Service) GetSandboxInternal(ctx context.Context, id string) (store.Sandbox, error) {
	sb, err := s.store.GetSandboxByID(ctx, id)
	if err != nil {
		return store.Sandbox{}, fromStore(err, "sandbox", "")
	}
	return sb, nil
}

// DestroySandbox stops the sandbox on its host and forgets it. Destroying a
// sandbox that is already being destroyed retries the host call.
func (s *Service) DestroySandbox(ctx context.Context, p Principal, id string) error {
	sb, err := s.GetSandbox(ctx, p, id)
	if err != nil {
		return err
	}
	return s.destroy(ctx, sb)
}

func (s *Service) destroy(ctx context.Context, sb store.Sandbox) error {
	switch sb.Status {
	case sandbox.StateStopping, sandbox.StateStopped:
		// Retry of an interrupted destroy: carry on.
	default:
		// From any other state, a create, pause or resume in flight (or
		// cut short by a crash) included: the host destroys the sandbox
		// once that operation has finished with it, and the operation's
		// own compare-and-set then finds the row stopping and gives up.
		next, err := s.transition(ctx, sb.ID, []sandbox.State{sb.Status}, sandbox.StateStopping, "")
		if err != nil {
			return err
		}
		sb = next
	}
	if sb.Host != "" && sb.Status == sandbox.StateStopping {
		hc, err := s.hosts.Get(ctx, sb.Host)
		if err != nil {
			return err
		}
		if err := hc.DestroySandbox(ctx, sb.ID); err != nil {
			// Stay in stopping: a retry (or the reconciler) finishes it.
			return hostErrFor("destroy the sandbox", err)
		}
	}
	if sb.Status != sandbox.StateStopped {
		if _, err := s.transition(ctx, sb.ID, []sandbox.State{sandbox.StateStopping}, sandbox.StateStopped, ""); err != nil && KindOf(err) != KindNotFound {
			return err
		}
	}
	if err := s.store.DeleteSandbox(ctx, sb.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("delete sandbox row: %w", err)
	}
	s.releaseAutoTemplate(ctx, sb.TeamID, sb.TemplateID)
	return nil
}

// SetSandboxTimeout makes the sandbox end timeoutS seconds from now.
func (s *Service) SetSandboxTimeout(ctx context.Context, p Principal, id string, timeoutS int) (store.Sandbox, error) {
	if err := inRange("timeout_s", timeoutS, MinTimeoutS, MaxTimeoutS); err != nil {
		return store.Sandbox{}, err
	}
	sb, err := s.GetSandbox(ctx, p, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	switch sb.Status {
	case sandbox.StateStopping, sandbox.StateStopped, sandbox.StateError:
		return store.Sandbox{}, Conflict("sandbox %s is %s", sb.ID, sb.Status)
	}
	if err := s.store.SetSandboxEndAt(ctx, sb.ID, s.now().Add(secs(timeoutS)), timeoutS); err != nil {
		return store.Sandbox{}, fromStore(err, "sandbox", "")
	}
	return s.GetSandbox(ctx, p, id)
}

// running returns the sandbox and its host client, resuming a paused (or
// pausing) sandbox first when it asked for auto-resume.
func (s *Service) running(ctx context.Context, p Principal, id string) (store.Sandbox, HostClient, error) {
	sb, err := s.GetSandbox(ctx, p, id)
	if err != nil {
		return sb, nil, err
	}
	if sb.AutoResume && (sb.Status == sandbox.StatePaused || sb.Status == sandbox.StatePausing) {
		if sb, _, err = s.resume(ctx, sb, s.teamReader(p)); err != nil {
			return sb, nil, err
		}
	}
	if sb.Status != sandbox.StateRunning {
		return sb, nil, Conflict("sandbox %s is %s, not running", sb.ID, sb.Status)
	}
	hc, err := s.hosts.Get(ctx, sb.Host)
	return sb, hc, err
}

// Exec runs a command to completion in the sandbox.
func (s *Service) Exec(ctx context.Context, p Principal, id string, req ExecRequest) (ExecResult, error) {
	hc, err := s.execHost(ctx, p, id, req)
	if err != nil {
		return ExecResult{}, err
	}
	res, err := hc.Exec(ctx, id, req)
	if err != nil {
		return ExecResult{}, hostErrFor("run the command", err)
	}
	return res, nil
}

// ExecStream runs a command in the sandbox, handing its output to out as
// it is produced, and returns its exit code. It makes the checks Exec
// makes (bounds, team, auto-resume) before the command starts, so an
// error before the first call of out means nothing ran. An error returned
// by out stops the command and comes back unchanged; host failures are
// KindUnavailable (or KindUnimplemented), as for Exec.
func (s *Service) ExecStream(ctx context.Context, p Principal, id string, req ExecRequest, out ExecOutput) (exitCode int, err error) {
	hc, err := s.execHost(ctx, p, id, req)
	if err != nil {
		return 0, err
	}
	// The host may wrap out's error (or turn it into a cancelled stream):
	// remember it so the caller gets its own error back, not a host failure.
	var outErr error
	code, err := hc.ExecStream(ctx, id, req, func(stream string, data []byte) error {
		if err := out(stream, data); err != nil {
			outErr = err
			return err
		}
		return nil
	})
	switch {
	case outErr != nil:
		return 0, outErr
	case err != nil:
		return 0, hostErrFor("run the command", err)
	}
	return code, nil
}

// execHost validates an exec request and returns the host of the running
// sandbox (resumed first when it asked for auto-resume).
func (s *Service) execHost(ctx context.Context, p Principal, id string, req ExecRequest) (HostClient, error) {
	if req.Cmd == "" {
		return nil, InvalidArgument("cmd", "is required")
	}
	if req.TimeoutS != 0 {
		if err := inRange("timeout_s", req.TimeoutS, MinTimeoutS, MaxTimeoutS); err != nil {
			return nil, err
		}
	}
	if err := validEnv("env", req.Env); err != nil {
		return nil, err
	}
	_, hc, err := s.running(ctx, p, id)
	return hc, err
}

// ReadFile streams a file out of the sandbox. The caller closes it.
func (s *Service) ReadFile(ctx context.Context, p Principal, id, path string) (io.ReadCloser, error) {
	if path == "" {
		return nil, InvalidArgument("path", "is required")
	}
	_, hc, err := s.running(ctx, p, id)
	if err != nil {
		return nil, err
	}
	rc, err := hc.ReadFile(ctx, id, path)
	if err != nil {
		return nil, hostFileErr(err, path)
	}
	return rc, nil
}

// WriteFile streams r into a file of the sandbox.
func (s *Service) WriteFile(ctx context.Context, p Principal, id, path string, r io.Reader) error {
	if path == "" {
		return InvalidArgument("path", "is required")
	}
	_, hc, err := s.running(ctx, p, id)
	if err != nil {
		return err
	}
	if err := hc.WriteFile(ctx, id, path, r); err != nil {
		return hostFileErr(err, path)
	}
	return nil
}

// hostFileErr keeps typed errors from the host (a missing file is NotFound)
// and reports transport failures as Unavailable.
func hostFileErr(err error, path string) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return hostErrFor("access "+path, err)
}

// cas is the one place a use case changes a sandbox's status: through the
// status gate (SetStatus, sandbox.ControlPlane), then a log line. won is false (with the current row and no error)
// when the sandbox was not in one of from: another caller moved it first.
func (s *Service) cas(ctx context.Context, id string, from []sandbox.State, to sandbox.State, errMsg string) (sb store.Sandbox, won bool, err error) {
	sb, err = SetStatus(ctx, s.store, sandbox.ControlPlane(), id, from, to, errMsg)
	if errors.Is(err, store.ErrStaleState) {
		cur, gerr := s.store.GetSandboxByID(ctx, id)
		if gerr != nil {
			return store.Sandbox{}, false, fromStore(gerr, "sandbox", "")
		}
		return cur, false, nil
	}
	if err != nil {
		return store.Sandbox{}, false, fromStore(err, "sandbox", "")
	}
	s.logTransition(ctx, sb, statusList(from), to, errMsg)
	return sb, true, nil
}

// transition is cas for callers that hold the transitional state (so only
// a concurrent failure or destroy can move it): arriving at `to` anyway
// is success, anything else a conflict.
func (s *Service) transition(ctx context.Context, id string, from []sandbox.State, to sandbox.State, errMsg string) (store.Sandbox, error) {
	sb, won, err := s.cas(ctx, id, from, to, errMsg)
	switch {
	case err != nil:
		return store.Sandbox{}, err
	case !won && sb.Status != to:
		return store.Sandbox{}, Conflict("sandbox %s changed state concurrently (now %s)", id, sb.Status)
	}
	return sb, nil
}

// fail moves a sandbox from whatever transitional state it is in to error
// and returns cause (for the caller to report).
func (s *Service) fail(ctx context.Context, sb store.Sandbox, cause error) error {
	ctx = context.WithoutCancel(ctx) // record the failure even if the client left
	from := []sandbox.State{sandbox.StateCreating, sandbox.StatePausing, sandbox.StateResuming, sandbox.StateStopping}
	if _, err := s.transition(ctx, sb.ID, from, sandbox.StateError, cause.Error()); err != nil {
		s.log.ErrorContext(ctx, "record sandbox error", "sandbox_id", sb.ID, "err", err)
	}
	return cause
}

func (s *Service) logTransition(ctx context.Context, sb store.Sandbox, from string, to sandbox.State, errMsg string) {
	attrs := []any{"sandbox_id", sb.ID, "team_id", sb.TeamID, "from", from, "to", string(to), "host", sb.Host}
	if errMsg != "" {
		s.log.WarnContext(ctx, "sandbox transition", append(attrs, "error", errMsg)...)
		return
	}
	s.log.InfoContext(ctx, "sandbox transition", attrs...)
}

func statusList(ss []sandbox.State) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	slices.Sort(out)
	if len(out) == 1 {
		return out[0]
	}
	return fmt.Sprint(out)
}

// withTemplateEnv is a built template's environment overlaid by the
// request's.
func withTemplateEnv(tpl store.Template, env map[string]string) map[string]string {
	if tpl.Config == "" {
		return env
	}
	var c TemplateConfig
	if json.Unmarshal([]byte(tpl.Config), &c) != nil || len(c.Env) == 0 {
		return env
	}
	out := make(map[string]string, len(c.Env)+len(env))
	for k, v := range c.Env {
		out[k] = v
	}
	for k, v := range env {
		out[k] = v
	}
	return out
}

func hostMounts(ms []store.SandboxVolume) []HostVolumeMount {
	var out []HostVolumeMount
	for _, m := range ms {
		out = append(out, HostVolumeMount{VolumeID: m.VolumeID, Path: m.Path})
	}
	return out
}
