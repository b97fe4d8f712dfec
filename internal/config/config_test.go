package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestEnsureSecret(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	a, err := EnsureSecret(dir, "jwt.key", 32)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 32 {
		t.Fatalf("len = %d", len(a))
	}
	fi, err := os.Stat(filepath.Join(dir, "jwt.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("perm = %#o, want 0600", fi.Mode().Perm())
	}
	b, err := EnsureSecret(dir, "jwt.key", 32)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("secret changed on second start")
	}
	other, err := EnsureSecret(dir, "seal.key", 32)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, other) {
		t.Fatal("two secrets are equal")
	}
}

func TestEnsureSecretRefusesBadFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, content string
		perm          os.FileMode
		want          string
	}{
		{"world readable", strings.Repeat("ab", 32), 0o644, "permissions"},
		{"group writable", strings.Repeat("ab", 32), 0o620, "permissions"},
		{"not hex", strings.Repeat("zz", 32), 0o600, "corrupt"},
		{"too short", strings.Repeat("ab", 8), 0o600, "corrupt"},
		{"empty", "", 0o600, "corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := filepath.Join(dir, "jwt.key")
			if err := os.WriteFile(p, []byte(tc.content), tc.perm); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.perm); err != nil { // umask may have narrowed it
				t.Fatal(err)
			}
			_, err := EnsureSecret(dir, "jwt.key", 32)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
			got, _ := os.ReadFile(p)
			if string(got) != tc.content {
				t.Fatal("bad secret file was overwritten")
			}
		})
	}
}

func TestApplyEnvPrecedence(t *testing.T) {
	t.Parallel()
	c := Default()
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	AddServerFlags(fs, &c)
	if err := fs.Parse([]string{"--listen", "0.0.0.0:9"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"HEARTH_LISTEN":       "1.2.3.4:5", // flag given: ignored
		"HEARTH_DATA_DIR":     "/srv/hearth",
		"HEARTH_DATABASE_URL": "postgres://x/y",
		"HEARTH_JWT_TTL":      "2h",
	}
	if err := ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "0.0.0.0:9" || c.DataDir != "/srv/hearth" || c.DatabaseURL != "postgres://x/y" || c.JWTTTL.String() != "2h0m0s" {
		t.Fatalf("config = %+v", c)
	}
	c2 := Default()
	fs2 := pflag.NewFlagSet("y", pflag.ContinueOnError)
	AddServerFlags(fs2, &c2)
	bad := func(k string) (string, bool) {
		if k == "HEARTH_JWT_TTL" {
			return "soon", true
		}
		return "", false
	}
	if err := ApplyEnv(fs2, bad); err == nil || !strings.Contains(err.Error(), "HEARTH_JWT_TTL") {
		t.Fatalf("bad env value: err = %v", err)
	}
}

func TestEveryFlagHasEnv(t *testing.T) {
	t.Parallel()
	c := Default()
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	AddServerFlags(fs, &c)
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		n++
		if got := EnvName(f.Name); !strings.HasPrefix(got, "HEARTH_") || strings.Contains(got, "-") {
			t.Errorf("flag %s: env %s", f.Name, got)
		}
	})
	if n < 8 {
		t.Fatalf("only %d flags", n)
	}
}

func TestLoadDotEnvMissingIsFine(t *testing.T) {
	t.Parallel()
	if err := LoadDotEnv(filepath.Join(t.TempDir(), "nope.env")); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultDataDirIsAbsoluteOrLocal(t *testing.T) {
	t.Parallel()
	if d := DefaultDataDir(); !strings.HasSuffix(d, "hearth") && d != "hearth-data" {
		t.Fatalf("DefaultDataDir = %q", d)
	}
}

func TestPublicURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		url        string
		secure, ok bool
	}{
		{"", false, true},
		{"http://127.0.0.1:3000", false, true},
		{"https://hearth.example.com", true, true},
		{"HTTPS://hearth.example.com/", true, true},
		{"hearth.example.com", false, false},
		{"ftp://x", false, false},
	} {
		cfg := Config{PublicURL: c.url}
		if got := cfg.SecureCookies(); got != c.secure {
			t.Errorf("%q: SecureCookies = %v", c.url, got)
		}
		if err := cfg.CheckPublicURL(); (err == nil) != c.ok {
			t.Errorf("%q: CheckPublicURL = %v", c.url, err)
		}
	}
}

// The agent's token file: made by `hearth agent`, read by `hearth server
// --agent-token-file`, refused when others may read it.
func TestAgentTokenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	made, err := EnsureSecret(dir, AgentTokenFile, AgentTokenBytes)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, AgentTokenFile)
	read, err := ReadSecret(path, AgentTokenBytes)
	if err != nil || !bytes.Equal(read, made) {
		t.Fatalf("ReadSecret = %x, %v; want %x", read, err, made)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSecret(path, AgentTokenBytes); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable token accepted: %v", err)
	}
}
