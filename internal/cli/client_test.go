package cli_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/cli/clitest"
)

func ptr[T any](v T) *T { return &v }

// TestClientAgainstAPI drives every client call through the real handler,
// service and store and checks what reached the host and what came back.
func TestClientAgainstAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := clitest.New(t)
	acct := srv.Signup(t)
	c := cli.NewClient(srv.URL+"/", acct.APIKey, "") // trailing slash tolerated

	if err := c.Healthz(ctx); err != nil {
		t.Fatalf("healthz: %v", err)
	}
	ts, err := c.ListTemplates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := cli.TemplateNames(ts)
	if len(ts) != 2 || !slices.Contains(mapValues(names), "tiny") || !slices.Contains(mapValues(names), "base") {
		t.Fatalf("templates = %+v", ts)
	}

	sb, err := c.CreateSandbox(ctx, apiwire.CreateSandbox{
		Template: "tiny", VCPUs: ptr(1), MemoryMB: ptr(200), DiskSizeMB: ptr(4096), TimeoutS: ptr(600),
		Env: map[string]string{"A": "1"}, Metadata: map[string]string{"who": "ada"}, AutoPause: true,
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if sb.ID == "" || sb.Status != "running" || sb.MemoryMB != 200 || sb.DiskSizeMB != 4096 || sb.TimeoutS != 600 ||
		!sb.AutoPause || sb.Metadata["who"] != "ada" || !slices.Equal(sb.EnvKeys, []string{"A"}) || sb.EnvdAccessToken == "" || names[sb.TemplateID] != "tiny" {
		t.Fatalf("create response %+v", sb)
	}
	creates := srv.Host.Creates()
	if len(creates) != 1 || creates[0].DiskSizeMB != 4096 || creates[0].Env["A"] != "1" {
		t.Fatalf("host got %+v", creates)
	}
	other, err := c.CreateSandbox(ctx, apiwire.CreateSandbox{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		f    cli.SandboxFilter
		want []string
	}{
		{"all", cli.SandboxFilter{}, []string{sb.ID, other.ID}},
		{"metadata", cli.SandboxFilter{Metadata: map[string]string{"who": "ada"}}, []string{sb.ID}},
		{"metadata miss", cli.SandboxFilter{Metadata: map[string]string{"who": "bob"}}, nil},
		{"status", cli.SandboxFilter{Statuses: []string{"paused"}}, nil},
		{"limit", cli.SandboxFilter{Limit: 1}, nil}, // only the count is checked
	} {
		got, err := c.ListSandboxes(ctx, tc.f)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.name == "limit" {
			if len(got) != 1 {
				t.Errorf("limit 1 gave %d", len(got))
			}
			continue
		}
		ids := make([]string, len(got))
		for i, s := range got {
			ids[i] = s.ID
		}
		slices.Sort(ids)
		want := slices.Clone(tc.want)
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			t.Errorf("%s: got %v, want %v", tc.name, ids, want)
		}
	}

	got, err := c.GetSandbox(ctx, sb.ID)
	if err != nil || got.ID != sb.ID || got.EnvdAccessToken != "" {
		t.Fatalf("get = %+v, %v", got, err)
	}

	for _, tc := range []struct {
		req          apiwire.ExecRequest
		stdout, errs string
		code         int
	}{
		{apiwire.ExecRequest{Cmd: "echo", Args: []string{"a b", "$HOME", ";", "c"}}, "a b $HOME ; c\n", "", 0},
		{apiwire.ExecRequest{Cmd: "exit", Args: []string{"3"}}, "", "", 3},
		{apiwire.ExecRequest{Cmd: "nope"}, "", "nope: command not found\n", 127},
	} {
		res, err := c.Exec(ctx, sb.ID, tc.req)
		if err != nil {
			t.Fatalf("exec %v: %v", tc.req, err)
		}
		if res.Stdout != tc.stdout || res.Stderr != tc.errs || res.ExitCode != tc.code {
			t.Errorf("exec %v = %+v", tc.req, res)
		}
	}

	data := bytes.Repeat([]byte("hearth\x00\xff"), 100_000)
	if err := c.WriteFile(ctx, sb.ID, "/tmp/a b.bin", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.WriteFile(ctx, sb.ID, "/tmp/chunked", strings.NewReader("streamed"), -1); err != nil {
		t.Fatalf("write chunked: %v", err)
	}
	if err := c.WriteFile(ctx, sb.ID, "/tmp/empty", strings.NewReader(""), 0); err != nil {
		t.Fatalf("write empty: %v", err)
	}
	for path, want := range map[string][]byte{"/tmp/a b.bin": data, "/tmp/chunked": []byte("streamed"), "/tmp/empty": {}} {
		rc, size, err := c.ReadFile(ctx, sb.ID, path)
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(b, want) || (size >= 0 && size != int64(len(want))) {
			t.Errorf("read %s: %d bytes (size %d), err %v", path, len(b), size, err)
		}
	}

	if s, err := c.SetTimeout(ctx, sb.ID, 1200); err != nil || s.TimeoutS != 1200 {
		t.Errorf("timeout = %+v, %v", s, err)
	}
	if s, err := c.PauseSandbox(ctx, sb.ID); err != nil || s.Status != "paused" {
		t.Errorf("pause = %+v, %v", s, err)
	}
	if s, err := c.ResumeSandbox(ctx, sb.ID); err != nil || s.Status != "running" {
		t.Errorf("resume = %+v, %v", s, err)
	}

	snap, err := c.CreateSnapshot(ctx, sb.ID, "snap-1")
	if err != nil || snap.Name != "snap-1" || snap.Kind != "snapshot" || snap.SourceSandboxID != sb.ID {
		t.Fatalf("snapshot = %+v, %v", snap, err)
	}
	snaps, err := c.ListSnapshots(ctx)
	if err != nil || len(snaps) != 1 || snaps[0].Name != "snap-1" {
		t.Fatalf("snapshots = %+v, %v", snaps, err)
	}
	if err := c.DeleteSnapshot(ctx, "snap-1"); err != nil {
		t.Fatalf("delete snapshot: %v", err)
	}

	for _, id := range []string{sb.ID, other.ID} {
		if err := c.DeleteSandbox(ctx, id); err != nil {
			t.Fatalf("delete: %v", err)
		}
	}
	if _, err := c.GetSandbox(ctx, sb.ID); !isStatus(err, 404) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestUserCalls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := clitest.New(t)
	acct := srv.Signup(t)
	c := cli.NewClient(srv.URL, "", "")
	tok, err := c.Login(ctx, acct.Email, acct.Password)
	if err != nil || tok == "" {
		t.Fatalf("login: %q, %v", tok, err)
	}
	c.Token = tok
	me, err := c.Me(ctx)
	if err != nil || me.User.Email != acct.Email || len(me.Teams) != 1 || me.Teams[0].Role != "owner" {
		t.Fatalf("me = %+v, %v", me, err)
	}
	k, err := c.CreateAPIKey(ctx, "ci")
	if err != nil || !strings.HasPrefix(k.Key, "e2b_") || len(k.Key) != 44 {
		t.Fatalf("create key = %+v, %v", k, err)
	}
	ks, err := c.ListAPIKeys(ctx)
	if err != nil || len(ks) != 2 {
		t.Fatalf("keys = %+v, %v", ks, err)
	}
	for _, kk := range ks {
		if kk.Key != "" {
			t.Errorf("list shows a secret: %+v", kk)
		}
	}
	// A session token works for sandbox calls too.
	if _, err := c.ListSandboxes(ctx, cli.SandboxFilter{}); err != nil {
		t.Errorf("list with a token: %v", err)
	}
	// The new key authenticates.
	if _, err := cli.NewClient(srv.URL, k.Key, "").ListTemplates(ctx); err != nil {
		t.Errorf("new key: %v", err)
	}
	if err := c.DeleteAPIKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.NewClient(srv.URL, k.Key, "").ListTemplates(ctx); !isStatus(err, 401) {
		t.Errorf("deleted key still works: %v", err)
	}
}

// TestErrorRendering checks that each failure becomes one line plus the
// hint that tells the user what to do.
func TestErrorRendering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := clitest.New(t)
	acct := srv.Signup(t)
	good := cli.NewClient(srv.URL, acct.APIKey, "")
	sb, err := good.CreateSandbox(ctx, apiwire.CreateSandbox{Template: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	// A server that is not hearth (plain-text errors).
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>"+strings.Repeat(" ", 300), http.StatusBadGateway)
	}))
	t.Cleanup(plain.Close)
	// An address nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name   string
		call   func() error
		status int    // 0: not an API error
		line   string // in the first line
		hint   string // in the hint line ("" : no hint)
		is     error
	}{
		{"wrong key", func() error {
			_, err := cli.NewClient(srv.URL, "e2b_"+strings.Repeat("0", 40), "").ListSandboxes(ctx, cli.SandboxFilter{})
			return err
		}, 401, "(HTTP 401)", "hearth login", nil},
		{"expired token", func() error { _, err := cli.NewClient(srv.URL, "", "garbage").Me(ctx); return err }, 401, "HTTP 401", "hearth login", nil},
		{"no credentials", func() error { _, err := cli.NewClient(srv.URL, "", "").ListTemplates(ctx); return err }, 0, "not logged in", "hearth login", cli.ErrNoCredentials},
		{"key for a user route", func() error { _, err := good.ListAPIKeys(ctx); return err }, 0, "login session", "email and password", cli.ErrNoCredentials},
		{"no URL", func() error { _, err := cli.NewClient("", "k", "").ListTemplates(ctx); return err }, 0, "no hearth URL", "HEARTH_URL", nil},
		{"missing sandbox", func() error { _, err := good.GetSandbox(ctx, "nosuchsandbox"); return err }, 404, "not found", "hearth sandbox ls", nil},
		{"missing template", func() error { _, err := good.CreateSandbox(ctx, apiwire.CreateSandbox{Template: "nope"}); return err }, 404, "template", "hearth template ls", nil},
		{"bad vcpus", func() error {
			_, err := good.CreateSandbox(ctx, apiwire.CreateSandbox{Template: "tiny", VCPUs: ptr(99)})
			return err
		}, 400, "vcpus", "--help", nil},
		{"missing snapshot", func() error { return good.DeleteSnapshot(ctx, "nope") }, 404, "HTTP 404", "hearth snapshot ls", nil},
		{"missing key", func() error { return cli.NewClient(srv.URL, "", acct.Token).DeleteAPIKey(ctx, "nope") }, 404, "HTTP 404", "hearth key ls", nil},
		{"missing file", func() error { _, _, err := good.ReadFile(ctx, sb.ID, "/nope"); return err }, 404, "HTTP 404", "", nil},
		{"bad timeout", func() error { _, err := good.SetTimeout(ctx, sb.ID, 0); return err }, 400, "timeout", "", nil},
		{"not hearth", func() error { _, err := cli.NewClient(plain.URL, "k", "").ListTemplates(ctx); return err }, 502, "Bad Gateway (HTTP 502)", "retry later", nil},
		{"unreachable", func() error { _, err := cli.NewClient(dead, "k", "").ListTemplates(ctx); return err }, 0, "cannot reach hearth at " + dead, "is the server running", nil},
		{"exit code", func() error { return &cli.ExitError{Code: 3} }, 0, "status 3", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil {
				t.Fatal("no error")
			}
			var ae *cli.APIError
			if got := errors.As(err, &ae); got != (tc.status != 0) || (got && ae.Status != tc.status) {
				t.Fatalf("error %v (%T), want status %d", err, err, tc.status)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("%v is not %v", err, tc.is)
			}
			lines := strings.Split(cli.Explain(err).Error(), "\n")
			if !strings.Contains(lines[0], tc.line) {
				t.Errorf("first line %q lacks %q", lines[0], tc.line)
			}
			switch {
			case tc.hint == "" && len(lines) > 1 && tc.status == 0:
				t.Errorf("unexpected hint: %q", lines[1:])
			case tc.hint != "" && (len(lines) != 2 || !strings.HasPrefix(lines[1], "hint: ") || !strings.Contains(lines[1], tc.hint)):
				t.Errorf("lines %q: want one hint line with %q", lines, tc.hint)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("x"), 1},
		{&cli.ExitError{Code: 42}, 42},
		{cli.Explain(&cli.ExitError{Code: 7}), 7},
		{cli.Explain(context.Canceled), 130},
		{&cli.APIError{Status: 500}, 1},
	} {
		if got := cli.ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func isStatus(err error, status int) bool {
	var ae *cli.APIError
	return errors.As(err, &ae) && ae.Status == status
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
