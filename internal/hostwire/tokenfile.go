package hostwire

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

// TokenFileName is the agent's token file in its data dir when no token
// is given: `hearth agent` creates it, `hearth server --agent-token-file`
// reads it.
const TokenFileName = "agent-token"

// LoadOrCreateToken returns the token in path, creating the file (mode
// 0600, a random token) when it does not exist.
func LoadOrCreateToken(path string) (string, error) {
	tok, err := ReadToken(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return tok, err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("agent token: %w", err)
	}
	tok = hex.EncodeToString(b[:])
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("agent token: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) { // created meanwhile
			return ReadToken(path)
		}
		return "", fmt.Errorf("agent token: %w", err)
	}
	_, werr := f.WriteString(tok + "\n")
	if err := errors.Join(werr, f.Close()); err != nil {
		return "", fmt.Errorf("agent token: %w", err)
	}
	return tok, nil
}

// ReadToken reads a token file. It must be readable by its owner only:
// whoever reads it drives every sandbox of the host.
func ReadToken(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("agent token: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("agent token %s: mode %04o lets other users read it; run chmod 600 %s", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("agent token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("agent token %s: empty file", path)
	}
	return tok, nil
}
