// Package initsecret is the contract between the host agent and envd for
// envd's first /init: the agent makes a random secret per boot, puts only
// its SHA-256 on the guest's kernel command line (Param), and sends the
// secret itself as the access token of the first /init. envd accepts no
// other first /init. The command line is readable by every process in the
// guest and, through /proc/<vmm>/cmdline, by host users: the hash is
// useless to them.
package initsecret

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Param is the kernel command line parameter carrying the hex hash.
const Param = "hearth.init_hash"

// New returns a fresh secret and the kernel command line argument
// ("hearth.init_hash=<hex sha256>") that commits to it.
func New() (secret, kernelArg string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("init secret: %w", err)
	}
	secret = hex.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(secret))
	return secret, Param + "=" + hex.EncodeToString(sum[:]), nil
}

// FromCmdline returns the hash on a kernel command line (/proc/cmdline),
// or nil when there is none (an image started by an older agent).
func FromCmdline(cmdline string) ([]byte, error) {
	for _, tok := range strings.Fields(cmdline) {
		v, ok := strings.CutPrefix(tok, Param+"=")
		if !ok {
			continue
		}
		h, err := hex.DecodeString(v)
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("%s: want %d hex digits", Param, 2*sha256.Size)
		}
		return h, nil
	}
	return nil, nil
}
