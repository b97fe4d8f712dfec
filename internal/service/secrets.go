package service

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/store"
)

// Team secrets (E2B's Secret API). Values are write-only: they are sealed
// by the store and no method here returns them to a client. Egress rules
// (egressrules.go) fill them into the headers a sandbox's host sets on its
// HTTPS requests (docs/security.md).

// Secret bounds, E2B's: names 1-128 of [a-zA-Z0-9_-] (lower-cased; "sec_"
// is reserved for IDs), metadata at most 32 entries, keys 128 bytes,
// values 1024, 8192 bytes in all.
const (
	maxSecretMetaEntries = 32
	maxSecretMetaKey     = 128
	maxSecretMetaValue   = 1024
	maxSecretMetaTotal   = 8192
	maxSecretValue       = 64 << 10
	secretIDPrefix       = "sec_"
)

var secretNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)

// SecretsStore is the persistence of secrets; *store.DB implements it.
type SecretsStore interface {
	CreateSecret(ctx context.Context, s store.Secret) (store.Secret, error)
	GetSecret(ctx context.Context, teamID, idOrName string) (store.Secret, error)
	ListSecrets(ctx context.Context, teamID, afterName string, limit int) ([]store.Secret, error)
	UpdateSecret(ctx context.Context, teamID, id, value string, metadata map[string]string) (store.Secret, error)
	DeleteSecret(ctx context.Context, teamID, id string) error
	// SecretValue unseals a secret's value (egress rules only).
	SecretValue(ctx context.Context, teamID, name string) (string, error)
}

var _ SecretsStore = (*store.DB)(nil)

func validSecretMeta(m map[string]string) error {
	if len(m) > maxSecretMetaEntries {
		return InvalidArgument("metadata", "at most %d entries", maxSecretMetaEntries)
	}
	total := 0
	for k, v := range m {
		if k == "" || len(k) > maxSecretMetaKey || len(v) > maxSecretMetaValue {
			return InvalidArgument("metadata", "keys must be 1-%d bytes, values at most %d bytes", maxSecretMetaKey, maxSecretMetaValue)
		}
		total += len(k) + len(v)
	}
	if total > maxSecretMetaTotal {
		return InvalidArgument("metadata", "at most %d bytes in all", maxSecretMetaTotal)
	}
	return nil
}

func validSecretValue(v string) error {
	if v == "" || len(v) > maxSecretValue {
		return InvalidArgument("value", "must be 1-%d bytes", maxSecretValue)
	}
	return nil
}

// CreateSecret stores a new secret of p's team.
func (s *Service) CreateSecret(ctx context.Context, p Principal, name, value string, metadata map[string]string) (store.Secret, error) {
	if !secretNameRE.MatchString(name) {
		return store.Secret{}, InvalidArgument("name", "must be 1-128 of a-z, A-Z, 0-9, _ and -")
	}
	name = strings.ToLower(name)
	if strings.HasPrefix(name, secretIDPrefix) {
		return store.Secret{}, InvalidArgument("name", "the %s prefix is reserved for secret IDs", secretIDPrefix)
	}
	if err := validSecretValue(value); err != nil {
		return store.Secret{}, err
	}
	if err := validSecretMeta(metadata); err != nil {
		return store.Secret{}, err
	}
	sec, err := s.store.CreateSecret(ctx, store.Secret{TeamID: p.TeamID, Name: name, Value: value, Metadata: metadata})
	if err != nil {
		return store.Secret{}, fromStore(err, "secret", fmt.Sprintf("a secret named %q already exists", name))
	}
	s.log.InfoContext(ctx, "secret created", "secret_id", sec.ID, "team_id", p.TeamID)
	return sec, nil
}

// GetSecret finds a secret of p's team by ID or name (names match in any
// case, as they are stored lower-cased).
func (s *Service) GetSecret(ctx context.Context, p Principal, idOrName string) (store.Secret, error) {
	key := idOrName
	if !strings.HasPrefix(key, secretIDPrefix) {
		key = strings.ToLower(key)
	}
	sec, err := s.store.GetSecret(ctx, p.TeamID, key)
	if err != nil {
		return store.Secret{}, fromStore(err, "secret", "")
	}
	return sec, nil
}

// ListSecrets pages p's team's secrets by name: after is the last name of
// the previous page; next is "" on the last page.
func (s *Service) ListSecrets(ctx context.Context, p Principal, after string, limit int) (secs []store.Secret, next string, err error) {
	secs, err = s.store.ListSecrets(ctx, p.TeamID, after, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list secrets: %w", err)
	}
	if len(secs) > limit {
		secs = secs[:limit]
		next = secs[limit-1].Name
	}
	return secs, next, nil
}

// UpdateSecret stores a new value (the next version); metadata nil keeps
// the current metadata.
func (s *Service) UpdateSecret(ctx context.Context, p Principal, idOrName, value string, metadata map[string]string) (store.Secret, error) {
	if err := validSecretValue(value); err != nil {
		return store.Secret{}, err
	}
	if err := validSecretMeta(metadata); err != nil {
		return store.Secret{}, err
	}
	cur, err := s.GetSecret(ctx, p, idOrName)
	if err != nil {
		return store.Secret{}, err
	}
	sec, err := s.store.UpdateSecret(ctx, p.TeamID, cur.ID, value, metadata)
	if err != nil {
		return store.Secret{}, fromStore(err, "secret", "")
	}
	return sec, nil
}

// DeleteSecret removes a secret of p's team by ID or name.
func (s *Service) DeleteSecret(ctx context.Context, p Principal, idOrName string) error {
	cur, err := s.GetSecret(ctx, p, idOrName)
	if err != nil {
		return err
	}
	if err := s.store.DeleteSecret(ctx, p.TeamID, cur.ID); err != nil {
		return fromStore(err, "secret", "")
	}
	s.log.InfoContext(ctx, "secret deleted", "secret_id", cur.ID, "team_id", p.TeamID)
	return nil
}
