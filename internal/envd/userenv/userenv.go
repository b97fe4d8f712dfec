// Package userenv holds what /init configures inside the guest (environment
// variables, default user and working directory) and resolves the OS user a
// request acts as, with the path rules that user implies.
package userenv

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// FallbackUser is used when neither the request nor /init names a user.
const FallbackUser = "root"

// ErrUnknownUser is returned when a requested user does not exist in the guest.
var ErrUnknownUser = errors.New("unknown user")

// State is the guest configuration set through /init. The zero value is ready.
type State struct {
	mu             sync.RWMutex
	envVars        map[string]string
	defaultUser    string
	defaultWorkdir string
}

// MergeEnv adds vars to the environment every process gets; later calls win.
func (s *State) MergeEnv(vars map[string]string) {
	if len(vars) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.envVars == nil {
		s.envVars = make(map[string]string, len(vars))
	}
	maps.Copy(s.envVars, vars)
}

// Env returns a copy of the /init environment variables.
func (s *State) Env() map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.envVars)
}

// SetDefaults records the default user and workdir; empty values leave the
// current setting unchanged (so a re-init that omits them keeps them).
func (s *State) SetDefaults(userName, workdir string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if userName != "" {
		s.defaultUser = userName
	}
	if workdir != "" {
		s.defaultWorkdir = workdir
	}
}

// DefaultUser is the user for requests that do not name one.
func (s *State) DefaultUser() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.defaultUser == "" {
		return FallbackUser
	}
	return s.defaultUser
}

// DefaultWorkdir is the working directory set by /init, or "".
func (s *State) DefaultWorkdir() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.defaultWorkdir
}

// User is an OS account resolved from the guest's passwd and group files.
type User struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
	Home   string
}

// Lookup resolves name (or a numeric uid) to a User.
func Lookup(name string) (User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var uerr user.UnknownUserError
		if errors.As(err, &uerr) {
			if byID, idErr := user.LookupId(name); idErr == nil {
				u, err = byID, nil
			}
		}
		if err != nil {
			return User{}, fmt.Errorf("looking up user %q: %w: %w", name, ErrUnknownUser, err)
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return User{}, fmt.Errorf("user %q has non-numeric uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return User{}, fmt.Errorf("user %q has non-numeric gid %q: %w", name, u.Gid, err)
	}
	out := User{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	// Supplementary groups are best effort: a minimal image may lack /etc/group.
	if ids, gerr := u.GroupIds(); gerr == nil {
		for _, id := range ids {
			if g, perr := strconv.ParseUint(id, 10, 32); perr == nil {
				out.Groups = append(out.Groups, uint32(g))
			}
		}
	}
	if out.Home == "" {
		out.Home = "/"
	}
	return out, nil
}

// UserName returns the user named by an `Authorization: Basic base64(user:)`
// header (the E2B SDK's way of choosing the OS user), or "" if none is given.
func UserName(h http.Header) (string, error) {
	auth := h.Get("Authorization")
	if auth == "" {
		return "", nil
	}
	scheme, payload, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", fmt.Errorf("authorization header: unsupported scheme %q", scheme)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(payload))
	if err != nil {
		return "", fmt.Errorf("authorization header: %w", err)
	}
	name, _, _ := strings.Cut(string(raw), ":")
	return name, nil
}

// Resolve picks the user for a request: explicit name, else the default.
func (s *State) Resolve(name string) (User, error) {
	if name == "" {
		name = s.DefaultUser()
	}
	return Lookup(name)
}

// ResolveHeader picks the user named by the request's Authorization header.
func (s *State) ResolveHeader(h http.Header) (User, error) {
	name, err := UserName(h)
	if err != nil {
		return User{}, err
	}
	return s.Resolve(name)
}

// ExpandPath makes p absolute for u: "~" and "~/x" expand to the home
// directory, relative paths are taken from the home directory (as E2B's envd
// does), and an empty path means the default workdir or else the home.
func (s *State) ExpandPath(p string, u User) string {
	switch {
	case p == "":
		if wd := s.DefaultWorkdir(); wd != "" {
			return filepath.Clean(wd)
		}
		return filepath.Clean(u.Home)
	case p == "~":
		return filepath.Clean(u.Home)
	case strings.HasPrefix(p, "~/"):
		return filepath.Join(u.Home, p[2:])
	case filepath.IsAbs(p):
		return filepath.Clean(p)
	default:
		return filepath.Join(u.Home, p)
	}
}

// Workdir is the directory a process starts in when its request names none:
// the /init default workdir, else the user's home, else "/".
func (s *State) Workdir(u User) string {
	if wd := s.DefaultWorkdir(); wd != "" {
		return wd
	}
	if st, err := os.Stat(u.Home); err == nil && st.IsDir() {
		return u.Home
	}
	return "/"
}

// NeedsCredential reports whether acting as u requires switching uid/gid
// (false when envd already runs as u, e.g. unprivileged on a dev host).
func NeedsCredential(u User) bool {
	return uint32(os.Geteuid()) != u.UID || uint32(os.Getegid()) != u.GID
}
