package service

import (
	"context"
	"io"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/templatebuild"
)

// Store is what the use cases need from persistence. *store.DB implements it
// on SQLite and PostgreSQL. Team-scoped reads return store.ErrNotFound for
// rows of other teams.
type Store interface {
	Ping(ctx context.Context) error

	// Accounts.
	// CreateUserWithTeam inserts the user, a team named teamName and an
	// owner membership in one transaction. Duplicate email: ErrConflict.
	CreateUserWithTeam(ctx context.Context, u store.User, teamName string) (store.User, store.Team, error)
	GetUserByEmail(ctx context.Context, email string) (store.User, error)
	GetUserByID(ctx context.Context, id string) (store.User, error)
	SetUserAdmin(ctx context.Context, email string, admin bool) error
	ListTeamsForUser(ctx context.Context, userID string) ([]store.TeamMembership, error)
	// GetMembership returns ErrNotFound when the user is not in the team.
	GetMembership(ctx context.Context, teamID, userID string) (store.TeamMembership, error)
	GetTeam(ctx context.Context, id string) (store.Team, error)
	// Team members (teams.go).
	MembersStore
	// Template builds (builds.go).
	BuildStore
	// Secrets (secrets.go).
	SecretsStore
	// Volumes (volumes.go).
	VolumesStore

	// API keys.
	CreateAPIKey(ctx context.Context, k store.APIKey) (store.APIKey, error)
	ListAPIKeys(ctx context.Context, teamID string) ([]store.APIKey, error)
	DeleteAPIKey(ctx context.Context, teamID, id string) error
	GetAPIKeyByHash(ctx context.Context, hash string) (store.APIKey, error)
	TouchAPIKey(ctx context.Context, id string, at time.Time) error

	// Templates. "ByTeam" reads include the platform team's templates.
	CreateTemplate(ctx context.Context, t store.Template) (store.Template, error)
	// UpsertPlatformTemplate creates or updates a platform template by name.
	UpsertPlatformTemplate(ctx context.Context, t store.Template) (store.Template, error)
	// GetTemplateByTeam finds by ID or by name; a team's own template wins
	// over a platform template of the same name.
	GetTemplateByTeam(ctx context.Context, teamID, idOrName string) (store.Template, error)
	ListTemplatesByTeam(ctx context.Context, teamID string) ([]store.Template, error)
	ListTemplatesByTeamAndKind(ctx context.Context, teamID string, kind sandbox.TemplateKind) ([]store.Template, error)
	ListAllTemplates(ctx context.Context) ([]store.Template, error)
	// DeleteTemplate deletes a template owned by teamID (never a platform one
	// unless teamID is the platform team).
	DeleteTemplate(ctx context.Context, teamID, id string) error
	// CountSandboxesUsingTemplate counts non-stopped sandboxes created from it.
	CountSandboxesUsingTemplate(ctx context.Context, templateID string, statuses ...sandbox.State) (int, error)
	// AddTemplateCopy records a copy of a template's files on hostID;
	// TemplateCopyHosts lists those hosts (templates.host is the first
	// holder and not among them).
	AddTemplateCopy(ctx context.Context, templateID, hostTemplateID, hostID string) error
	TemplateCopyHosts(ctx context.Context, hostTemplateID string) ([]string, error)

	// Sandboxes.
	CreateSandbox(ctx context.Context, s store.Sandbox) (store.Sandbox, error)
	GetSandbox(ctx context.Context, teamID, id string) (store.Sandbox, error)
	// GetSandboxByID is for internal callers (proxy, reconciler, timers).
	GetSandboxByID(ctx context.Context, id string) (store.Sandbox, error)
	ListSandboxes(ctx context.Context, teamID string, f store.SandboxFilter) ([]store.Sandbox, error)
	ListSandboxesByHost(ctx context.Context, hostID string) ([]store.Sandbox, error)
	// ListExpiredSandboxes: status running and EndAt <= now.
	ListExpiredSandboxes(ctx context.Context, now time.Time) ([]store.Sandbox, error)
	// UpdateSandboxStatus moves a sandbox to `to` only when its current status
	// is one of `from` (compare-and-set); otherwise ErrStaleState.
	UpdateSandboxStatus(ctx context.Context, id string, from []sandbox.State, to sandbox.State, errMsg string) (store.Sandbox, error)
	SetSandboxHost(ctx context.Context, id, hostID string) error
	SetSandboxEndAt(ctx context.Context, id string, endAt time.Time, timeoutS int) error
	SetSandboxNetwork(ctx context.Context, id string, allowInternet bool, allowOut, denyOut []string) error
	// DeleteSandbox removes the row (after the VM is gone).
	DeleteSandbox(ctx context.Context, id string) error

	// Hosts.
	UpsertHost(ctx context.Context, h store.Host) (store.Host, error)
	GetHost(ctx context.Context, id string) (store.Host, error)
	ListHosts(ctx context.Context) ([]store.Host, error)
}

