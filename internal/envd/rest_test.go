package envd_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	fsrpc "github.com/hearth-sandbox/hearth/gen/envd/filesystem"
	rpc "github.com/hearth-sandbox/hearth/gen/envd/process"
	"github.com/hearth-sandbox/hearth/gen/envd/process/processconnect"
	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/envd/initsecret"
)

type entry struct {
	Path     string            `json:"path"`
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Metadata map[string]string `json:"metadata"`
}

func decodeEntries(t *testing.T, resp *http.Response) []entry {
	t.Helper()
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	var out []entry
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	return out
}

// multipartBody builds a form with "file" parts; filenames carry full paths
// exactly as the E2B SDK sends them.
func multipartBody(t *testing.T, files map[string][]byte) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for name, data := range files {
		hdr := textproto.MIMEHeader{}
		hdr.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename=%q`, name))
		hdr.Set("Content-Type", "application/octet-stream")
		w, err := mw.CreatePart(hdr)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}

func TestUploadMultipart(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	dir := t.TempDir()

	t.Run("single with path", func(t *testing.T) {
		dest := filepath.Join(dir, "new", "dirs", "hello.txt")
		body, ct := multipartBody(t, map[string][]byte{"ignored-name.txt": []byte("hello")})
		entries := decodeEntries(t, h.do(t, h.hc, http.MethodPost, "/files?path="+url.QueryEscape(dest), body, map[string]string{"Content-Type": ct}))
		if len(entries) != 1 || entries[0].Path != dest || entries[0].Name != "hello.txt" || entries[0].Type != "file" || entries[0].Metadata != nil {
			t.Fatalf("entries = %+v", entries)
		}
		if b, _ := os.ReadFile(dest); string(b) != "hello" {
			t.Fatalf("content = %q", b)
		}
	})
	t.Run("several by filename", func(t *testing.T) {
		files := map[string][]byte{
			filepath.Join(dir, "m", "a.txt"):     []byte("A"),
			filepath.Join(dir, "m", "sub/b.bin"): {0, 1, 2},
			filepath.Join(dir, "m", "hello.txt"): []byte("overwritten later"),
		}
		body, ct := multipartBody(t, files)
		entries := decodeEntries(t, h.do(t, h.hc, http.MethodPost, "/files", body, map[string]string{"Content-Type": ct}))
		if len(entries) != len(files) {
			t.Fatalf("entries = %+v", entries)
		}
		for p, data := range files {
			if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, data) {
				t.Errorf("%s = %q, %v", p, b, err)
			}
		}
	})
	t.Run("overwrite", func(t *testing.T) {
		dest := filepath.Join(dir, "m", "hello.txt")
		body, ct := multipartBody(t, map[string][]byte{dest: []byte("short")})
		decodeEntries(t, h.do(t, h.hc, http.MethodPost, "/files", body, map[string]string{"Content-Type": ct}))
		if b, _ := os.ReadFile(dest); string(b) != "short" {
			t.Fatalf("content = %q", b)
		}
	})
	t.Run("onto a directory", func(t *testing.T) {
		body, ct := multipartBody(t, map[string][]byte{dir: []byte("x")})
		resp := h.do(t, h.hc, http.MethodPost, "/files", body, map[string]string{"Content-Type": ct})
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status = %d, want 400", resp.StatusCode)
		}
		resp.Body.Close()
	})
}

func TestUploadOctetStreamAndDownloadRoundTrip(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	dir := t.TempDir()
	data := make([]byte, 5<<20+17)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "deep", "blob.bin")
	entries := decodeEntries(t, h.do(t, h.hc, http.MethodPost, "/files?path="+url.QueryEscape(dest), bytes.NewReader(data),
		map[string]string{"Content-Type": "application/octet-stream"}))
	if len(entries) != 1 || entries[0].Path != dest || entries[0].Type != "file" {
		t.Fatalf("entries = %+v", entries)
	}

	resp := h.do(t, h.hc, http.MethodGet, "/files?path="+url.QueryEscape(dest), nil, nil)
	got := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Length") != strconv.Itoa(len(data)) {
		t.Fatalf("download: %d, content-length %q", resp.StatusCode, resp.Header.Get("Content-Length"))
	}
	if sha256.Sum256([]byte(got)) != sha256.Sum256(data) {
		t.Fatal("5 MB round trip is not byte-exact")
	}

	// gzip in both directions (the SDK's gzip option).
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(data)
	zw.Close()
	dest2 := filepath.Join(dir, "gz.bin")
	decodeEntries(t, h.do(t, h.hc, http.MethodPost, "/files?path="+url.QueryEscape(dest2), &gz,
		map[string]string{"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}))
	resp = h.do(t, h.hc, http.MethodGet, "/files?path="+url.QueryEscape(dest2), nil, map[string]string{"Accept-Encoding": "gzip"})
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("content-encoding = %q", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	unz, err := io.ReadAll(zr)
	resp.Body.Close()
	if err != nil || !bytes.Equal(unz, data) {
		t.Fatalf("gzip round trip differs (err %v)", err)
	}
}

func TestDownloadContentTypeAndErrors(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "page.html"), []byte("<p>hi</p>"), 0o644)
	os.WriteFile(filepath.Join(dir, "noext"), []byte{0, 1, 2, 3}, 0o644)
	cases := []struct {
		path   string
		status int
		ctype  string
	}{
		{filepath.Join(dir, "page.html"), 200, "text/html; charset=utf-8"},
		{filepath.Join(dir, "noext"), 200, "application/octet-stream"},
		{filepath.Join(dir, "missing"), 404, "application/json"},
		{dir, 400, "application/json"},
		{"", 400, "application/json"},
	}
	for _, tc := range cases {
		resp := h.do(t, h.hc, http.MethodGet, "/files?path="+url.QueryEscape(tc.path), nil, nil)
		body := readAll(t, resp)
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != tc.ctype {
			t.Errorf("%s: %d %q (%s), want %d %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.status, tc.ctype)
		}
		if tc.status != 200 {
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if json.Unmarshal([]byte(body), &e) != nil || e.Code != tc.status || e.Message == "" {
				t.Errorf("%s: error body %q", tc.path, body)
			}
		}
	}
	resp := h.do(t, h.hc, http.MethodGet, "/files?path=x&username=no-such-user-xyz", nil, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unknown user: %d, want 401", resp.StatusCode)
	}
	resp.Body.Close()
}

func TestUploadAsUserAndRelativePath(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	base, err := os.MkdirTemp("", "envd-up-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	dest := filepath.Join(base, "sub", "f.txt")
	decodeEntries(t, h.do(t, h.hc, http.MethodPost, "/files?username=nobody&path="+url.QueryEscape(dest), strings.NewReader("x"),
		map[string]string{"Content-Type": "application/octet-stream"}))
	for _, p := range []string{dest, filepath.Dir(dest)} {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 65534 {
			t.Errorf("%s uid = %d, want 65534", p, st.Uid)
		}
	}
	// A relative path lands in the user's home (root here).
	name := "envd-rel-" + strconv.FormatInt(time.Now().UnixNano(), 36) + ".txt"
	t.Cleanup(func() { _ = os.Remove(filepath.Join("/root", name)) })
	entries := decodeEntries(t, h.do(t, h.hc, http.MethodPost, "/files?path="+name, strings.NewReader("x"),
		map[string]string{"Content-Type": "application/octet-stream"}))
	if entries[0].Path != filepath.Join("/root", name) {
		t.Fatalf("path = %q", entries[0].Path)
	}
}

func TestUploadMetadata(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	os.WriteFile(probe, nil, 0o644)
	if err := unix.Setxattr(probe, "user.e2b.probe", []byte("1"), 0); err != nil {
		t.Skipf("metadata needs user xattrs on %s: %v", dir, err)
	}
	dest := filepath.Join(dir, "m.txt")
	entries := decodeEntries(t, h.do(t, h.hc, http.MethodPost, "/files?path="+url.QueryEscape(dest), strings.NewReader("x"),
		map[string]string{"Content-Type": "application/octet-stream", "X-Metadata-Owner-Team": "infra", "X-Metadata-Stage": "dev"}))
	if entries[0].Metadata["owner-team"] != "infra" || entries[0].Metadata["stage"] != "dev" {
		t.Fatalf("metadata = %v", entries[0].Metadata)
	}
	st, err := h.fs(nil).Stat(testCtx(t), connect.NewRequest(&fsrpc.StatRequest{Path: dest}))
	if err != nil {
		t.Fatal(err)
	}
	if st.Msg.GetEntry().GetMetadata()["stage"] != "dev" {
		t.Fatalf("stat metadata = %v", st.Msg.GetEntry().GetMetadata())
	}
	// A later upload replaces the set: keys it does not send disappear.
	decodeEntries(t, h.do(t, h.hc, http.MethodPost, "/files?path="+url.QueryEscape(dest), strings.NewReader("y"),
		map[string]string{"Content-Type": "application/octet-stream", "X-Metadata-Stage": "prod"}))
	st, err = h.fs(nil).Stat(testCtx(t), connect.NewRequest(&fsrpc.StatRequest{Path: dest}))
	if err != nil {
		t.Fatal(err)
	}
	if md := st.Msg.GetEntry().GetMetadata(); len(md) != 1 || md["stage"] != "prod" {
		t.Fatalf("metadata after replace = %v", md)
	}
	resp := h.do(t, h.hc, http.MethodPost, "/files?path="+url.QueryEscape(dest), strings.NewReader("y"),
		map[string]string{"Content-Type": "application/octet-stream", "X-Metadata-Bad": "caf\u00e9"})
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("non-ASCII metadata: %d, want 400", resp.StatusCode)
	}
	resp.Body.Close()
}

// route is one authenticated envd endpoint, called with the given client.
type route struct {
	name string
	call func(t *testing.T, h *harness, c *http.Client) int
}

func restRoute(method, path, ctype string, body string) func(t *testing.T, h *harness, c *http.Client) int {
	return func(t *testing.T, h *harness, c *http.Client) int {
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		hdr := map[string]string{}
		if ctype != "" {
			hdr["Content-Type"] = ctype
		}
		resp := h.do(t, c, method, path, r, hdr)
		resp.Body.Close()
		return resp.StatusCode
	}
}

func connectRoute(procedure, body string) func(t *testing.T, h *harness, c *http.Client) int {
	return restRoute(http.MethodPost, procedure, "application/json", body)
}

func streamRoute(procedure, body string) func(t *testing.T, h *harness, c *http.Client) int {
	return func(t *testing.T, h *harness, c *http.Client) int {
		env := make([]byte, 5+len(body))
		env[4] = byte(len(body))
		copy(env[5:], body)
		resp := h.do(t, c, http.MethodPost, procedure, bytes.NewReader(env), map[string]string{"Content-Type": "application/connect+json"})
		resp.Body.Close()
		return resp.StatusCode
	}
}

var authedRoutes = []route{
	{"GET /files", restRoute(http.MethodGet, "/files?path=/etc/hostname", "", "")},
	{"POST /files", restRoute(http.MethodPost, "/files?path=/tmp/envd-auth-probe", "application/octet-stream", "x")},
	{"GET /envs", restRoute(http.MethodGet, "/envs", "", "")},
	{"GET /metrics", restRoute(http.MethodGet, "/metrics", "", "")},
	{"process List", connectRoute("/process.Process/List", "{}")},
	{"process Start", streamRoute("/process.Process/Start", `{"process":{"cmd":"/bin/true"}}`)},
	{"process Connect", streamRoute("/process.Process/Connect", `{"process":{"pid":1}}`)},
	{"process SendInput", connectRoute("/process.Process/SendInput", `{}`)},
	{"process SendSignal", connectRoute("/process.Process/SendSignal", `{}`)},
	{"process CloseStdin", connectRoute("/process.Process/CloseStdin", `{}`)},
	{"process Update", connectRoute("/process.Process/Update", `{}`)},
	{"fs Stat", connectRoute("/filesystem.Filesystem/Stat", `{"path":"/"}`)},
	{"fs ListDir", connectRoute("/filesystem.Filesystem/ListDir", `{"path":"/"}`)},
	{"fs MakeDir", connectRoute("/filesystem.Filesystem/MakeDir", `{"path":"/tmp"}`)},
	{"fs Move", connectRoute("/filesystem.Filesystem/Move", `{}`)},
	{"fs Remove", connectRoute("/filesystem.Filesystem/Remove", `{"path":"/tmp/envd-auth-nothing"}`)},
	{"fs WatchDir", streamRoute("/filesystem.Filesystem/WatchDir", `{"path":"/tmp"}`)},
	{"fs CreateWatcher", connectRoute("/filesystem.Filesystem/CreateWatcher", `{}`)},
	{"fs GetWatcherEvents", connectRoute("/filesystem.Filesystem/GetWatcherEvents", `{}`)},
	{"fs RemoveWatcher", connectRoute("/filesystem.Filesystem/RemoveWatcher", `{}`)},
}

func TestAuthRefusedOnEveryRoute(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	wrong := &http.Client{Transport: tokenTransport{base: h.raw.Transport, token: "wrong-token"}}
	// Same length as the real token: the comparison must not be a prefix check.
	sameLen := &http.Client{Transport: tokenTransport{base: h.raw.Transport, token: strings.Repeat("x", len(testToken))}}
	for _, r := range authedRoutes {
		for name, c := range map[string]*http.Client{"no token": h.raw, "wrong token": wrong, "same-length token": sameLen} {
			if got := r.call(t, h, c); got != http.StatusUnauthorized {
				t.Errorf("%s with %s: status %d, want 401", r.name, name, got)
			}
		}
	}
	resp := h.do(t, h.raw, http.MethodGet, "/health", nil, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get(envd.VersionHeader) != envd.Version {
		t.Fatalf("/health without token: %d version %q", resp.StatusCode, resp.Header.Get(envd.VersionHeader))
	}
	// The right token opens them (status is whatever the call itself gives).
	for _, r := range authedRoutes {
		if got := r.call(t, h, h.hc); got == http.StatusUnauthorized {
			t.Errorf("%s with the token: 401", r.name)
		}
	}
	_ = os.Remove("/tmp/envd-auth-probe")
}

func TestRoutesRefusedBeforeInit(t *testing.T) {
	t.Parallel()
	h := newServer(t)
	for _, r := range authedRoutes {
		if got := r.call(t, h, h.hc); got != http.StatusUnauthorized {
			t.Errorf("%s before /init: status %d, want 401", r.name, got)
		}
	}
}

func TestInitTokenRules(t *testing.T) {
	t.Parallel()
	h := newServer(t)
	init := func(c *http.Client, body map[string]any) int {
		resp := h.do(t, c, http.MethodPost, "/init", jsonBody(t, body), map[string]string{"Content-Type": "application/json"})
		resp.Body.Close()
		return resp.StatusCode
	}
	withToken := func(tok string) *http.Client {
		return &http.Client{Transport: tokenTransport{base: h.raw.Transport, token: tok}}
	}
	// No token yet: /init is open, and ignores fields it does not use.
	if got := init(h.raw, map[string]any{"envVars": map[string]string{"A": "1"}, "hyperloopIP": "10.0.0.1", "lifecycleID": "x",
		"volumeMounts": []any{}, "caBundle": ""}); got != http.StatusNoContent {
		t.Fatalf("first init without token: %d", got)
	}
	if got := init(h.raw, map[string]any{"accessToken": "first"}); got != http.StatusNoContent {
		t.Fatalf("init setting token: %d", got)
	}
	// Now /init needs the current token.
	if got := init(h.raw, map[string]any{"accessToken": "evil"}); got != http.StatusUnauthorized {
		t.Fatalf("re-init without token: %d, want 401", got)
	}
	if got := init(withToken("wrong"), map[string]any{"accessToken": "evil"}); got != http.StatusUnauthorized {
		t.Fatalf("re-init with wrong token: %d, want 401", got)
	}
	// Re-keying (after a snapshot restore) with the current token works.
	if got := init(withToken("first"), map[string]any{"accessToken": "second"}); got != http.StatusNoContent {
		t.Fatalf("re-key: %d", got)
	}
	for tok, want := range map[string]int{"first": http.StatusUnauthorized, "second": http.StatusOK} {
		resp := h.do(t, withToken(tok), http.MethodGet, "/envs", nil, nil)
		body := readAll(t, resp)
		if resp.StatusCode != want {
			t.Errorf("/envs with %s: %d, want %d", tok, resp.StatusCode, want)
		}
		if want == http.StatusOK && strings.TrimSpace(body) != `{"A":"1"}` {
			t.Errorf("/envs body = %s", body)
		}
	}
	// A malformed body is refused, a token-less re-init keeps the token.
	resp := h.do(t, withToken("second"), http.MethodPost, "/init", strings.NewReader("{"), nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad json: %d", resp.StatusCode)
	}
	if got := init(withToken("second"), map[string]any{}); got != http.StatusNoContent {
		t.Errorf("empty re-init: %d", got)
	}
	if got := restRoute(http.MethodGet, "/envs", "", "")(t, h, withToken("second")); got != http.StatusOK {
		t.Errorf("token lost after empty re-init: %d", got)
	}
}

// With a boot secret on the kernel command line, only its holder (the host
// agent) gets the first /init; once spent, /init needs the access token.
func TestInitNeedsTheBootSecret(t *testing.T) {
	t.Parallel()
	secret, arg, err := initsecret.New()
	if err != nil {
		t.Fatal(err)
	}
	hash, err := initsecret.FromCmdline("console=ttyS0 " + arg + " panic=-1")
	if err != nil || len(hash) != 32 {
		t.Fatalf("FromCmdline = %x, %v", hash, err)
	}
	h := newServerWith(t, envd.Config{InitHash: hash})
	init := func(tok string, body map[string]any) int {
		hdr := map[string]string{"Content-Type": "application/json"}
		if tok != "" {
			hdr[envd.AccessTokenHeader] = tok
		}
		resp := h.do(t, h.raw, http.MethodPost, "/init", jsonBody(t, body), hdr)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tok := range []string{"", "guess", arg} {
		if got := init(tok, map[string]any{"accessToken": "evil"}); got != http.StatusUnauthorized {
			t.Fatalf("first /init with %q: %d, want 401", tok, got)
		}
	}
	if got := init(secret, map[string]any{"accessToken": "tok1"}); got != http.StatusNoContent {
		t.Fatalf("first /init with the secret: %d", got)
	}
	// A second /init without the token is refused, and the secret is spent.
	for _, tok := range []string{"", secret} {
		if got := init(tok, map[string]any{"accessToken": "evil"}); got != http.StatusUnauthorized {
			t.Fatalf("second /init with %q: %d, want 401", tok, got)
		}
	}
	if got := init("tok1", map[string]any{"accessToken": "tok2"}); got != http.StatusNoContent {
		t.Fatalf("re-key with the token: %d", got)
	}
	for _, bad := range []string{initsecret.Param + "=abc", initsecret.Param + "=" + strings.Repeat("zz", 32)} {
		if _, err := initsecret.FromCmdline(bad); err == nil {
			t.Errorf("FromCmdline(%q) accepted", bad)
		}
	}
	if h, err := initsecret.FromCmdline("console=ttyS0"); h != nil || err != nil {
		t.Errorf("no param: %x, %v", h, err)
	}
}

func TestInitSetsClockOnlyWhenSkewed(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	post := func(ts time.Time) {
		resp := h.do(t, h.hc, http.MethodPost, "/init", jsonBody(t, map[string]any{"timestamp": ts.Format(time.RFC3339Nano)}), nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("init: %d", resp.StatusCode)
		}
	}
	post(time.Now())
	if calls := h.clock.calls(); len(calls) != 0 {
		t.Fatalf("clock set for a current timestamp: %v", calls)
	}
	future := time.Now().Add(3 * time.Hour).UTC().Truncate(time.Millisecond)
	post(future)
	if calls := h.clock.calls(); len(calls) != 1 || !calls[0].Equal(future) {
		t.Fatalf("clock calls = %v, want [%v]", calls, future)
	}
}

func TestSignedFileURLs(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "s.txt")
	os.WriteFile(path, []byte("signed"), 0o644)
	sign := func(p, op, user string, exp int64) string {
		raw := p + ":" + op + ":" + user + ":" + testToken
		if exp != 0 {
			raw += ":" + strconv.FormatInt(exp, 10)
		}
		sum := sha256.Sum256([]byte(raw))
		return "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
	}
	future, past := time.Now().Add(time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
	cases := []struct {
		name, query string
		method      string
		want        int
	}{
		{"read", "path=" + url.QueryEscape(path) + "&signature=" + url.QueryEscape(sign(path, "read", "", 0)), http.MethodGet, 200},
		{"read with user and expiry", "path=" + url.QueryEscape(path) + "&username=root&signature_expiration=" + strconv.FormatInt(future, 10) +
			"&signature=" + url.QueryEscape(sign(path, "read", "root", future)), http.MethodGet, 200},
		{"expired", "path=" + url.QueryEscape(path) + "&signature_expiration=" + strconv.FormatInt(past, 10) +
			"&signature=" + url.QueryEscape(sign(path, "read", "", past)), http.MethodGet, 401},
		{"write signature used to read", "path=" + url.QueryEscape(path) + "&signature=" + url.QueryEscape(sign(path, "write", "", 0)), http.MethodGet, 401},
		{"other path", "path=" + url.QueryEscape("/etc/shadow") + "&signature=" + url.QueryEscape(sign(path, "read", "", 0)), http.MethodGet, 401},
		{"write", "path=" + url.QueryEscape(path) + "&signature=" + url.QueryEscape(sign(path, "write", "", 0)), http.MethodPost, 200},
	}
	for _, tc := range cases {
		var body io.Reader
		hdr := map[string]string{}
		if tc.method == http.MethodPost {
			body = strings.NewReader("rewritten")
			hdr["Content-Type"] = "application/octet-stream"
		}
		resp := h.do(t, h.raw, tc.method, "/files?"+tc.query, body, hdr)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
}

func TestMetricsAndEnvs(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, map[string]any{"envVars": map[string]string{"K": "v"}})
	resp := h.do(t, h.hc, http.MethodGet, "/metrics", nil, nil)
	var m map[string]float64
	if err := json.Unmarshal([]byte(readAll(t, resp)), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ts", "cpu_count", "mem_total", "mem_used", "mem_total_mib", "disk_total", "disk_used"} {
		if m[k] <= 0 {
			t.Errorf("metrics %s = %v", k, m[k])
		}
	}
	if _, ok := m["cpu_used_pct"]; !ok {
		t.Error("metrics lacks cpu_used_pct")
	}
}

func TestCORSPreflight(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	resp := h.do(t, h.raw, http.MethodOptions, "/process.Process/Start", nil, map[string]string{
		"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
		"Access-Control-Request-Headers": "content-type,x-access-token,connect-protocol-version",
	})
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "x-access-token") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
}

// gRPC clients reach envd over cleartext HTTP/2 (h2c).
func TestGRPCOverH2C(t *testing.T) {
	t.Parallel()
	h := newEnvd(t, nil)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols, DialContext: (&net.Dialer{}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tokenTransport{base: tr, token: testToken}}
	pc := processconnect.NewProcessClient(hc, h.url, connect.WithGRPC())
	stream, err := pc.Start(testCtx(t), connect.NewRequest(startReq("/bin/echo", "over-h2c")))
	if err != nil {
		t.Fatal(err)
	}
	c := &collected{}
	for stream.Receive() {
		c.add(stream.Msg().GetEvent())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if c.stdout.String() != "over-h2c\n" || c.end.GetExitCode() != 0 {
		t.Fatalf("stdout %q end %v", c.stdout.String(), c.end)
	}
	_, err = processconnect.NewProcessClient(&http.Client{Transport: tr}, h.url, connect.WithGRPC()).
		List(context.Background(), connect.NewRequest(&rpc.ListRequest{}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("gRPC without token: %v, want unauthenticated", err)
	}
}
