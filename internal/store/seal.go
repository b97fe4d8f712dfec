package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// Sealer encrypts secrets before they reach a table and decrypts them when
// read back, so a copy of the database (a backup, a leaked SQLite file)
// does not reveal sandbox access tokens or environment variables.
type Sealer interface {
	Seal(plaintext []byte) ([]byte, error)
	Open(sealed []byte) ([]byte, error)
}

// aesSealVersion prefixes every sealed value so the format (or key) can be
// rotated later without guessing what a stored value is.
const aesSealVersion = 1

type aesSealer struct{ aead cipher.AEAD }

var _ Sealer = (*aesSealer)(nil)

// NewAESSealer returns an AES-256-GCM sealer. The key must be 32 random
// bytes; the server keeps it in its data dir (0600) or takes it from
// configuration. Sealed form: version byte, 12-byte random nonce,
// ciphertext and tag.
func NewAESSealer(key []byte) (Sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("store: AES-256 sealer needs a 32-byte key, got %d bytes", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("store: sealer: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("store: sealer: %w", err)
	}
	return &aesSealer{aead: aead}, nil
}

func (s *aesSealer) Seal(plaintext []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plaintext)+s.aead.Overhead())
	out[0] = aesSealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("store: seal: %w", err)
	}
	return s.aead.Seal(out, out[1:], plaintext, nil), nil
}

var errSealed = errors.New("store: sealed value is corrupt or was sealed with another key")

func (s *aesSealer) Open(sealed []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns+s.aead.Overhead() || sealed[0] != aesSealVersion {
		return nil, errSealed
	}
	pt, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], nil)
	if err != nil {
		return nil, errSealed
	}
	return pt, nil
}

// seal and unseal apply the configured sealer (or none, in plaintext mode).
func (db *DB) seal(b []byte) ([]byte, error) {
	if db.sealer == nil {
		return b, nil
	}
	return db.sealer.Seal(b)
}

func (db *DB) unseal(b []byte) ([]byte, error) {
	if db.sealer == nil || b == nil {
		return b, nil
	}
	return db.sealer.Open(b)
}