// HostClient is the control plane's view of one host agent. The Connect RPC
// client of internal/agent implements it; tests of the control plane may use
// an in-process implementation.
type HostClient interface {
	CreateSandbox(ctx context.Context, req CreateSandboxRequest) (SandboxRuntime, error)
	DestroySandbox(ctx context.Context, sandboxID string) error
	PauseSandbox(ctx context.Context, sandboxID string) error
	ResumeSandbox(ctx context.Context, req ResumeSandboxRequest) (SandboxRuntime, error)
	// UpdateSandboxNetwork replaces a running or paused sandbox's egress
	// policy (at once when running).
	UpdateSandboxNetwork(ctx context.Context, sandboxID string, p egress.Policy) error
	ListSandboxes(ctx context.Context) ([]SandboxRuntime, error)
	Exec(ctx context.Context, sandboxID string, req ExecRequest) (ExecResult, error)
	// ExecStream runs a command, handing its output to out as it is
	// produced, and returns the exit code when it ends. An error from out
	// stops the command and is returned as it is.
	ExecStream(ctx context.Context, sandboxID string, req ExecRequest, out ExecOutput) (exitCode int, err error)
	ReadFile(ctx context.Context, sandboxID, path string) (io.ReadCloser, error)
	WriteFile(ctx context.Context, sandboxID, path string, r io.Reader) error
	CreateSnapshot(ctx context.Context, sandboxID, templateID string) (SnapshotInfo, error)
	DeleteSnapshot(ctx context.Context, templateID string) error
	Ping(ctx context.Context) (HostInfo, error)
}

// CreateSandboxRequest carries everything a host needs to start a sandbox.
type CreateSandboxRequest struct {
	SandboxID    string
	TemplateID   string
	TemplateKind sandbox.TemplateKind
	VCPUs        int
	MemoryMB     int
	DiskSizeMB   int
	Env          map[string]string
	AccessToken  string
	TimeoutS     int
	Egress       egress.Policy
	// Volumes to mount (volumes of the chosen host).
	Volumes []HostVolumeMount
	// EgressRules with the team's secrets filled in (never stored).
	EgressRules []egress.HeaderRule
}

// HostVolumeMount is a volume of the host at an absolute guest path.
type HostVolumeMount struct {
	VolumeID string
	Path     string
}

type ResumeSandboxRequest struct {
	SandboxID   string
	AccessToken string
	Egress      egress.Policy
}

// SandboxRuntime is a sandbox as a host sees it.
type SandboxRuntime struct {
	SandboxID string
	State     string // running | paused | ...
	Address   string // host-reachable envd address, host:port
	StartedAt time.Time
}

type ExecRequest struct {
	Cmd      string
	Args     []string
	Env      map[string]string
	Cwd      string
	TimeoutS int
}

