// Package apiwire is the one set of wire types of hearth's REST API (/v1):
// the server (internal/api) encodes them and the CLI (internal/cli,
// cmd/hearth) decodes them, so a field changes in one place. Field names
// are the JSON contract (docs and internal/api/openapi.yaml).
//
// It imports nothing of hearth: clients can use it without the server.
package apiwire

import "time"

// Error is every error response: {"code": <http status>, "message": ...}
// (E2B's shape, so its SDKs report our errors properly).
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// Credentials is the body of signup and login.
type Credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// Token is the login response.
type Token struct {
	Token string `json:"token"`
}

// Account is a user as the signup response shows them.
type Account struct {
	ID    string `json:"id"`
	Email string `json:"email"`
}

// Signup is the signup response: a session token, the user and their team.
type Signup struct {
	Token string  `json:"token"`
	User  Account `json:"user"`
	Team  Team    `json:"team"`
}

// User is the signed-in user (GET /v1/me).
type User struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	IsAdmin   bool      `json:"is_admin"`
	CreatedAt time.Time `json:"created_at"`
}

// Team is a team; Role is the caller's role in it where the answer is
// about the caller's teams.
type Team struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Role string `json:"role,omitempty"`
}

// Me is GET /v1/me.
type Me struct {
	User  User   `json:"user"`
	Teams []Team `json:"teams"`
}

// TeamMember is one member of a team.
type TeamMember struct {
	UserID   string    `json:"user_id"`
	Email    string    `json:"email"`
	Role     string    `json:"role"`
	JoinedAt time.Time `json:"joined_at"`
}

// APIKey is a team API key; Key (the secret) is only in the create
// response.
type APIKey struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	Key        string     `json:"key,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

// CreateSandbox is the body of POST /v1/sandboxes. Nil fields take the
// template's (or the platform's) defaults.
type CreateSandbox struct {
	Template      string            `json:"template"`
	VCPUs         *int              `json:"vcpus,omitempty"`
	MemoryMB      *int              `json:"memory_mb,omitempty"`
	DiskSizeMB    *int              `json:"disk_size_mb,omitempty"`
	TimeoutS      *int              `json:"timeout_s,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	AutoPause     bool              `json:"auto_pause,omitempty"`
	AutoResume    bool              `json:"auto_resume,omitempty"`
	AllowInternet *bool             `json:"allow_internet,omitempty"`
	AllowOut      []string          `json:"allow_out,omitempty"`
	DenyOut       []string          `json:"deny_out,omitempty"`
	// Volumes to mount; the sandbox runs on their host (docs/volumes.md).
	Volumes []VolumeMount `json:"volumes,omitempty"`
	// EgressRules set headers on the guest's HTTPS to their domains;
	// values may name team secrets as ${e2b.secrets.NAME}.
	EgressRules []EgressRule `json:"egress_rules,omitempty"`
}

// EgressRule is a header rule of a sandbox (docs/security.md).
type EgressRule struct {
	Domain  string            `json:"domain"`
	Headers map[string]string `json:"headers"`
}

// VolumeMount is a volume (name or ID) at an absolute guest path.
type VolumeMount struct {
	Volume string `json:"volume"`
	Path   string `json:"path"`
}

// Volume is a team's persistent directory, mounted into sandboxes; Token
// authenticates the content API (E2B's Volume class).
type Volume struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Host      string    `json:"host"`
	Token     string    `json:"token"`
	CreatedAt time.Time `json:"created_at"`
}

// Network is the body of PUT /v1/sandboxes/{id}/network: the whole egress
// configuration (omitted fields are cleared).
type Network struct {
	AllowInternet *bool    `json:"allow_internet,omitempty"`
	AllowOut      []string `json:"allow_out,omitempty"`
	DenyOut       []string `json:"deny_out,omitempty"`
}

