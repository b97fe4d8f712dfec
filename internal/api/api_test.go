package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
	"golang.org/x/time/rate"
)

func TestAuthFlow(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		r := e.do("POST", "/v1/auth/signup", map[string]string{"email": "Ada@Example.com", "password": "password123"}, nil)
		e.want(r, http.StatusCreated, "signup")
		var s struct {
			Token string
			User  struct{ ID, Email string }
			Team  struct{ ID, Name string }
		}
		r.json(t, &s)
		if s.Token == "" || s.User.ID == "" || s.Team.ID == "" || s.User.Email != "ada@example.com" || s.Team.Name == "" {
			t.Fatalf("signup response %s", r.body)
		}

		r = e.do("GET", "/v1/me", nil, bearer(s.Token))
		e.want(r, http.StatusOK, "me")
		var me struct {
			User  struct{ ID, Email string }
			Teams []struct{ ID, Name, Role string }
		}
		r.json(t, &me)
		if me.User.ID != s.User.ID || len(me.Teams) != 1 || me.Teams[0].ID != s.Team.ID || me.Teams[0].Role != "owner" {
			t.Fatalf("me = %s", r.body)
		}

		r = e.do("POST", "/v1/auth/login", map[string]string{"email": "ada@example.com", "password": "password123"}, nil)
		e.want(r, http.StatusOK, "login")
		var l struct{ Token string }
		r.json(t, &l)
		e.want(e.do("GET", "/v1/me", nil, bearer(l.Token)), http.StatusOK, "me with login token")

		wrongPw := e.do("POST", "/v1/auth/login", map[string]string{"email": "ada@example.com", "password": "password124"}, nil)
		unknown := e.do("POST", "/v1/auth/login", map[string]string{"email": "bob@example.com", "password": "password123"}, nil)
		e.want(wrongPw, http.StatusUnauthorized, "wrong password")
		e.want(unknown, http.StatusUnauthorized, "unknown email")
		if !bytes.Equal(wrongPw.body, unknown.body) {
			t.Errorf("wrong password %s and unknown email %s answer differently", wrongPw.body, unknown.body)
		}

		for name, h := range map[string]hdr{
			"none":     nil,
			"garbage":  bearer("garbage"),
			"basic":    {"Authorization", "Basic Zm9vOmJhcg=="},
			"api key":  apiKey("e2b_" + strings.Repeat("0", 40)),
			"tampered": bearer(l.Token[:len(l.Token)-3] + "abc"),
		} {
			e.want(e.do("GET", "/v1/me", nil, h), http.StatusUnauthorized, "me with "+name)
		}
	})
}

func TestAPIKeys(t *testing.T) {
	for _, eng := range storetest.Engines() {
		t.Run(string(eng), func(t *testing.T) {
			t.Parallel()
			opts := storetest.Options(t, eng)
			db := storetest.OpenWith(t, opts)
			e := newEnv(t, db, envOpts{})
			a := e.signup("keys@example.com")
			if !regexp.MustCompile(`^e2b_[0-9a-f]{40}$`).MatchString(a.key) {
				t.Fatalf("key %q is not e2b_ + 40 hex", a.key)
			}

			r := e.do("GET", "/v1/api-keys", nil, bearer(a.token))
			e.want(r, http.StatusOK, "list keys")
			if bytes.Contains(r.body, []byte(a.key)) || bytes.Contains(r.body, []byte(`"key"`)) {
				t.Fatalf("listing shows the secret: %s", r.body)
			}
			var ks []struct{ ID, Name, Prefix string }
			r.json(t, &ks)
			if len(ks) != 1 || ks[0].ID != a.keyID || ks[0].Name != "ci" || !strings.HasPrefix(a.key, ks[0].Prefix) {
				t.Fatalf("keys = %s", r.body)
			}

			// The database holds the SHA-256, never the key.
			raw := rawDB(t, opts)
			var hash, prefix string
			if err := raw.QueryRow(`SELECT key_hash, prefix FROM team_api_keys WHERE id = `+placeholder(eng), a.keyID).Scan(&hash, &prefix); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(a.key))
			if hash != hex.EncodeToString(sum[:]) {
				t.Errorf("stored hash %q is not the SHA-256 of the key", hash)
			}
			if len(prefix) >= len(a.key)/2 {
				t.Errorf("stored prefix %q reveals too much", prefix)
			}
			assertNoColumnContains(t, raw, "team_api_keys", a.key)

			// The key authenticates, for sandbox routes only.
			e.want(e.do("GET", "/v1/sandboxes", nil, apiKey(a.key)), http.StatusOK, "sandboxes by key")
			e.want(e.do("GET", "/v1/api-keys", nil, apiKey(a.key)), http.StatusUnauthorized, "key management by key")
			e.want(e.do("GET", "/v1/sandboxes", nil, apiKey(otherKey(a.key))), http.StatusUnauthorized, "wrong key")

			e.want(e.do("DELETE", "/v1/api-keys/"+a.keyID, nil, bearer(a.token)), http.StatusNoContent, "delete key")
			e.want(e.do("GET", "/v1/sandboxes", nil, apiKey(a.key)), http.StatusUnauthorized, "deleted key")
			e.want(e.do("DELETE", "/v1/api-keys/"+a.keyID, nil, bearer(a.token)), http.StatusNotFound, "delete twice")
			r = e.do("GET", "/v1/api-keys", nil, bearer(a.token))
			if strings.TrimSpace(string(r.body)) != "[]" {
				t.Fatalf("keys after delete = %s", r.body)
			}
		})
	}
}

