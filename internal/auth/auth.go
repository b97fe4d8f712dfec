// Package auth holds hearth's credential primitives: password hashes, JWT
// sessions for people, API keys for programs and access tokens for
// sandboxes. It knows nothing about storage; the service layer decides who
// may do what.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// ErrInvalidToken covers every reason a session token is refused (bad
// signature, wrong algorithm, expired, wrong issuer): callers must not tell
// them apart to the client.
var ErrInvalidToken = errors.New("invalid token")

// Passwords hashes and checks passwords with bcrypt.
type Passwords struct {
	// Cost is the bcrypt cost; 0 means bcrypt.DefaultCost. Tests use
	// bcrypt.MinCost to stay fast.
	Cost int
	// dummy is a hash compared against for unknown users so that a login for
	// an unknown email costs as much as one with a wrong password.
	dummy []byte
}

// NewPasswords prepares a hasher with the given bcrypt cost.
func NewPasswords(cost int) (*Passwords, error) {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("hearth-timing-equaliser"), cost)
	if err != nil {
		return nil, fmt.Errorf("prepare dummy hash: %w", err)
	}
	return &Passwords{Cost: cost, dummy: dummy}, nil
}

// Hash returns a bcrypt hash of password. bcrypt only reads 72 bytes; longer
// passwords are refused by bcrypt itself (ErrPasswordTooLong).
func (p *Passwords) Hash(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), p.Cost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// Check reports whether password matches hash (constant time inside bcrypt).
func (p *Passwords) Check(hash, password string) bool {
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

// CheckDummy spends the time of one Check against a hash that never matches;
// call it for unknown users.
func (p *Passwords) CheckDummy(password string) {
	_ = bcrypt.CompareHashAndPassword(p.dummy, []byte(password))
}

// Claims is what a session token says about its bearer.
type Claims struct {
	UserID    string
	ExpiresAt time.Time
}

// Tokens signs and verifies HS256 session JWTs.
type Tokens struct {
	key    []byte
	issuer string
	ttl    time.Duration
	now    func() time.Time
}

// NewTokens returns a signer/verifier. key must be at least 32 bytes.
func NewTokens(key []byte, issuer string, ttl time.Duration, now func() time.Time) (*Tokens, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("jwt key too short: %d bytes, need at least 32", len(key))
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("jwt ttl must be positive, got %s", ttl)
	}
	if now == nil {
		now = time.Now
	}
	return &Tokens{key: append([]byte(nil), key...), issuer: issuer, ttl: ttl, now: now}, nil
}

// Sign issues a token for userID that expires after the configured TTL.
func (t *Tokens) Sign(userID string) (string, time.Time, error) {
	now := t.now()
	exp := now.Add(t.ttl)
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer:    t.issuer,
		Subject:   userID,
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		ExpiresAt: jwt.NewNumericDate(exp),
	})
	s, err := tok.SignedString(t.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign jwt: %w", err)
	}
	return s, exp, nil
}

// Verify checks signature (HS256 only: "none" and asymmetric algorithms are
// refused), issuer and expiry.
func (t *Tokens) Verify(token string) (Claims, error) {
	var rc jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &rc, func(*jwt.Token) (any, error) { return t.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(t.issuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(t.now),
	)
	if err != nil || rc.Subject == "" || rc.ExpiresAt == nil {
		return Claims{}, ErrInvalidToken
	}
	return Claims{UserID: rc.Subject, ExpiresAt: rc.ExpiresAt.Time}, nil
}

// APIKeyPrefix starts every API key: E2B SDKs expect keys shaped e2b_<hex>.
const APIKeyPrefix = "e2b_"

const apiKeyHexLen = 40

// visiblePrefixLen is how much of a key is stored in clear and shown in
// listings (e2b_ + 6 hex): enough to recognise a key, useless to guess it.
const visiblePrefixLen = len(APIKeyPrefix) + 6

// NewAPIKey returns a fresh key (shown once to its owner), its visible prefix
// and the hex SHA-256 that is the only thing stored.
func NewAPIKey() (key, prefix, hash string, err error) {
	b := make([]byte, apiKeyHexLen/2)
	if _, err := rand.Read(b); err != nil {
		return "", "", "", fmt.Errorf("generate api key: %w", err)
	}
	key = APIKeyPrefix + hex.EncodeToString(b)
	return key, key[:visiblePrefixLen], HashAPIKey(key), nil
}

// HashAPIKey is the stored form of a key. A plain SHA-256 is enough: keys
// carry 160 random bits, so there is nothing to brute-force.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// WellFormedAPIKey reports whether key has the e2b_ + 40 lowercase hex shape,
// so garbage is refused without touching the database.
func WellFormedAPIKey(key string) bool {
	if len(key) != len(APIKeyPrefix)+apiKeyHexLen || !strings.HasPrefix(key, APIKeyPrefix) {
		return false
	}
	for _, c := range key[len(APIKeyPrefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// NewAccessToken returns a random token that guards a sandbox's envd and
// proxied ports (256 bits, hex).
func NewAccessToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate access token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Equal compares two secrets in constant time (for equal lengths).
func Equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