// Sandbox is a sandbox. Env values are never echoed (EnvKeys only);
// EnvdAccessToken is only in the create response.
type Sandbox struct {
	ID              string            `json:"id"`
	TemplateID      string            `json:"template_id"`
	Status          string            `json:"status"`
	Host            string            `json:"host"`
	VCPUs           int               `json:"vcpus"`
	MemoryMB        int               `json:"memory_mb"`
	DiskSizeMB      int               `json:"disk_size_mb"`
	Metadata        map[string]string `json:"metadata"`
	EnvKeys         []string          `json:"env_keys,omitempty"`
	TimeoutS        int               `json:"timeout_s"`
	EndAt           time.Time         `json:"end_at"`
	CreatedAt       time.Time         `json:"created_at"`
	AutoPause       bool              `json:"auto_pause"`
	AutoResume      bool              `json:"auto_resume"`
	AllowInternet   bool              `json:"allow_internet"`
	AllowOut        []string          `json:"allow_out,omitempty"`
	DenyOut         []string          `json:"deny_out,omitempty"`
	Error           string            `json:"error,omitempty"`
	EnvdAccessToken string            `json:"envd_access_token,omitempty"`
}

// ExecRequest is the body of POST /v1/sandboxes/{id}/exec.
type ExecRequest struct {
	Cmd      string            `json:"cmd"`
	Args     []string          `json:"args,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	Cwd      string            `json:"cwd,omitempty"`
	TimeoutS int               `json:"timeout_s,omitempty"`
}

// ExecResult is a finished command (the buffered answer).
type ExecResult struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exit_code"`
}

// Event types of a streamed exec.
const (
	EventStdout = "stdout"
	EventStderr = "stderr"
	EventExit   = "exit"
	EventError  = "error"
)

// ExecEvent is one line of a streamed exec (Accept: application/x-ndjson),
// as a client decodes it: "stdout" and "stderr" carry Data; the last line
// is "exit" (ExitCode) or "error" (Code, an HTTP status, and Message). The
// server writes each kind with its own type below, which keeps exit_code
// present when it is 0 and absent elsewhere.
type ExecEvent struct {
	Type     string `json:"type"`
	Data     string `json:"data,omitempty"`
	ExitCode int    `json:"exit_code"`
	Code     int    `json:"code,omitempty"`
	Message  string `json:"message,omitempty"`
}

// ExecOutputEvent is a "stdout" or "stderr" line.
type ExecOutputEvent struct {
	Type string `json:"type"`
	Data string `json:"data"`
}

// ExecExitEvent is the "exit" line.
type ExecExitEvent struct {
	Type     string `json:"type"`
	ExitCode int    `json:"exit_code"`
}