func placeholder(eng storetest.Engine) string {
	if eng == storetest.Postgres {
		return "$1"
	}
	return "?"
}

// rawDB opens the test database directly, to inspect rows as stored.
func rawDB(t *testing.T, opts store.Options) *sql.DB {
	t.Helper()
	driver, dsn := "sqlite", opts.DSN
	if opts.Driver == store.DriverPostgres {
		driver = "pgx"
	}
	raw, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

func assertNoColumnContains(t *testing.T, raw *sql.DB, table, secret string) {
	t.Helper()
	rows, err := raw.Query(`SELECT * FROM ` + table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	n := 0
	for rows.Next() {
		n++
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			if strings.Contains(fmt.Sprint(v), secret) || strings.Contains(fmt.Sprintf("%s", v), secret) {
				t.Errorf("%s.%s holds the secret", table, cols[i])
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s is empty: the check proves nothing", table)
	}
}

func TestBadInputs(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{maxJSON: 4096})
		a := e.signup("bad@example.com")
		sb := e.createSandbox(a, nil)
		type tc struct {
			name         string
			method, path string
			body         any
			h            hdr
			status       int
			field        string // must appear in the message
		}
		cases := []tc{
			{"weak password", "POST", "/v1/auth/signup", map[string]string{"email": "x@example.com", "password": "short"}, nil, 400, "password"},
			{"malformed email", "POST", "/v1/auth/signup", map[string]string{"email": "not-an-email", "password": "password123"}, nil, 400, "email"},
			{"email with name", "POST", "/v1/auth/signup", map[string]string{"email": "Bob <bob@example.com>", "password": "password123"}, nil, 400, "email"},
			{"empty email", "POST", "/v1/auth/signup", map[string]string{"email": "", "password": "password123"}, nil, 400, "email"},
			{"duplicate email", "POST", "/v1/auth/signup", map[string]string{"email": "BAD@example.com", "password": "password123"}, nil, 409, "exists"},
			{"malformed JSON", "POST", "/v1/auth/signup", `{"email": "x@example.com",`, nil, 400, "JSON"},
			{"not an object", "POST", "/v1/auth/login", `[1,2]`, nil, 400, "JSON"},
			{"empty body", "POST", "/v1/auth/login", "", nil, 400, "JSON"},
			{"trailing data", "POST", "/v1/auth/login", `{"email":"a@b.c","password":"password123"} {}`, nil, 400, "JSON"},
			{"unknown field", "POST", "/v1/sandboxes", map[string]any{"template": "base", "memory": 512}, apiKey(a.key), 400, "memory"},
			{"oversized body", "POST", "/v1/auth/signup", `{"email":"` + strings.Repeat("a", 5000) + `@x.com","password":"password123"}`, nil, 413, "larger"},
			{"api key name", "POST", "/v1/api-keys", map[string]string{"name": "Bad Name"}, bearer(a.token), 400, "name"},
			{"api key name empty", "POST", "/v1/api-keys", map[string]string{"name": ""}, bearer(a.token), 400, "name"},
			{"vcpus 0", "POST", "/v1/sandboxes", map[string]any{"template": "base", "vcpus": 0}, apiKey(a.key), 400, "vcpus"},
			{"vcpus 17", "POST", "/v1/sandboxes", map[string]any{"template": "base", "vcpus": 17}, apiKey(a.key), 400, "vcpus"},
			{"vcpus string", "POST", "/v1/sandboxes", map[string]any{"template": "base", "vcpus": "2"}, apiKey(a.key), 400, "vcpus"},
			{"memory 127", "POST", "/v1/sandboxes", map[string]any{"template": "base", "memory_mb": 127}, apiKey(a.key), 400, "memory_mb"},
			{"memory 65537", "POST", "/v1/sandboxes", map[string]any{"template": "base", "memory_mb": 65537}, apiKey(a.key), 400, "memory_mb"},
			{"disk 1023", "POST", "/v1/sandboxes", map[string]any{"template": "base", "disk_size_mb": 1023}, apiKey(a.key), 400, "disk_size_mb"},
			{"disk 1048577", "POST", "/v1/sandboxes", map[string]any{"template": "base", "disk_size_mb": 1048577}, apiKey(a.key), 400, "disk_size_mb"},
			{"timeout 0", "POST", "/v1/sandboxes", map[string]any{"template": "base", "timeout_s": 0}, apiKey(a.key), 400, "timeout_s"},
			{"no template", "POST", "/v1/sandboxes", map[string]any{}, apiKey(a.key), 400, "template"},
			{"unknown template", "POST", "/v1/sandboxes", map[string]any{"template": "nope"}, apiKey(a.key), 404, "template"},
			{"exec without cmd", "POST", "/v1/sandboxes/" + sb.ID + "/exec", map[string]any{}, apiKey(a.key), 400, "cmd"},
			{"timeout missing", "POST", "/v1/sandboxes/" + sb.ID + "/timeout", map[string]any{}, apiKey(a.key), 400, "timeout_s"},
			{"timeout too long", "POST", "/v1/sandboxes/" + sb.ID + "/timeout", map[string]any{"timeout_s": 86401}, apiKey(a.key), 400, "timeout_s"},
			{"egress domain", "PUT", "/v1/sandboxes/" + sb.ID + "/network", map[string]any{"allow_out": []string{"example.com"}}, apiKey(a.key), 400, `allowOut: rule \"example.com\"`},
			{"egress malformed on create", "POST", "/v1/sandboxes", map[string]any{"template": "base", "deny_out": []string{"300.1.1.1"}}, apiKey(a.key), 400, `denyOut: rule \"300.1.1.1\"`},
			{"file without path", "GET", "/v1/sandboxes/" + sb.ID + "/files", nil, apiKey(a.key), 400, "path"},
			{"snapshot name upper", "POST", "/v1/snapshots", map[string]any{"sandbox_id": sb.ID, "name": "Snap"}, apiKey(a.key), 400, "name"},
			{"snapshot name too long", "POST", "/v1/snapshots", map[string]any{"sandbox_id": sb.ID, "name": strings.Repeat("a", 64)}, apiKey(a.key), 400, "name"},
			{"snapshot name leading dash", "POST", "/v1/snapshots", map[string]any{"sandbox_id": sb.ID, "name": "-x"}, apiKey(a.key), 400, "name"},
			{"snapshot without sandbox", "POST", "/v1/snapshots", map[string]any{"name": "ok"}, apiKey(a.key), 400, "sandbox_id"},
			{"list limit", "GET", "/v1/sandboxes?limit=0", nil, apiKey(a.key), 400, "limit"},
			{"unknown route", "GET", "/v1/nope", nil, nil, 404, "not found"},
			{"wrong method", "PATCH", "/v1/sandboxes", nil, apiKey(a.key), 405, "method"},
		}
		for _, c := range cases {
			r := e.do(c.method, c.path, c.body, c.h)
			if r.status != c.status || !strings.Contains(string(r.body), c.field) {
				t.Errorf("%s: %d %s, want %d naming %q", c.name, r.status, r.body, c.status, c.field)
			}
		}
		// Bounds that are exactly at the limits pass.
		for _, req := range []map[string]any{
			{"vcpus": 1, "memory_mb": 128, "disk_size_mb": 1024},
			{"vcpus": 16, "memory_mb": 65536, "disk_size_mb": 1048576},
		} {
			e.createSandbox(a, req)
		}
		// Nothing of the refused creates reached the host.
		if n := len(e.host.Creates()); n != 3 {
			t.Errorf("host saw %d creates, want 3", n)
		}
	})
}

