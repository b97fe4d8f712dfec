// Package service holds hearth's use cases: where a user's, team's,
// template's and sandbox's life is decided. It talks to persistence through
// Store and to hosts through HostPool/HostClient, and reports failures as
// *Error values of a few kinds that the api package maps to HTTP statuses.
package service

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/hearth-sandbox/hearth/internal/auth"
)

// Deps are the Service's collaborators.
type Deps struct {
	Store     Store
	Hosts     HostPool // nil: no hosts
	Passwords *auth.Passwords
	Tokens    *auth.Tokens
	Logger    *slog.Logger     // nil: discard
	Now       func() time.Time // nil: time.Now
	// BuildFilesDir keeps uploaded build contexts and COPY archives
	// (empty: template builds with files are refused).
	BuildFilesDir string
	// SettleTimeout bounds waiting for another caller's pause, resume or
	// create of the same sandbox (0: DefaultSettleTimeout).
	SettleTimeout time.Duration
}

// Service implements the use cases. Safe for concurrent use.
type Service struct {
	store     Store
	hosts     HostPool
	passwords *auth.Passwords
	tokens    *auth.Tokens
	log       *slog.Logger
	now       func() time.Time
	// settleTimeout: see Deps.SettleTimeout.
	settleTimeout time.Duration
	buildFilesDir string
	builds        builds
	forks         forkSpawns
}

// New checks deps and returns the service.
func New(d Deps) (*Service, error) {
	if d.Store == nil || d.Passwords == nil || d.Tokens == nil {
		return nil, errors.New("service: Store, Passwords and Tokens are required")
	}
	if d.Hosts == nil {
		d.Hosts = SingleHost{}
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.SettleTimeout <= 0 {
		d.SettleTimeout = DefaultSettleTimeout
	}
	return &Service{
		store: d.Store, hosts: d.Hosts, passwords: d.Passwords, tokens: d.Tokens, log: d.Logger, now: d.Now,
		settleTimeout: d.SettleTimeout, buildFilesDir: d.BuildFilesDir,
		builds: builds{cancel: map[string]context.CancelCauseFunc{}},
	}, nil
}

// Ping reports whether the store answers (for health checks).
func (s *Service) Ping(ctx context.Context) error { return s.store.Ping(ctx) }

// Principal is an authenticated caller acting for one team.
type Principal struct {
	UserID   string // empty for API keys
	TeamID   string
	IsAdmin  bool   // platform admin (people only)
	APIKeyID string // set when authenticated by API key
}