// ExecErrorEvent is the "error" line.
type ExecErrorEvent struct {
	Type    string `json:"type"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// Template is a base or snapshot template.
type Template struct {
	ID              string    `json:"id"`
	TeamID          string    `json:"team_id"`
	Name            string    `json:"name"`
	Kind            string    `json:"kind"`
	VCPUs           int       `json:"vcpus"`
	MemoryMB        int       `json:"memory_mb"`
	DiskSizeMB      int       `json:"disk_size_mb"`
	Host            string    `json:"host,omitempty"`
	SourceSandboxID string    `json:"source_sandbox_id,omitempty"`
	Platform        bool      `json:"platform"`
	CreatedAt       time.Time `json:"created_at"`
	// Built templates (template builds, Built): BuildStatus is building until the
	// first build succeeds; StartCmd serves when a sandbox starts.
	Built       bool   `json:"built"`
	BuildStatus string `json:"build_status,omitempty"`
	StartCmd    string `json:"start_cmd,omitempty"`
}

// Metrics is a running sandbox's current usage.
type Metrics struct {
	Timestamp   time.Time `json:"timestamp"`
	CPUCount    int       `json:"cpu_count"`
	CPUUsedPct  float64   `json:"cpu_used_pct"`
	MemUsedMB   int64     `json:"mem_used_mb"`
	MemTotalMB  int64     `json:"mem_total_mb"`
	DiskUsedMB  int64     `json:"disk_used_mb"`
	DiskTotalMB int64     `json:"disk_total_mb"`
}

// HostToken is a one-time host registration token (POST /v1/admin/hosts).
type HostToken struct {
	Token         string    `json:"token"`
	ExpiresAt     time.Time `json:"expires_at"`
	CAFingerprint string    `json:"ca_fingerprint"`
}

// HostResources is a host's capacity or usage.
type HostResources struct {
	VCPUs    int `json:"vcpus"`
	MemoryMB int `json:"memory_mb"`
	DiskMB   int `json:"disk_mb"`
}

// Host is a host of the fleet (GET /v1/admin/hosts).
type Host struct {
	ID            string         `json:"id"`
	Name          string         `json:"name"`
	Address       string         `json:"address"`
	Status        string         `json:"status"`
	Capacity      HostResources  `json:"capacity"`
	Usage         HostResources  `json:"usage"`
	SandboxCount  int            `json:"sandbox_count"` // as the agent last reported
	Sandboxes     map[string]int `json:"sandboxes"`     // store rows by status
	LastHeartbeat *time.Time     `json:"last_heartbeat"`
	CreatedAt     time.Time      `json:"created_at"`
}

// Request bodies of the smaller calls.
type (
	// NewAPIKey is the body of POST /v1/api-keys.
	NewAPIKey struct {
		Name string `json:"name"`
	}
	// SetTimeout is the body of POST /v1/sandboxes/{id}/timeout.
	SetTimeout struct {
		TimeoutS *int `json:"timeout_s"`
	}
	// CreateSnapshot is the body of POST /v1/snapshots.
	CreateSnapshot struct {
		SandboxID string `json:"sandbox_id"`
		Name      string `json:"name"`
	}
	// CreateVolume is the body of POST /v1/volumes.
	CreateVolume struct {
		Name string `json:"name"`
	}
	// NewHostToken is the (optional) body of POST /v1/admin/hosts.
	NewHostToken struct {
		TTLS int `json:"ttl_s"`
	}
	// AddTeamMember is the body of POST /v1/teams/{team_id}/members; an
	// empty Role is member.
	AddTeamMember struct {
		Email string `json:"email"`
		Role  string `json:"role,omitempty"`
	}
	// SetRole is the body of PATCH /v1/teams/{team_id}/members/{user_id}.
	SetRole struct {
		Role string `json:"role"`
	}
)

// Build is one build of a template.
type Build struct {
	ID         string     `json:"id"`
	TemplateID string     `json:"template_id"`
	Template   string     `json:"template"`
	Status     string     `json:"status"` // waiting, building, ready, error, cancelled
	Error      string     `json:"error,omitempty"`
	Host       string     `json:"host,omitempty"`
	Kind       string     `json:"kind,omitempty"`
	VCPUs      int        `json:"vcpus"`
	MemoryMB   int        `json:"memory_mb"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// ReclaimedAt: a superseded version whose files were removed (its log
	// stays).
	ReclaimedAt *time.Time `json:"reclaimed_at,omitempty"`
}

// Finished reports whether the build has ended (ready, error, cancelled).
func (b Build) Finished() bool { return b.Status != "waiting" && b.Status != "building" }

// BuildLog is one line of a build's log; Seq orders them from 1.
type BuildLog struct {
	Seq     int       `json:"seq"`
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Step    int       `json:"step,omitempty"`
	Message string    `json:"message"`
}

// BuildRequest is the body of POST /v1/templates/{name}/builds.
type BuildRequest struct {
	Dockerfile  string            `json:"dockerfile"`
	ContextHash string            `json:"context_hash,omitempty"`
	BuildArgs   map[string]string `json:"build_args,omitempty"`
	VCPUs       int               `json:"vcpus,omitempty"`
	MemoryMB    int               `json:"memory_mb,omitempty"`
	// DiskSizeMB is the template's root disk (default 20480, at least the
	// built file system); sandboxes of the template get it.
	DiskSizeMB    int      `json:"disk_size_mb,omitempty"`
	SkipCache     bool     `json:"skip_cache,omitempty"`
	Platform      bool     `json:"platform,omitempty"`
	ReadyCmd      string   `json:"ready_cmd,omitempty"`
	ReadyTimeoutS int      `json:"ready_timeout_s,omitempty"`
	Tags          []string `json:"tags,omitempty"`
	// Registry are the credentials of the FROM image's registry: used for
	// the pull, never stored or logged.
	Registry *RegistryAuth `json:"registry,omitempty"`
}

// RegistryAuth is a username and password (or token) for a registry.
type RegistryAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
}