func TestLoginRateLimit(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{authRate: rate.Limit(1e-6), authBurst: 3})
		creds := map[string]string{"email": "rl@example.com", "password": "password123"}
		for i := range 3 {
			if r := e.do("POST", "/v1/auth/login", creds, nil); r.status != http.StatusUnauthorized {
				t.Fatalf("attempt %d: %d", i, r.status)
			}
		}
		r := e.do("POST", "/v1/auth/login", creds, nil)
		e.want(r, http.StatusTooManyRequests, "4th login")
		if r.header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		// Signup has its own bucket, and is limited too.
		for range 3 {
			e.do("POST", "/v1/auth/signup", map[string]string{"email": "x", "password": "p"}, nil)
		}
		e.want(e.do("POST", "/v1/auth/signup", creds, nil), http.StatusTooManyRequests, "4th signup")
		// Other routes are not limited.
		e.want(e.do("GET", "/healthz", nil, nil), http.StatusOK, "healthz")
	})
}

func TestSandboxLifecycle(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		a := e.signup("life@example.com")
		k := apiKey(a.key)
		sb := e.createSandbox(a, map[string]any{
			"disk_size_mb": 4096, "env": map[string]string{"B": "2", "A": "1"},
			"metadata": map[string]string{"owner": "ci"}, "timeout_s": 60,
		})
		if !regexp.MustCompile(`^[a-z0-9]{20}$`).MatchString(sb.ID) {
			t.Errorf("sandbox id %q is not 20 lowercase letters/digits", sb.ID)
		}
		if sb.Status != "running" || sb.Host != testHostID || sb.VCPUs != 2 || sb.MemoryMB != 512 || sb.DiskSizeMB != 4096 ||
			sb.TimeoutS != 60 || sb.EnvdAccessToken == "" || !slices.Equal(sb.EnvKeys, []string{"A", "B"}) || sb.Metadata["owner"] != "ci" {
			t.Fatalf("created %+v", sb)
		}
		creates := e.host.Creates()
		if len(creates) != 1 || creates[0].DiskSizeMB != 4096 || creates[0].AccessToken != sb.EnvdAccessToken || creates[0].Env["A"] != "1" {
			t.Fatalf("host got %+v", creates)
		}

		r := e.do("GET", "/v1/sandboxes/"+sb.ID, nil, k)
		e.want(r, http.StatusOK, "get")
		if bytes.Contains(r.body, []byte("envd_access_token")) || bytes.Contains(r.body, []byte(sb.EnvdAccessToken)) {
			t.Fatalf("get leaks the access token: %s", r.body)
		}
		if bytes.Contains(r.body, []byte(`"1"`)) {
			t.Fatalf("get leaks env values: %s", r.body)
		}

		other := e.createSandbox(a, map[string]any{"metadata": map[string]string{"owner": "someone"}})
		var list []sandbox
		e.do("GET", "/v1/sandboxes", nil, k).json(t, &list)
		if len(list) != 2 {
			t.Fatalf("list = %+v", list)
		}
		e.do("GET", "/v1/sandboxes?metadata=owner%3Dci", nil, k).json(t, &list)
		if len(list) != 1 || list[0].ID != sb.ID {
			t.Fatalf("metadata filter = %+v", list)
		}

		var ex struct {
			Stdout, Stderr string
			ExitCode       int `json:"exit_code"`
		}
		r = e.do("POST", "/v1/sandboxes/"+sb.ID+"/exec", map[string]any{"cmd": "echo", "args": []string{"hi", "there"}}, k)
		e.want(r, http.StatusOK, "exec")
		r.json(t, &ex)
		if ex.Stdout != "hi there\n" || ex.ExitCode != 0 {
			t.Fatalf("exec = %s", r.body)
		}
		r = e.do("POST", "/v1/sandboxes/"+sb.ID+"/exec", map[string]any{"cmd": "exit", "args": []string{"3"}}, k)
		r.json(t, &ex)
		if ex.ExitCode != 3 {
			t.Fatalf("exit code = %s", r.body)
		}

		content := bytes.Repeat([]byte{0, 1, 2, 0xff}, 1000)
		e.want(e.do("PUT", "/v1/sandboxes/"+sb.ID+"/files?path=/tmp/x.bin", content, k), http.StatusNoContent, "upload")
		r = e.do("GET", "/v1/sandboxes/"+sb.ID+"/files?path=/tmp/x.bin", nil, k)
		e.want(r, http.StatusOK, "download")
		if !bytes.Equal(r.body, content) || r.header.Get("Content-Type") != "application/octet-stream" {
			t.Fatalf("download: %d bytes, type %q", len(r.body), r.header.Get("Content-Type"))
		}
		e.want(e.do("GET", "/v1/sandboxes/"+sb.ID+"/files?path=/nope", nil, k), http.StatusNotFound, "missing file")
		e.want(e.do("PUT", "/v1/sandboxes/"+sb.ID+"/files?path=/big", bytes.Repeat([]byte("x"), 1<<20+1), k), http.StatusRequestEntityTooLarge, "too big upload")
		// A download the host cuts short is an error for the client, not
		// a shorter file.
		e.host.ReadCut.Store(1000)
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/sandboxes/"+sb.ID+"/files?path=/tmp/x.bin", nil)
		for i := 0; i+1 < len(k); i += 2 {
			req.Header.Set(k[i], k[i+1])
		}
		if res, err := e.srv.Client().Do(req); err == nil {
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err == nil {
				t.Errorf("a download cut short by the host ended cleanly with %d of %d bytes", len(b), len(content))
			}
		}
		e.host.ReadCut.Store(0)

		// Pause and resume, both idempotent.
		for range 2 {
			r = e.do("POST", "/v1/sandboxes/"+sb.ID+"/pause", nil, k)
			e.want(r, http.StatusOK, "pause")
			if !bytes.Contains(r.body, []byte(`"status":"paused"`)) || e.host.State(sb.ID) != "paused" {
				t.Fatalf("pause: %s, host %q", r.body, e.host.State(sb.ID))
			}
		}
		e.want(e.do("POST", "/v1/sandboxes/"+sb.ID+"/exec", map[string]any{"cmd": "echo"}, k), http.StatusConflict, "exec while paused")
		for range 2 {
			r = e.do("POST", "/v1/sandboxes/"+sb.ID+"/resume", nil, k)
			e.want(r, http.StatusOK, "resume")
			if !bytes.Contains(r.body, []byte(`"status":"running"`)) || e.host.State(sb.ID) != "running" {
				t.Fatalf("resume: %s", r.body)
			}
		}

		// Egress policy: replaced as a whole, applied by the host at once.
		r = e.do("PUT", "/v1/sandboxes/"+sb.ID+"/network", map[string]any{"allow_internet": false, "allow_out": []string{"1.1.1.1"}}, k)
		e.want(r, http.StatusOK, "network")
		if !bytes.Contains(r.body, []byte(`"allow_internet":false`)) || !bytes.Contains(r.body, []byte(`"allow_out":["1.1.1.1/32"]`)) {
			t.Fatalf("network: %s", r.body)
		}
		if got := e.host.Network(sb.ID); got.AllowInternet || len(got.AllowOut) != 1 {
			t.Fatalf("host policy %+v", got)
		}

		r = e.do("POST", "/v1/sandboxes/"+sb.ID+"/timeout", map[string]any{"timeout_s": 3600}, k)
		e.want(r, http.StatusOK, "timeout")
		var upd sandbox
		r.json(t, &upd)
		if upd.TimeoutS != 3600 || !upd.EndAt.After(sb.EndAt) {
			t.Fatalf("timeout: %+v (was end %v)", upd, sb.EndAt)
		}

		// Snapshot → template → sandbox from it, with a fixed shape.
		r = e.do("POST", "/v1/snapshots", map[string]any{"sandbox_id": sb.ID, "name": "snap-1"}, k)
		e.want(r, http.StatusCreated, "snapshot")
		var tpl struct {
			ID, Name, Kind string
			VCPUs          int `json:"vcpus"`
		}
		r.json(t, &tpl)
		if tpl.Kind != "snapshot" || tpl.Name != "snap-1" || !e.host.HasSnapshot(tpl.ID) {
			t.Fatalf("snapshot: %s", r.body)
		}
		e.want(e.do("POST", "/v1/snapshots", map[string]any{"sandbox_id": sb.ID, "name": "snap-1"}, k), http.StatusConflict, "duplicate snapshot name")
		r = e.do("POST", "/v1/sandboxes", map[string]any{"template": "snap-1", "vcpus": 4}, k)
		if r.status != 400 || !strings.Contains(string(r.body), "vcpus") {
			t.Fatalf("snapshot with other vcpus: %d %s", r.status, r.body)
		}
		r = e.do("POST", "/v1/sandboxes", map[string]any{"template": "snap-1", "memory_mb": 1024}, k)
		if r.status != 400 || !strings.Contains(string(r.body), "memory_mb") {
			t.Fatalf("snapshot with other memory: %d %s", r.status, r.body)
		}
		child := e.createSandbox(a, map[string]any{"template": "snap-1", "vcpus": 2})
		if child.TemplateID != tpl.ID || child.VCPUs != 2 || child.MemoryMB != 512 || child.DiskSizeMB != 4096 {
			t.Fatalf("child %+v", child)
		}
		var snaps []struct{ Name string }
		e.do("GET", "/v1/snapshots", nil, k).json(t, &snaps)
		if len(snaps) != 1 || snaps[0].Name != "snap-1" {
			t.Fatalf("snapshots = %+v", snaps)
		}
		e.want(e.do("DELETE", "/v1/snapshots/snap-1", nil, k), http.StatusConflict, "delete used snapshot")
		e.want(e.do("DELETE", "/v1/sandboxes/"+child.ID, nil, k), http.StatusNoContent, "delete child")
		e.want(e.do("DELETE", "/v1/snapshots/snap-1", nil, k), http.StatusNoContent, "delete snapshot")
		if e.host.HasSnapshot(tpl.ID) {
			t.Error("snapshot files left on the host")
		}
		e.want(e.do("DELETE", "/v1/snapshots/snap-1", nil, k), http.StatusNotFound, "delete snapshot twice")
		e.want(e.do("DELETE", "/v1/snapshots/base", nil, k), http.StatusNotFound, "delete platform template")

		for _, id := range []string{sb.ID, other.ID} {
			e.want(e.do("DELETE", "/v1/sandboxes/"+id, nil, k), http.StatusNoContent, "delete")
			if e.host.State(id) != "" {
				t.Errorf("sandbox %s still on the host", id)
			}
			e.want(e.do("GET", "/v1/sandboxes/"+id, nil, k), http.StatusNotFound, "get deleted")
		}
		e.do("GET", "/v1/sandboxes", nil, k).json(t, &list)
		if len(list) != 0 {
			t.Fatalf("list after delete = %+v", list)
		}
	})
}

