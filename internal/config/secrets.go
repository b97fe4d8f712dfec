package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// EnsureSecret returns the hex-encoded secret of n random bytes kept in
// dataDir/name, creating it (0600, atomically) on first use. An existing file
// that others can read or write, or that does not hold n bytes of hex, is an
// error: the server must not run with a leaked or damaged key.
func EnsureSecret(dataDir, name string, n int) ([]byte, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dataDir, name)
	b, err := ReadSecret(path, n)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	secret := make([]byte, n)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("generate %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(dataDir, "."+name+".*")
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("chmod %s: %w", name, err)
	}
	if _, err := tmp.WriteString(hex.EncodeToString(secret) + "\n"); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("sync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("close %s: %w", name, err)
	}
	// Link, not rename: if another process created the file meanwhile, keep
	// theirs so both use the same key.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return ReadSecret(path, n)
		}
		return nil, fmt.Errorf("install %s: %w", name, err)
	}
	return secret, nil
}

// AgentTokenFile is the agent's token in its data dir when no token is
// given: `hearth agent` creates it with EnsureSecret, `hearth server
// --agent-token-file` reads it with ReadSecret.
const AgentTokenFile = "agent-token"

// AgentTokenBytes is the agent token's length before hex encoding.
const AgentTokenBytes = 32

// ReadSecret reads a secret file EnsureSecret made: n hex-encoded bytes,
// readable by its owner only.
func ReadSecret(path string, n int) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("secret file %s has permissions %#o; it must be 0600 (run: chmod 600 %s)", path, perm, path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secret: %w", err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(b) != n {
		return nil, fmt.Errorf("secret file %s is corrupt: want %d hex-encoded bytes; restore it from a backup (deleting it invalidates what it protects)", path, n)
	}
	return b, nil
}

// DecodeKey parses a configured hex key of n bytes.
func DecodeKey(name, s string, n int) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != n {
		return nil, fmt.Errorf("%s must be %d bytes hex-encoded (%d hex characters)", name, n, 2*n)
	}
	return b, nil
}