// ExecOutput receives a chunk of a running command's output; stream is
// StreamStdout or StreamStderr. Chunks arrive in the order the host saw
// them and may split lines (and multi-byte characters) anywhere. Calls are
// sequential, never concurrent.
type ExecOutput func(stream string, data []byte) error

// Output stream names, as the REST API spells them.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

type ExecResult struct {
	Stdout   string
	Stderr   string
	ExitCode int
}

type SnapshotInfo struct {
	TemplateID string
	VCPUs      int
	MemoryMB   int
	DiskSizeMB int
}

type HostInfo struct {
	HostID       string
	VCPUs        int
	MemoryMB     int
	DiskMB       int
	SandboxCount int
	Driver       string
}

// PlacementRequest is what a HostPool needs to choose a host.
type PlacementRequest struct {
	TemplateID string
	// TemplateHosts hold the template's files (snapshot and built
	// templates); a host picked outside them needs a copy first
	// (TemplateCopier). None: every host can run it.
	TemplateHosts []string
	VCPUs         int
	MemoryMB      int
	DiskSizeMB    int
	// Host, when set, is the only host that may take the sandbox (its
	// volumes live there).
	Host string
}

// HostPool chooses hosts for new sandboxes and finds the host of existing
// ones. Single-host today (SingleHost); a scheduler over registered hosts
// implements it for many hosts.
type HostPool interface {
	// Pick returns a host able to run req. No host: KindUnavailable.
	Pick(ctx context.Context, req PlacementRequest) (hostID string, c HostClient, err error)
	// Get returns the client of a known host. Unknown: KindUnavailable.
	Get(ctx context.Context, hostID string) (HostClient, error)
}

// TemplateCopier is implemented by host clients whose hosts can send a
// template's files to another host (the agent's client does).
type TemplateCopier interface {
	// CopyTemplateTo streams templateID's files from this host to dst's
	// host, which checks their hash and only then puts them in place; it
	// returns the bytes copied.
	CopyTemplateTo(ctx context.Context, templateID string, dst HostClient) (int64, error)
}

// TemplateBuilder is implemented by host clients whose hosts build
// templates (the agent's client does); the service asks for it with a type
// assertion so hosts and fakes that do not build need not say so.
type TemplateBuilder interface {
	// BuildTemplate runs a build on the host, handing it log lines as they
	// come; a failed build leaves nothing on the host.
	BuildTemplate(ctx context.Context, req BuildTemplateRequest, log func(templatebuild.Log)) (BuildTemplateResult, error)
	// DeleteBuild removes a build's artefacts; idempotent.
	DeleteBuild(ctx context.Context, artifactID string) error
}

// BuildTemplateRequest is one build for a host.
type BuildTemplateRequest struct {
	ArtifactID string
	Plan       templatebuild.Plan
	VCPUs      int
	MemoryMB   int
	DiskSizeMB int // the working disk while steps run
	// TemplateDiskMB and MinFreeDiskMB decide the template's disk (see
	// the host-agent proto's BuildTemplateRequest).
	TemplateDiskMB int
	MinFreeDiskMB  *int
	SkipCache      bool
	Auth           templatebuild.RegistryAuth
	Files          map[string][]byte // COPY archives (tar.gz) by files hash
	ReadyTimeoutS  int
}

// BuildTemplateResult is a finished build.
type BuildTemplateResult struct {
	Snapshot   bool // sandboxes restore the snapshot template taken after the ready check
	Result     templatebuild.Result
	DiskSizeMB int // the template's root disk, as the host decided it
}

// ConsoleLogReader is implemented by host clients that can read a
// sandbox's guest console log (the agent's client does); the service asks
// for it with a type assertion, like TemplateBuilder.
type ConsoleLogReader interface {
	// ReadConsoleLog returns up to maxBytes of the log from offset and the
	// log's whole size.
	ReadConsoleLog(ctx context.Context, sandboxID string, offset int64, maxBytes int) ([]byte, int64, error)
}