// TestCrossTeam: team B tries every team-A resource by ID. All must answer
// 404 with the same body as a resource that does not exist, and leave A's
// resources untouched.
func TestCrossTeam(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		a := e.signup("a@example.com")
		b := e.signup("b@example.com")
		sbA := e.createSandbox(a, nil)
		e.want(e.do("PUT", "/v1/sandboxes/"+sbA.ID+"/files?path=/f", []byte("secret"), apiKey(a.key)), http.StatusNoContent, "upload")
		e.want(e.do("POST", "/v1/snapshots", map[string]any{"sandbox_id": sbA.ID, "name": "snap-a"}, apiKey(a.key)), http.StatusCreated, "snapshot A")
		sbB := e.createSandbox(b, nil) // B has resources of its own
		_ = sbB

		type probe struct {
			method, path string
			body         any
		}
		sandboxProbes := func(id string) []probe {
			return []probe{
				{"GET", "/v1/sandboxes/" + id, nil},
				{"DELETE", "/v1/sandboxes/" + id, nil},
				{"POST", "/v1/sandboxes/" + id + "/exec", map[string]any{"cmd": "echo", "args": []string{"pwned"}}},
				{"POST", "/v1/sandboxes/" + id + "/pause", nil},
				{"POST", "/v1/sandboxes/" + id + "/resume", nil},
				{"POST", "/v1/sandboxes/" + id + "/timeout", map[string]any{"timeout_s": 1}},
				{"GET", "/v1/sandboxes/" + id + "/files?path=/f", nil},
				{"GET", "/v1/sandboxes/" + id + "/metrics", nil},
				{"PUT", "/v1/sandboxes/" + id + "/files?path=/f", []byte("overwritten")},
				{"POST", "/v1/snapshots", map[string]any{"sandbox_id": id, "name": "stolen"}},
			}
		}
		missing := sandboxProbes("aaaaaaaaaaaaaaaaaaaa")
		for _, cred := range []struct {
			name string
			h    hdr
		}{{"api key", apiKey(b.key)}, {"bearer", bearer(b.token)}} {
			for i, p := range sandboxProbes(sbA.ID) {
				got := e.do(p.method, p.path, p.body, cred.h)
				ref := e.do(missing[i].method, missing[i].path, missing[i].body, cred.h)
				if got.status != http.StatusNotFound || !bytes.Equal(got.body, ref.body) {
					t.Errorf("%s: B %s %s = %d %s; missing sandbox gives %d %s", cred.name, p.method, p.path, got.status, got.body, ref.status, ref.body)
				}
			}
			got := e.do("DELETE", "/v1/snapshots/snap-a", nil, cred.h)
			ref := e.do("DELETE", "/v1/snapshots/no-such-snap", nil, cred.h)
			if got.status != 404 || !bytes.Equal(got.body, ref.body) {
				t.Errorf("%s: delete A's snapshot = %d %s; missing gives %s", cred.name, got.status, got.body, ref.body)
			}
		}
		got := e.do("DELETE", "/v1/api-keys/"+a.keyID, nil, bearer(b.token))
		ref := e.do("DELETE", "/v1/api-keys/00000000-0000-0000-0000-000000000001", nil, bearer(b.token))
		if got.status != 404 || !bytes.Equal(got.body, ref.body) {
			t.Errorf("delete A's key = %d %s; missing gives %s", got.status, got.body, ref.body)
		}
		// A person of team B cannot act for team A by naming it.
		got = e.do("GET", "/v1/sandboxes/"+sbA.ID, nil, append(bearer(b.token), "X-Team-ID", a.teamID))
		ref = e.do("GET", "/v1/sandboxes", nil, append(bearer(b.token), "X-Team-ID", "00000000-0000-0000-0000-000000000009"))
		if got.status != 404 || !bytes.Equal(got.body, ref.body) {
			t.Errorf("B acting for team A = %d %s; unknown team gives %s", got.status, got.body, ref.body)
		}
		// Listings of B show none of A's things.
		for _, path := range []string{"/v1/sandboxes", "/v1/snapshots", "/v1/templates"} {
			r := e.do("GET", path, nil, apiKey(b.key))
			if bytes.Contains(r.body, []byte(sbA.ID)) || bytes.Contains(r.body, []byte("snap-a")) {
				t.Errorf("B's %s shows A's resources: %s", path, r.body)
			}
		}
		r := e.do("GET", "/v1/api-keys", nil, bearer(b.token))
		if bytes.Contains(r.body, []byte(a.keyID)) {
			t.Errorf("B's keys show A's: %s", r.body)
		}

		// A's resources are intact.
		r = e.do("GET", "/v1/sandboxes/"+sbA.ID, nil, apiKey(a.key))
		if r.status != 200 || !bytes.Contains(r.body, []byte(`"status":"running"`)) || !bytes.Contains(r.body, []byte(`"timeout_s":300`)) {
			t.Errorf("A's sandbox changed: %s", r.body)
		}
		r = e.do("GET", "/v1/sandboxes/"+sbA.ID+"/files?path=/f", nil, apiKey(a.key))
		if string(r.body) != "secret" {
			t.Errorf("A's file = %q", r.body)
		}
		e.want(e.do("GET", "/v1/templates", nil, apiKey(a.key)), http.StatusOK, "A's templates")
		var snaps []struct{ Name string }
		e.do("GET", "/v1/snapshots", nil, apiKey(a.key)).json(t, &snaps)
		if len(snaps) != 1 {
			t.Errorf("A's snapshots = %+v", snaps)
		}
		e.want(e.do("GET", "/v1/sandboxes", nil, apiKey(a.key)), http.StatusOK, "A's key still works")
	})
}

