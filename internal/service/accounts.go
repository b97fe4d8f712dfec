package service

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// errBadCredentials is the one answer for an unknown email and for a wrong
// password, so logins cannot probe which emails exist.
var errBadCredentials = Unauthenticated("invalid email or password")

// SignupResult is a new account and its first session.
type SignupResult struct {
	Token     string
	ExpiresAt time.Time
	User      store.User
	Team      store.Team
}

// Signup creates a user, a default team and the owner membership in one
// transaction, and signs the user in.
func (s *Service) Signup(ctx context.Context, email, password string) (SignupResult, error) {
	email, err := normEmail(email)
	if err != nil {
		return SignupResult{}, err
	}
	if err := validPassword(password); err != nil {
		return SignupResult{}, err
	}
	hash, err := s.passwords.Hash(password)
	if err != nil {
		return SignupResult{}, err
	}
	teamName := email[:strings.LastIndexByte(email, '@')]
	u, team, err := s.store.CreateUserWithTeam(ctx, store.User{Email: email, PasswordHash: hash}, teamName)
	if err != nil {
		return SignupResult{}, fromStore(err, "user", "an account with this email already exists")
	}
	tok, exp, err := s.tokens.Sign(u.ID)
	if err != nil {
		return SignupResult{}, err
	}
	s.log.InfoContext(ctx, "user signed up", "user_id", u.ID, "team_id", team.ID)
	return SignupResult{Token: tok, ExpiresAt: exp, User: u, Team: team}, nil
}

// Login checks credentials and returns a session token.
func (s *Service) Login(ctx context.Context, email, password string) (string, time.Time, error) {
	email = strings.ToLower(strings.TrimSpace(email))
	u, err := s.store.GetUserByEmail(ctx, email)
	if errors.Is(err, store.ErrNotFound) {
		// Same cost as a wrong password: no timing oracle for emails.
		s.passwords.CheckDummy(password)
		return "", time.Time{}, errBadCredentials
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("login: %w", err)
	}
	if !s.passwords.Check(u.PasswordHash, password) {
		return "", time.Time{}, errBadCredentials
	}
	tok, exp, err := s.tokens.Sign(u.ID)
	if err != nil {
		return "", time.Time{}, err
	}
	return tok, exp, nil
}

// Me is the signed-in user and the teams they belong to.
func (s *Service) Me(ctx context.Context, p Principal) (store.User, []store.TeamMembership, error) {
	u, err := s.store.GetUserByID(ctx, p.UserID)
	if err != nil {
		return store.User{}, nil, fromStore(err, "user", "")
	}
	teams, err := s.store.ListTeamsForUser(ctx, u.ID)
	if err != nil {
		return store.User{}, nil, fmt.Errorf("list teams: %w", err)
	}
	return u, teams, nil
}

// AuthenticateToken resolves a session token to a principal acting for
// teamID, or (teamID empty) for the user's first team, preferring one they
// own.
func (s *Service) AuthenticateToken(ctx context.Context, token, teamID string) (Principal, error) {
	c, err := s.tokens.Verify(token)
	if err != nil {
		return Principal{}, Unauthenticated("invalid or expired token")
	}
	u, err := s.store.GetUserByID(ctx, c.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, Unauthenticated("invalid or expired token")
	}
	if err != nil {
		return Principal{}, fmt.Errorf("authenticate: %w", err)
	}
	p := Principal{UserID: u.ID, IsAdmin: u.IsAdmin}
	if teamID != "" {
		if _, err := s.store.GetMembership(ctx, teamID, u.ID); err != nil {
			return Principal{}, fromStore(err, "team", "")
		}
		p.TeamID = teamID
		return p, nil
	}
	teams, err := s.store.ListTeamsForUser(ctx, u.ID)
	if err != nil {
		return Principal{}, fmt.Errorf("authenticate: %w", err)
	}
	for _, t := range teams {
		if t.Role == store.RoleOwner {
			p.TeamID = t.ID
			return p, nil
		}
	}
	if len(teams) > 0 {
		p.TeamID = teams[0].ID
	}
	return p, nil
}

