package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Environment variables that override the login file.
const (
	EnvURL    = "HEARTH_URL"
	EnvAPIKey = "HEARTH_API_KEY"
	EnvToken  = "HEARTH_TOKEN"
	// EnvConfig names another login file (tests, several servers).
	EnvConfig = "HEARTH_CONFIG"
)

// Config is the login file, ~/.config/hearth/cli.json (mode 0600): where
// the server is and how to authenticate to it.
type Config struct {
	URL    string `json:"url"`
	Token  string `json:"token,omitempty"`   // session JWT from email/password login
	APIKey string `json:"api_key,omitempty"` // team API key
	Email  string `json:"email,omitempty"`   // who logged in, for display
}

// DefaultConfigPath is $HEARTH_CONFIG, else <user config dir>/hearth/cli.json.
func DefaultConfigPath(getenv func(string) string) (string, error) {
	if p := getenv(EnvConfig); p != "" {
		return p, nil
	}
	dir := getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := getenv("HOME")
		if home == "" {
			d, err := os.UserConfigDir()
			if err != nil {
				return "", fmt.Errorf("find the config dir: %w (set %s)", err, EnvConfig)
			}
			dir = d
		} else {
			dir = filepath.Join(home, ".config")
		}
	}
	return filepath.Join(dir, "hearth", "cli.json"), nil
}

// LoadConfig reads the login file; a missing file is an empty Config.
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("parse %s: %w (delete it and run `hearth login` again)", path, err)
	}
	return c, nil
}

// SaveConfig writes the login file atomically with mode 0600 (it holds
// secrets), creating its directory with 0700.
func SaveConfig(path string, c Config) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".cli.json.*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Overrides are credentials from flags; empty fields do not override.
type Overrides struct {
	URL    string
	APIKey string
}

// Resolve merges the login file, the environment and flags (flags win,
// then the environment). Sandbox calls prefer the API key over the session
// token (see Client), so a key given explicitly is what they use.
func Resolve(file Config, getenv func(string) string, o Overrides) Config {
	c := file
	if v := getenv(EnvURL); v != "" {
		c.URL = v
	}
	if v := getenv(EnvToken); v != "" {
		c.Token, c.APIKey = v, ""
	}
	if v := getenv(EnvAPIKey); v != "" {
		c.APIKey = v
	}
	if o.URL != "" {
		c.URL = o.URL
	}
	if o.APIKey != "" {
		c.APIKey = o.APIKey
	}
	c.URL = strings.TrimRight(c.URL, "/")
	return c
}

// Client returns an API client for c.
func (c Config) Client() *Client { return NewClient(c.URL, c.APIKey, c.Token) }