func TestTemplatesVisibilityAndAdmin(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		a := e.signup("admin-a@example.com")
		b := e.signup("admin-b@example.com")
		sbA := e.createSandbox(a, nil)
		e.want(e.do("POST", "/v1/snapshots", map[string]any{"sandbox_id": sbA.ID, "name": "a-only"}, apiKey(a.key)), http.StatusCreated, "snapshot")

		names := func(r resp) []string {
			var ts []struct {
				Name     string
				Platform bool
			}
			r.json(t, &ts)
			var out []string
			for _, tpl := range ts {
				out = append(out, fmt.Sprintf("%s/%v", tpl.Name, tpl.Platform))
			}
			slices.Sort(out)
			return out
		}
		if got := names(e.do("GET", "/v1/templates", nil, apiKey(a.key))); !slices.Equal(got, []string{"a-only/false", "base/true"}) {
			t.Errorf("A sees %v", got)
		}
		if got := names(e.do("GET", "/v1/templates", nil, apiKey(b.key))); !slices.Equal(got, []string{"base/true"}) {
			t.Errorf("B sees %v", got)
		}
		// B can start the platform template, not A's snapshot.
		e.createSandbox(b, map[string]any{"template": e.baseTpl.ID})
		e.want(e.do("POST", "/v1/sandboxes", map[string]any{"template": "a-only"}, apiKey(b.key)), http.StatusNotFound, "B uses A's snapshot")

		e.want(e.do("GET", "/v1/admin/templates", nil, bearer(a.token)), http.StatusForbidden, "admin as non-admin")
		e.want(e.do("GET", "/v1/admin/templates", nil, apiKey(a.key)), http.StatusUnauthorized, "admin with api key")
		e.want(e.do("GET", "/v1/admin/templates", nil, nil), http.StatusUnauthorized, "admin anonymous")
		if err := e.svc.PromoteAdmin(context.Background(), "ADMIN-B@example.com"); err != nil {
			t.Fatal(err)
		}
		r := e.do("GET", "/v1/admin/templates", nil, bearer(b.token))
		e.want(r, http.StatusOK, "admin after promote")
		if got := names(r); !slices.Equal(got, []string{"a-only/false", "base/true"}) {
			t.Errorf("admin sees %v", got)
		}
		if err := e.svc.PromoteAdmin(context.Background(), "nobody@example.com"); err == nil {
			t.Error("promoting an unknown email succeeded")
		}
	})
}

