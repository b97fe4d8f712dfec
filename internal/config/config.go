// Package config loads hearth's settings from flags, environment variables
// and a .env file, and keeps generated secrets in the data directory.
//
// Precedence: an explicit flag wins over the environment, which wins over a
// .env file (godotenv never overrides variables already set), which wins over
// the flag's default. Every flag --foo-bar has the variable HEARTH_FOO_BAR.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/joho/godotenv"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// EnvPrefix starts every environment variable hearth reads.
const EnvPrefix = "HEARTH_"

// Config is the control plane's configuration.
type Config struct {
	DataDir     string
	Listen      string
	DatabaseURL string // empty: SQLite file in DataDir
	// JWTSecret signs session tokens; empty: generated once into DataDir.
	JWTSecret string
	// SealKey (hex, 32 bytes) encrypts secrets at rest in the store; empty:
	// generated once into DataDir.
	SealKey string
	Domain  string // sandbox traffic domain: <port>-<id>.<domain>
	// AgentURL is the single host agent to use (until multi-host placement);
	// empty: no hosts, sandbox creates answer 503.
	AgentURL string
	// AgentToken authenticates the control plane to the agent;
	// AgentTokenFile is read for it when empty (the agent's data dir has
	// one: agent-token).
	AgentToken     string
	AgentTokenFile string
	// AgentID is the host ID recorded on sandboxes placed on that agent;
	// keep it stable across restarts.
	AgentID     string
	JWTTTL      time.Duration
	LogLevel    string
	ReapEvery   time.Duration
	MaxUploadMB int64
	// MetricsToken guards /metrics; empty: loopback clients only.
	MetricsToken string
	// TLSCert and TLSKey (PEM files for Domain and *.Domain) make Listen
	// serve HTTPS; empty: plain HTTP.
	TLSCert, TLSKey string
	// RedirectListen is a plain-HTTP address that only redirects to HTTPS
	// (usually :80); empty: none.
	RedirectListen string
	// TrustedProxies are the CIDRs whose X-Forwarded-For/-Proto are
	// believed (a reverse proxy in front); empty: nobody's.
	TrustedProxies []string
	// PublicURL is where users reach hearth (e.g. https://hearth.example.com,
	// through a TLS-terminating proxy); https makes session cookies Secure.
	PublicURL string
	// SignedURLMaxAge, when set, makes signed envd file URLs carry an
	// expiry at most this far ahead (proxy.Options.SignedURLMaxAge).
	SignedURLMaxAge time.Duration
}

// SecureCookies reports whether cookies must carry the Secure attribute
// even on plain-HTTP requests: hearth is served over HTTPS by a proxy.
func (c Config) SecureCookies() bool {
	u, err := url.Parse(c.PublicURL)
	return err == nil && strings.EqualFold(u.Scheme, "https")
}

// CheckPublicURL refuses a --public-url that is not an absolute http(s) URL.
func (c Config) CheckPublicURL() error {
	if c.PublicURL == "" {
		return nil
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--public-url %q: want an absolute http:// or https:// URL, e.g. https://hearth.example.com", c.PublicURL)
	}
	return nil
}

// Default returns the configuration before flags and environment.
func Default() Config {
	return Config{
		DataDir:     DefaultDataDir(),
		Listen:      "127.0.0.1:3000",
		Domain:      "localhost",
		AgentID:     "local",
		JWTTTL:      24 * time.Hour,
		LogLevel:    "info",
		ReapEvery:   5 * time.Second,
		MaxUploadMB: 1024,
	}
}

// DefaultDataDir is $XDG_DATA_HOME/hearth, else ~/.local/share/hearth, else
// (no home directory) ./hearth-data.
func DefaultDataDir() string {
	if x := os.Getenv("XDG_DATA_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "hearth")
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".local", "share", "hearth")
	}
	return "hearth-data"
}

// AddStoreFlags registers the flags every command that opens the store needs
// (server, admin ...).
func AddStoreFlags(fs *pflag.FlagSet, c *Config) {
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for the SQLite database, secrets and sandbox files")
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "PostgreSQL URL (postgres://...); empty uses SQLite in the data dir")
	fs.StringVar(&c.SealKey, "seal-key", c.SealKey, "hex AES-256 key sealing secrets at rest; empty: generated into the data dir")
}

