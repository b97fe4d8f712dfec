// Package store persists hearth's control-plane state (users, teams, API
// keys, templates, sandboxes, hosts) in SQLite (embedded default) or
// PostgreSQL. The schema is managed by goose migrations applied at open.
//
// Every team-scoped query takes the caller's team ID and treats a row of
// another team exactly like a missing row (ErrNotFound), so handlers can map
// it to 404 without leaking existence.
package store

import (
	"errors"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
)

// PlatformTeamID owns the platform templates (base, tiny). Its templates are
// visible to every team.
const PlatformTeamID = "00000000-0000-0000-0000-000000000000"

var (
	// ErrNotFound: no row, or a row owned by another team.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique constraint was violated (duplicate email, name...).
	ErrConflict = errors.New("conflict")
	// ErrStaleState: a compare-and-set status transition found another status.
	ErrStaleState = errors.New("stale state")
)

// Role of a user inside a team.
type Role string

const (
	RoleOwner  Role = "owner"
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
)

type User struct {
	ID           string // UUID
	Email        string // lower-cased
	PasswordHash string
	IsAdmin      bool // platform admin
	CreatedAt    time.Time
}

type Team struct {
	ID        string // UUID
	Name      string
	CreatedAt time.Time
}

// TeamMembership is a team as seen by one of its members.
type TeamMembership struct {
	Team
	Role Role
}

type APIKey struct {
	ID         string // UUID
	TeamID     string
	Name       string
	Prefix     string // first characters of the key, shown in listings
	Hash       string // hex SHA-256 of the whole key
	CreatedBy  string // user ID, may be empty
	CreatedAt  time.Time
	LastUsedAt *time.Time
}

type Template struct {
	ID              string // short DNS-safe id
	TeamID          string
	Name            string // unique per team
	Kind            sandbox.TemplateKind
	VCPUs           int
	MemoryMB        int
	DiskSizeMB      int
	Host            string // host ID holding the snapshot files (snapshot kind)
	SourceSandboxID string // sandbox it was taken from (snapshot kind)
	CreatedAt       time.Time
	// Built templates: ArtifactID names the current version's files on its
	// host ("" : the ID itself); Config is the JSON of its env, user,
	// workdir and start command; BuildStatus is BuildStatusBuilding until
	// the first build succeeds.
	ArtifactID  string
	Config      string
	BuildStatus string
	// AutoDelete: the template is deleted with the last sandbox made from
	// it (a fork's internal capture); it is not meant to be reused.
	AutoDelete bool
}

// HostTemplateID is the template ID a host knows the current version by.
func (t Template) HostTemplateID() string {
	if t.ArtifactID != "" {
		return t.ArtifactID
	}
	return t.ID
}

// Build statuses (templates use Building, Ready and Error).
const (
	BuildStatusWaiting   = "waiting"
	BuildStatusBuilding  = "building"
	BuildStatusReady     = "ready"
	BuildStatusError     = "error"
	BuildStatusCancelled = "cancelled"
)

// Build is one build of a template.
type Build struct {
	ID         string
	TemplateID string
	TeamID     string
	Status     string
	Spec       string // JSON of the build request
	Error      string
	Host       string
	Kind       sandbox.TemplateKind // of the result, once ready
	VCPUs      int
	MemoryMB   int
	DiskSizeMB int
	CreatedAt  time.Time
	FinishedAt time.Time
	// ReclaimedAt: a superseded build whose files were removed (zero: not).
	ReclaimedAt time.Time
}

// BuildLog is one line of a build's log; Seq orders them from 1.
type BuildLog struct {
	Seq     int
	Time    time.Time
	Level   string
	Step    int
	Message string
}

type Sandbox struct {
	ID            string // lowercase letters and digits: used in host names
	TeamID        string
	TemplateID    string
	Status        sandbox.State
	Host          string // host ID; empty until placed
	VCPUs         int
	MemoryMB      int
	DiskSizeMB    int
	Metadata      map[string]string
	Env           map[string]string
	AccessToken   string // envd access token, encrypted at rest by the store's sealer
	TimeoutS      int
	EndAt         time.Time // when the timeout fires
	AutoPause     bool
	AutoResume    bool
	AllowInternet bool
	// AllowOut and DenyOut are egress rules (canonical CIDRs, see
	// internal/egress); AllowOut wins.
	AllowOut  []string
	DenyOut   []string
	Error     string // last error, for status=error
	CreatedAt time.Time
	UpdatedAt time.Time
}

type HostStatus string

const (
	HostReady       HostStatus = "ready"
	HostUnreachable HostStatus = "unreachable"
	HostDraining    HostStatus = "draining"
)

type Host struct {
	ID            string
	Name          string
	Address       string // host:port of its agent RPC endpoint
	Status        HostStatus
	VCPUs         int // capacity
	MemoryMB      int
	DiskMB        int
	UsedVCPUs     int
	UsedMemoryMB  int
	UsedDiskMB    int
	SandboxCount  int
	LastHeartbeat time.Time
	CreatedAt     time.Time
}

// SandboxFilter narrows ListSandboxes. Zero values match everything.
type SandboxFilter struct {
	Statuses []sandbox.State
	Metadata map[string]string // every pair must match
	Limit    int               // 0: no limit
	// After is a cursor: SandboxCursor(last) of the previous page (stays
	// valid if that sandbox is deleted) or that sandbox's ID. Results are
	// ordered by (CreatedAt, ID) and start after it.
	After string
}