func TestNoHosts(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{noHosts: true})
		a := e.signup("nohost@example.com")
		r := e.do("POST", "/v1/sandboxes", map[string]any{"template": "base"}, apiKey(a.key))
		if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "no hosts available") {
			t.Fatalf("create without hosts: %d %s", r.status, r.body)
		}
		if r := e.do("GET", "/v1/sandboxes", nil, apiKey(a.key)); strings.TrimSpace(string(r.body)) != "[]" {
			t.Fatalf("a failed placement left a sandbox: %s", r.body)
		}
	})
}

func TestHostFailureMarksError(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		a := e.signup("hostfail@example.com")
		e.host.FailCreates(fmt.Errorf("qemu exploded"))
		e.want(e.do("POST", "/v1/sandboxes", map[string]any{"template": "base"}, apiKey(a.key)), http.StatusServiceUnavailable, "create")
		var list []sandbox
		e.do("GET", "/v1/sandboxes", nil, apiKey(a.key)).json(t, &list)
		if len(list) != 1 || list[0].Status != "error" {
			t.Fatalf("after host failure: %+v", list)
		}
		e.want(e.do("DELETE", "/v1/sandboxes/"+list[0].ID, nil, apiKey(a.key)), http.StatusNoContent, "delete errored")
	})
}