// AddServerFlags registers the control plane's flags.
func AddServerFlags(fs *pflag.FlagSet, c *Config) {
	AddStoreFlags(fs, c)
	fs.StringVar(&c.Listen, "listen", c.Listen, "HTTP listen address host:port")
	fs.StringVar(&c.JWTSecret, "jwt-secret", c.JWTSecret, "HS256 signing secret for sessions; empty: generated into the data dir")
	fs.StringVar(&c.Domain, "domain", c.Domain, "domain: api.<domain> is the API, <port>-<id>.<domain> sandbox traffic, <domain> or app.<domain> the dashboard")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "PEM certificate (chain) for <domain> and *.<domain>: --listen serves HTTPS; reloaded when the file changes")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "PEM private key of --tls-cert")
	fs.StringVar(&c.RedirectListen, "redirect-listen", c.RedirectListen, "plain-HTTP address (e.g. :80) that redirects everything to HTTPS; needs --tls-cert")
	fs.StringSliceVar(&c.TrustedProxies, "trusted-proxy", c.TrustedProxies, "CIDR or IP of a reverse proxy whose X-Forwarded-For/-Proto are believed (repeatable, comma-separated)")
	fs.StringVar(&c.AgentURL, "agent-url", c.AgentURL, "host agent URL; empty: no hosts (sandbox creation answers 503)")
	fs.StringVar(&c.PublicURL, "public-url", c.PublicURL, "URL users reach hearth at, e.g. https://hearth.example.com behind a TLS proxy (https: Secure cookies)")
	fs.StringVar(&c.AgentToken, "agent-token", c.AgentToken, "bearer token the host agent expects")
	fs.StringVar(&c.AgentTokenFile, "agent-token-file", c.AgentTokenFile, "file with the token the host agent expects (mode 0600; e.g. the agent's <data-dir>/agent-token)")
	fs.StringVar(&c.AgentID, "agent-id", c.AgentID, "host ID of the agent at --agent-url (stable across restarts)")
	fs.DurationVar(&c.JWTTTL, "jwt-ttl", c.JWTTTL, "session token lifetime")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.DurationVar(&c.ReapEvery, "reap-every", c.ReapEvery, "how often expired sandboxes are paused or destroyed")
	fs.Int64Var(&c.MaxUploadMB, "max-upload-mb", c.MaxUploadMB, "largest file upload in MiB")
	fs.StringVar(&c.MetricsToken, "metrics-token", c.MetricsToken, "bearer token for /metrics; empty: only loopback clients may scrape")
	fs.DurationVar(&c.SignedURLMaxAge, "signed-url-max-age", c.SignedURLMaxAge, "refuse signed file URLs (E2B downloadUrl/uploadUrl) without an expiry or expiring further ahead than this, e.g. 1h; 0: an expiry is enforced only when the URL has one (the E2B SDK signs none unless useSignatureExpiration is set)")
}

// EnvName is the environment variable of a flag: --data-dir → HEARTH_DATA_DIR.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// LoadDotEnv loads path (usually ".env") into the environment without
// overriding what is already set. A missing file is fine.
func LoadDotEnv(path string) error {
	err := godotenv.Load(path)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return fmt.Errorf("load %s: %w", path, err)
}

// ApplyEnv sets every flag of fs that was not given on the command line from
// its environment variable, so "flag > env > default" holds.
func ApplyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		v, ok := lookup(EnvName(f.Name))
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
		}
	})
	return errors.Join(errs...)
}

// BindCommand makes cmd read .env and the environment for its flags before it
// runs. It chains any PreRunE already set.
func BindCommand(cmd *cobra.Command) {
	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if err := LoadDotEnv(".env"); err != nil {
			return err
		}
		if err := ApplyEnv(cmd.Flags(), nil); err != nil {
			return err
		}
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
	// Mention the variables in help so they are discoverable.
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if !strings.Contains(f.Usage, EnvPrefix) {
			f.Usage += " [$" + EnvName(f.Name) + "]"
		}
	})
}
