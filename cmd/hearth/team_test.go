package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/cli/clitest"
)

func teamCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "hearth", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newTeamCmd())
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// TestTeamCLI: `hearth team` against the real API with a login session.
func TestTeamCLI(t *testing.T) {
	srv := clitest.New(t)
	owner := srv.Signup(t)
	other := srv.Signup(t)
	conf := filepath.Join(t.TempDir(), "cli.json")
	if err := cli.SaveConfig(conf, cli.Config{URL: srv.URL, Token: owner.Token}); err != nil {
		t.Fatal(err)
	}
	t.Setenv(cli.EnvConfig, conf)
	t.Setenv(cli.EnvURL, "")
	t.Setenv(cli.EnvAPIKey, "")
	t.Setenv(cli.EnvToken, "")

	run := func(args ...string) string {
		t.Helper()
		out, err := teamCLI(t, args...)
		if err != nil {
			t.Fatalf("hearth %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	if out := run("team", "members"); !strings.Contains(out, owner.Email) || !strings.Contains(out, "owner") || strings.Contains(out, other.Email) {
		t.Fatalf("members:\n%s", out)
	}
	if out := run("team", "add", other.Email, "--role", "admin"); !strings.Contains(out, "Added "+other.Email) || !strings.Contains(out, "as admin") {
		t.Fatalf("add: %s", out)
	}
	if _, err := teamCLI(t, "team", "add", other.Email); err == nil || !strings.Contains(err.Error(), "already a member") {
		t.Fatalf("add twice: %v", err)
	}
	if _, err := teamCLI(t, "team", "add", "nobody@example.com"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("add unknown: %v", err)
	}
	if out := run("team", "role", other.Email, "member"); !strings.Contains(out, "as member") {
		t.Fatalf("role: %s", out)
	}
	var ms []apiwire.TeamMember
	if err := json.Unmarshal([]byte(run("team", "members", "-o", "json")), &ms); err != nil || len(ms) != 2 || ms[1].Email != other.Email || ms[1].Role != "member" {
		t.Fatalf("members json: %+v %v", ms, err)
	}
	if _, err := teamCLI(t, "team", "rm", owner.Email); err == nil || !strings.Contains(err.Error(), "last owner") {
		t.Fatalf("remove the last owner: %v", err)
	}
	run("team", "rm", other.Email)
	if out := run("team", "members"); strings.Contains(out, other.Email) {
		t.Fatalf("after rm:\n%s", out)
	}
	if _, err := teamCLI(t, "team", "members", "--team", "not-mine"); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("unknown --team: %v", err)
	}
}
