package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

func TestPasswords(t *testing.T) {
	t.Parallel()
	p, err := NewPasswords(bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	h, err := p.Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h, "correct horse") {
		t.Fatal("hash contains the password")
	}
	if !p.Check(h, "correct horse") {
		t.Error("right password refused")
	}
	if p.Check(h, "correct horsf") {
		t.Error("wrong password accepted")
	}
	if _, err := p.Hash(strings.Repeat("x", 73)); err == nil {
		t.Error("password over bcrypt's 72 bytes accepted silently")
	}
}

func newTokens(t *testing.T, now func() time.Time) *Tokens {
	t.Helper()
	tk, err := NewTokens([]byte(strings.Repeat("k", 32)), "hearth-test", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestTokensRoundTrip(t *testing.T) {
	t.Parallel()
	tk := newTokens(t, nil)
	s, exp, err := tk.Sign("user-1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := tk.Verify(s)
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != "user-1" || !c.ExpiresAt.Equal(exp.Truncate(time.Second)) {
		t.Errorf("claims = %+v, want user-1 expiring %v", c, exp)
	}
}

func TestTokensRefused(t *testing.T) {
	t.Parallel()
	now := time.Now()
	tk := newTokens(t, func() time.Time { return now })
	good, _, err := tk.Sign("u")
	if err != nil {
		t.Fatal(err)
	}
	later := newTokens(t, func() time.Time { return now.Add(2 * time.Hour) })
	otherKey, err := NewTokens([]byte(strings.Repeat("z", 32)), "hearth-test", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherIss, err := NewTokens([]byte(strings.Repeat("k", 32)), "someone-else", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{
		Issuer: "hearth-test", Subject: "u", ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	hs512, err := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.RegisteredClaims{
		Issuer: "hearth-test", Subject: "u", ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}).SignedString([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	noExp, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer: "hearth-test", Subject: "u",
	}).SignedString([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		tk    *Tokens
		token string
	}{
		{"expired", later, good},
		{"other key", otherKey, good},
		{"other issuer", otherIss, good},
		{"alg none", tk, none},
		{"alg HS512", tk, hs512},
		{"no expiry", tk, noExp},
		{"garbage", tk, "not.a.jwt"},
		{"tampered", tk, good[:len(good)-2] + "xx"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := tc.tk.Verify(tc.token); err != ErrInvalidToken {
				t.Errorf("Verify = %v, want ErrInvalidToken", err)
			}
		})
	}
}

func TestNewTokensRejectsShortKey(t *testing.T) {
	t.Parallel()
	if _, err := NewTokens([]byte("short"), "i", time.Hour, nil); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestAPIKey(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		key, prefix, hash, err := NewAPIKey()
		if err != nil {
			t.Fatal(err)
		}
		if !WellFormedAPIKey(key) {
			t.Fatalf("key %q not well formed", key)
		}
		if !strings.HasPrefix(key, prefix) || len(prefix) != 10 {
			t.Fatalf("prefix %q of %q", prefix, key)
		}
		sum := sha256.Sum256([]byte(key))
		if hash != hex.EncodeToString(sum[:]) {
			t.Fatalf("hash %q is not the hex sha256 of the key", hash)
		}
		if seen[key] {
			t.Fatal("duplicate key")
		}
		seen[key] = true
	}
	for _, bad := range []string{"", "e2b_", "e2b_" + strings.Repeat("A", 40), "xyz_" + strings.Repeat("a", 40), "e2b_" + strings.Repeat("a", 41), "e2b_" + strings.Repeat("g", 40)} {
		if WellFormedAPIKey(bad) {
			t.Errorf("WellFormedAPIKey(%q) = true", bad)
		}
	}
}

func TestAccessTokenAndEqual(t *testing.T) {
	t.Parallel()
	a, err := NewAccessToken()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewAccessToken()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 64 || a == b {
		t.Fatalf("tokens %q %q", a, b)
	}
	if !Equal(a, a) || Equal(a, b) || Equal(a, a[:10]) {
		t.Error("Equal is wrong")
	}
}