// touchEvery limits last_used_at writes to one per key per minute, so a busy
// key does not turn every request into a database write.
const touchEvery = time.Minute

// AuthenticateAPIKey resolves an X-API-Key to its team.
func (s *Service) AuthenticateAPIKey(ctx context.Context, key string) (Principal, error) {
	if !auth.WellFormedAPIKey(key) {
		return Principal{}, Unauthenticated("invalid API key")
	}
	hash := auth.HashAPIKey(key)
	k, err := s.store.GetAPIKeyByHash(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, Unauthenticated("invalid API key")
	}
	if err != nil {
		return Principal{}, fmt.Errorf("authenticate api key: %w", err)
	}
	if !auth.Equal(k.Hash, hash) { // defence in depth: the lookup matched it
		return Principal{}, Unauthenticated("invalid API key")
	}
	if now := s.now(); k.LastUsedAt == nil || now.Sub(*k.LastUsedAt) >= touchEvery {
		if err := s.store.TouchAPIKey(ctx, k.ID, now); err != nil {
			s.log.WarnContext(ctx, "record api key use", "key_id", k.ID, "err", err)
		}
	}
	return Principal{TeamID: k.TeamID, APIKeyID: k.ID}, nil
}

// PromoteAdmin makes the user with this email a platform admin (CLI only).
func (s *Service) PromoteAdmin(ctx context.Context, email string) error {
	e, err := normEmail(email)
	if err != nil {
		return err
	}
	if err := s.store.SetUserAdmin(ctx, e, true); err != nil {
		return fromStore(err, "user", "")
	}
	s.log.InfoContext(ctx, "user promoted to platform admin", "email", e)
	return nil
}

// CreateAPIKey makes a key for p's team. The key is returned once; only its
// SHA-256 is stored.
// API keys follow the team's roles (docs/security.md): any member lists
// them (prefixes and names only), owners and admins create and delete
// them, and a member removed from the team loses the keys they created.

var errNotKeyManager = PermissionDenied("only the team's owners and admins can create or delete its API keys")

// requireKeyManager lets owners and admins of p's team (and platform
// admins) manage its keys.
func (s *Service) requireKeyManager(ctx context.Context, p Principal) error {
	if p.IsAdmin {
		return nil
	}
	r, err := s.callerRole(ctx, p, p.TeamID)
	if err != nil {
		return err
	}
	if !canManage(r) {
		return errNotKeyManager
	}
	return nil
}

func (s *Service) CreateAPIKey(ctx context.Context, p Principal, name string) (store.APIKey, string, error) {
	if err := s.requireKeyManager(ctx, p); err != nil {
		return store.APIKey{}, "", err
	}
	if err := validName("name", name); err != nil {
		return store.APIKey{}, "", err
	}
	key, prefix, hash, err := auth.NewAPIKey()
	if err != nil {
		return store.APIKey{}, "", err
	}
	k, err := s.store.CreateAPIKey(ctx, store.APIKey{TeamID: p.TeamID, Name: name, Prefix: prefix, Hash: hash, CreatedBy: p.UserID})
	if err != nil {
		return store.APIKey{}, "", fromStore(err, "api key", "an API key with this name already exists")
	}
	s.log.InfoContext(ctx, "api key created", "team_id", p.TeamID, "key_id", k.ID)
	return k, key, nil
}

func (s *Service) ListAPIKeys(ctx context.Context, p Principal) ([]store.APIKey, error) {
	ks, err := s.store.ListAPIKeys(ctx, p.TeamID)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return ks, nil
}

func (s *Service) DeleteAPIKey(ctx context.Context, p Principal, id string) error {
	if err := s.requireKeyManager(ctx, p); err != nil {
		return err
	}
	if err := s.store.DeleteAPIKey(ctx, p.TeamID, id); err != nil {
		return fromStore(err, "api key", "")
	}
	s.log.InfoContext(ctx, "api key deleted", "team_id", p.TeamID, "key_id", id)
	return nil
}