// TestPauseUnimplemented: a host that cannot snapshot answers 501 (not
// 503: retrying will not help) and the sandbox stays running and usable.
func TestPauseUnimplemented(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		a := e.signup("nopause@example.com")
		sb := e.createSandbox(a, map[string]any{"template": "base"})
		e.host.FailPauses(service.Unimplemented("this host cannot snapshot", nil))
		e.want(e.do("POST", "/v1/sandboxes/"+sb.ID+"/pause", nil, apiKey(a.key)), http.StatusNotImplemented, "pause")
		var got sandbox
		e.do("GET", "/v1/sandboxes/"+sb.ID, nil, apiKey(a.key)).json(t, &got)
		if got.Status != "running" {
			t.Fatalf("after an unimplemented pause: %s, want running", got.Status)
		}
		e.host.FailPauses(nil)
		for range 2 { // idempotent
			e.want(e.do("POST", "/v1/sandboxes/"+sb.ID+"/pause", nil, apiKey(a.key)), http.StatusOK, "pause")
		}
	})
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	for _, eng := range storetest.Engines() {
		t.Run(string(eng), func(t *testing.T) {
			t.Parallel()
			db := storetest.Open(t, eng)
			e := newEnv(t, db, envOpts{})
			e.want(e.do("GET", "/healthz", nil, nil), http.StatusOK, "healthz")
			db.Close()
			e.want(e.do("GET", "/healthz", nil, nil), http.StatusServiceUnavailable, "healthz with closed store")
		})
	}
}

