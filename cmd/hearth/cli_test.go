package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/cli/clitest"
)

// cliRoot is the root with the user-facing commands, built fresh for each
// invocation as main does once.
func cliRoot() *cobra.Command {
	root := &cobra.Command{Use: "hearth", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newLoginCmd(), newLogoutCmd(), newAPIKeyCmd(), newSandboxCmd(), newTemplateCmd(), newSnapshotCmd(), newVolumeCmd(), newBenchCmd())
	return root
}

type result struct {
	stdout, stderr string
	err            error
}

func hearth(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	root := cliRoot()
	var out, errb bytes.Buffer
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.Execute()
	return result{out.String(), errb.String(), err}
}

func (r result) ok(t *testing.T) result {
	t.Helper()
	if r.err != nil {
		t.Fatalf("error: %v\nstdout: %s\nstderr: %s", r.err, r.stdout, r.stderr)
	}
	return r
}

// TestCLI runs the cobra commands in-process against the real API (fake
// host at the VM boundary), the way a user would type them.
func TestCLI(t *testing.T) {
	srv := clitest.New(t)
	acct := srv.Signup(t)
	conf := filepath.Join(t.TempDir(), "cfg", "cli.json")
	t.Setenv(cli.EnvConfig, conf)
	t.Setenv(cli.EnvURL, "")
	t.Setenv(cli.EnvAPIKey, "")
	t.Setenv(cli.EnvToken, "")

	// Not logged in: one line and a hint.
	r := hearth(t, "", "sandbox", "ls")
	if r.err == nil || !strings.Contains(r.err.Error(), "no hearth URL configured\nhint: run `hearth login --url URL`") {
		t.Fatalf("not logged in: %v", r.err)
	}

	// Login with an API key: checked, stored 0600.
	r = hearth(t, "", "login", "--url", srv.URL, "--api-key", "e2b_"+strings.Repeat("0", 40))
	if r.err == nil || !strings.Contains(r.err.Error(), "HTTP 401") {
		t.Fatalf("bad key accepted: %v", r.err)
	}
	hearth(t, "", "login", "--url", srv.URL, "--api-key", acct.APIKey).ok(t)
	st, err := os.Stat(conf)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v %v", st, err)
	}
	if c, _ := cli.LoadConfig(conf); c.URL != srv.URL || c.APIKey != acct.APIKey || c.Token != "" {
		t.Fatalf("stored %+v", c)
	}

	// Create: -q prints only the ID; the request carries every flag.
	r = hearth(t, "", "sandbox", "create", "-t", "tiny", "-q", "--vcpus", "1", "--memory-mb", "300", "--disk-size-mb", "2048",
		"--timeout", "10m", "--env", "A=1", "--metadata", "who=ada", "--auto-pause").ok(t)
	id := strings.TrimSpace(r.stdout)
	if id == "" || strings.Contains(id, "\n") {
		t.Fatalf("create -q printed %q", r.stdout)
	}
	cr := srv.Host.Creates()
	if len(cr) != 1 || cr[0].SandboxID != id || cr[0].DiskSizeMB != 2048 || cr[0].MemoryMB != 300 || cr[0].Env["A"] != "1" {
		t.Fatalf("host got %+v", cr)
	}

	// ls: table and JSON.
	r = hearth(t, "", "sandbox", "ls").ok(t)
	if !strings.HasPrefix(r.stdout, "ID ") || !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "tiny") || !strings.Contains(r.stdout, "1 vCPU, 300.0 MiB, 2.0 GiB disk") {
		t.Errorf("ls table:\n%s", r.stdout)
	}
	var list []apiwire.Sandbox
	r = hearth(t, "", "sandbox", "ls", "-o", "json").ok(t)
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 || list[0].ID != id || !list[0].AutoPause || list[0].TimeoutS != 600 {
		t.Fatalf("ls json %q: %v", r.stdout, err)
	}

	// get: details and JSON.
	r = hearth(t, "", "sandbox", "get", id).ok(t)
	for _, want := range []string{"ID:", id, "Template:  tiny", "Metadata:  who=ada", "paused in"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("get lacks %q:\n%s", want, r.stdout)
		}
	}

	// exec: output streams and the exit code propagates; args are a list.
	r = hearth(t, "", "sandbox", "exec", id, "--", "echo", "a b", "$(rm -rf /)").ok(t)
	if r.stdout != "a b $(rm -rf /)\n" {
		t.Errorf("exec stdout %q", r.stdout)
	}
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"exit", "3"}, 3, ""},
		{[]string{"nosuchcmd", "x"}, 127, "nosuchcmd: command not found\n"},
	} {
		r = hearth(t, "", append([]string{"sandbox", "exec", id, "--"}, tc.args...)...)
		if cli.ExitCode(r.err) != tc.code || r.stderr != tc.stderr {
			t.Errorf("exec %v: code %d (%v), stderr %q", tc.args, cli.ExitCode(r.err), r.err, r.stderr)
		}
	}
	r = hearth(t, "", "sandbox", "exec", id, "-o", "json", "--", "exit", "4")
	var res apiwire.ExecResult
	if cli.ExitCode(r.err) != 4 || json.Unmarshal([]byte(r.stdout), &res) != nil || res.ExitCode != 4 {
		t.Errorf("exec json: %q, %v", r.stdout, r.err)
	}

	// cp both ways, including into a directory and to stdout.
	dir := t.TempDir()
	src := filepath.Join(dir, "data.bin")
	payload := bytes.Repeat([]byte{0, 1, 2, 255}, 300_000)
	if err := os.WriteFile(src, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	hearth(t, "", "sandbox", "cp", src, id+":/tmp/").ok(t)
	down := filepath.Join(dir, "down")
	if err := os.Mkdir(down, 0o755); err != nil {
		t.Fatal(err)
	}
	r = hearth(t, "", "sandbox", "cp", id+":/tmp/data.bin", down).ok(t)
	if got, err := os.ReadFile(filepath.Join(down, "data.bin")); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("round trip: %d bytes, %v", len(got), err)
	}
	if !strings.Contains(r.stdout, "Copied 1.1 MiB") {
		t.Errorf("cp summary %q", r.stdout)
	}
	hearth(t, "hello from stdin", "sandbox", "cp", "-", id+":/tmp/in.txt").ok(t)
	if r = hearth(t, "", "sandbox", "cp", "-q", id+":/tmp/in.txt", "-").ok(t); r.stdout != "hello from stdin" {
		t.Errorf("cp to stdout %q", r.stdout)
	}

	// Argument mistakes say what to do.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sandbox", "exec", id}, "usage: hearth sandbox exec ID -- CMD"},
		{[]string{"sandbox", "get"}, "usage: hearth sandbox get ID"},
		{[]string{"sandbox", "cp", "a", "b"}, "exactly one of SRC and DST"},
		{[]string{"sandbox", "cp", id + ":", "b"}, "missing the path after ID:"},
		{[]string{"sandbox", "create", "--env", "NOEQUALS"}, "write it as --env KEY=VALUE"},
		{[]string{"sandbox", "timeout", id, "soon"}, "give seconds (600) or a duration"},
		{[]string{"sandbox", "ls", "-o", "yaml"}, "use --output table or --output json"},
		{[]string{"sandbox", "get", "nosuch"}, "sandbox not found (HTTP 404)\nhint: list your sandboxes with `hearth sandbox ls`"},
		{[]string{"sandbox", "create", "-t", "nope"}, "hint: list templates with `hearth template ls`"},
		{[]string{"key", "ls"}, "needs a login session"},
		{[]string{"sandbox", "network", id, "--allow-out", "example.com"}, `allowOut: rule "example.com": domain names are not supported`},
	} {
		r = hearth(t, "", tc.args...)
		if r.err == nil || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, r.err, tc.want)
		}
	}

	// egress rules.
	if r = hearth(t, "", "sandbox", "network", id, "--no-internet", "--allow-out", "1.1.1.1").ok(t); !strings.Contains(r.stdout, "internet off; allow 1.1.1.1/32") {
		t.Errorf("network: %q", r.stdout)
	}
	if r = hearth(t, "", "sandbox", "get", id).ok(t); !strings.Contains(r.stdout, "internet off; allow 1.1.1.1/32") {
		t.Errorf("get after network: %q", r.stdout)
	}
	if r = hearth(t, "", "sandbox", "network", id).ok(t); !strings.Contains(r.stdout, "internet on") || strings.Contains(r.stdout, "allow") {
		t.Errorf("network reset: %q", r.stdout)
	}

	// timeout, pause, resume.
	r = hearth(t, "", "sandbox", "timeout", id, "900", "-o", "json").ok(t)
	var sb apiwire.Sandbox
	if json.Unmarshal([]byte(r.stdout), &sb) != nil || sb.TimeoutS != 900 {
		t.Errorf("timeout json %q", r.stdout)
	}
	if r = hearth(t, "", "sandbox", "pause", id).ok(t); !strings.Contains(r.stdout, "is paused") {
		t.Errorf("pause: %q", r.stdout)
	}
	if r = hearth(t, "", "sandbox", "resume", id).ok(t); !strings.Contains(r.stdout, "is running") {
		t.Errorf("resume: %q", r.stdout)
	}

	// templates and snapshots.
	r = hearth(t, "", "template", "ls").ok(t)
	if !strings.Contains(r.stdout, "base") || !strings.Contains(r.stdout, "platform") {
		t.Errorf("template ls:\n%s", r.stdout)
	}
	hearth(t, "", "snapshot", "create", id, "snap-a").ok(t)
	var snaps []apiwire.Template
	r = hearth(t, "", "snapshot", "ls", "-o", "json").ok(t)
	if json.Unmarshal([]byte(r.stdout), &snaps) != nil || len(snaps) != 1 || snaps[0].SourceSandboxID != id {
		t.Errorf("snapshot ls %q", r.stdout)
	}
	hearth(t, "", "snapshot", "rm", "snap-a").ok(t)
	if r = hearth(t, "", "snapshot", "ls", "-o", "json").ok(t); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("after rm: %q", r.stdout)
	}

	// volumes: create, mount, refused rm while mounted, ls, rm.
	srv.Host.VolumesDir = t.TempDir()
	if r = hearth(t, "", "volume", "create", "data").ok(t); !strings.Contains(r.stdout, "--volume data:/mnt/data") {
		t.Errorf("volume create: %q", r.stdout)
	}
	if r = hearth(t, "", "sandbox", "create", "--volume", "data"); r.err == nil || !strings.Contains(r.err.Error(), "VOLUME:/path") {
		t.Errorf("--volume without a path: %v", r.err)
	}
	vid := strings.TrimSpace(hearth(t, "", "sandbox", "create", "-q", "--volume", "data:/mnt/data").ok(t).stdout)
	if r = hearth(t, "", "volume", "rm", "data"); r.err == nil || !strings.Contains(r.err.Error(), "mounted") {
		t.Errorf("volume rm while mounted: %v", r.err)
	}
	if r = hearth(t, "", "volume", "ls").ok(t); !strings.Contains(r.stdout, "data") {
		t.Errorf("volume ls:\n%s", r.stdout)
	}
	hearth(t, "", "sandbox", "rm", vid).ok(t)
	hearth(t, "", "volume", "rm", "data").ok(t)
	if r = hearth(t, "", "volume", "ls", "-o", "json").ok(t); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("volumes after rm: %q", r.stdout)
	}

	// rm, then the sandbox is gone on the host.
	hearth(t, "", "sandbox", "rm", id).ok(t)
	if srv.Host.State(id) != "" {
		t.Errorf("host still has %s", id)
	}

	// Email/password login (password from stdin), then API keys.
	hearth(t, acct.Password+"\n", "login", "--url", srv.URL, "--email", acct.Email, "--password-stdin").ok(t)
	if c, _ := cli.LoadConfig(conf); c.Token == "" || c.APIKey != acct.APIKey || c.Email != acct.Email {
		t.Fatalf("after password login: %+v", c)
	}
	r = hearth(t, "", "key", "create", "ci", "-o", "json").ok(t)
	var k apiwire.APIKey
	if json.Unmarshal([]byte(r.stdout), &k) != nil || !strings.HasPrefix(k.Key, "e2b_") {
		t.Fatalf("key create %q", r.stdout)
	}
	if r = hearth(t, "", "key", "ls").ok(t); !strings.Contains(r.stdout, "ci") || strings.Contains(r.stdout, k.Key) {
		t.Errorf("key ls:\n%s", r.stdout)
	}
	hearth(t, "", "key", "rm", k.ID).ok(t)
	if r = hearth(t, "", "key", "ls", "-o", "json").ok(t); strings.Contains(r.stdout, k.ID) {
		t.Errorf("key still listed: %s", r.stdout)
	}
	// Wrong password: the API's message and the login hint.
	r = hearth(t, "wrongpassword\n", "login", "--url", srv.URL, "--email", acct.Email, "--password-stdin")
	if r.err == nil || !strings.Contains(r.err.Error(), "HTTP 401") {
		t.Errorf("wrong password: %v", r.err)
	}

	// HEARTH_API_KEY overrides the file.
	t.Setenv(cli.EnvAPIKey, "e2b_"+strings.Repeat("1", 40))
	if r = hearth(t, "", "sandbox", "ls"); r.err == nil || !strings.Contains(r.err.Error(), "HTTP 401") {
		t.Errorf("env key not used: %v", r.err)
	}
	t.Setenv(cli.EnvAPIKey, "")

	hearth(t, "", "logout").ok(t)
	if _, err := os.Stat(conf); !os.IsNotExist(err) {
		t.Errorf("logout left %s: %v", conf, err)
	}
}