func TestDocsAndSpecServed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, storetest.SQLite), envOpts{})
	r := e.do("GET", "/openapi.yaml", nil, nil)
	if r.status != 200 || !bytes.Equal(r.body, openapiYAML) {
		t.Fatalf("/openapi.yaml: %d", r.status)
	}
	r = e.do("GET", "/docs/", nil, nil)
	if r.status != 200 || !bytes.Contains(r.body, []byte("<html")) || bytes.Contains(r.body, []byte("https://")) {
		t.Fatalf("/docs/: %d %.200s", r.status, r.body)
	}
	r = e.do("GET", "/docs/app.js", nil, nil)
	if r.status != 200 || !bytes.Contains(r.body, []byte("/v1/sandboxes")) {
		t.Fatalf("/docs/app.js: %d", r.status)
	}
	// Paths outside this handler's are left for others: JSON 404 here.
	e.want(e.do("GET", "/", nil, nil), http.StatusNotFound, "root")
}

func TestPanicRecovery(t *testing.T) {
	t.Parallel()
	h := recoverPanics(discardLogger(), http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	rec := newRecorder()
	h.ServeHTTP(rec, mustRequest(t, "GET", "/v1/x"))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"code":500`) {
		t.Fatalf("panic answered %d %s", rec.Code, rec.Body)
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, storetest.SQLite), envOpts{})
	r := e.do("GET", "/healthz", nil, hdr{"X-Request-Id", "abc-123"})
	if r.header.Get("X-Request-Id") != "abc-123" {
		t.Errorf("request id not echoed: %q", r.header.Get("X-Request-Id"))
	}
	r = e.do("GET", "/healthz", nil, hdr{"X-Request-Id", "bad id\twith junk"})
	if id := r.header.Get("X-Request-Id"); id == "" || strings.Contains(id, " ") {
		t.Errorf("unsafe request id kept: %q", id)
	}
}

// otherKey is key with its last hex digit changed: well formed, wrong.
func otherKey(key string) string {
	last := "0"
	if strings.HasSuffix(key, "0") {
		last = "1"
	}
	return key[:len(key)-1] + last
}
