package proxy_test

import (
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/proxy"
)

// signedURL signs a download as the E2B SDK does (downloadUrl): SHA-256 of
// path:read:user:token[:expiration], base64 without padding, "v1_" first.
func signedURL(path, user, token string, exp int64) string {
	raw := path + ":read:" + user + ":" + token
	q := url.Values{"path": {path}, "username": {user}}
	if exp != 0 {
		raw += ":" + strconv.FormatInt(exp, 10)
		q.Set("signature_expiration", strconv.FormatInt(exp, 10))
	}
	sum := sha256.Sum256([]byte(raw))
	q.Set("signature", "v1_"+strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "="))
	return "/files?" + q.Encode()
}

// TestSignedURLMaxAge: by default a signed URL without an expiry works
// (the SDK's downloadUrl() signs none) and envd enforces an expiry that is
// there; with SignedURLMaxAge the proxy refuses URLs without an expiry or
// expiring too far ahead, and leaves token-authenticated requests alone.
func TestSignedURLMaxAge(t *testing.T) {
	t.Parallel()
	envdURL := startEnvd(t)
	file := t.TempDir() + "/f.txt"
	if err := os.WriteFile(file, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, maxAge := range []time.Duration{0, time.Hour} {
		res := newResolver()
		res.add("sbx1", proxy.EnvdPort, envdURL)
		srv := httptest.NewServer(proxy.New(res, proxy.Options{Domain: testDomain, SignedURLMaxAge: maxAge, Logger: slog.New(slog.DiscardHandler)}))
		t.Cleanup(srv.Close)
		for _, c := range []struct {
			name  string
			exp   int64
			token bool
			want  int // with maxAge 0, then with 1h
			want1 int
		}{
			{"no expiry", 0, false, 200, 401},
			{"expires in 30 minutes", now.Add(30 * time.Minute).Unix(), false, 200, 200},
			{"expires in 2 hours", now.Add(2 * time.Hour).Unix(), false, 200, 401},
			{"expired", now.Add(-time.Minute).Unix(), false, 401, 401},
			{"access token, no signature", 0, true, 200, 200},
		} {
			want := c.want
			if maxAge > 0 {
				want = c.want1
			}
			client := sdkClient("sbx1", "")
			path := signedURL(file, "root", testToken, c.exp)
			if c.token {
				client = sdkClient("sbx1", testToken)
				path = "/files?path=" + url.QueryEscape(file)
			}
			resp, err := client.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != want {
				t.Errorf("max age %s, %s: %d %s, want %d", maxAge, c.name, resp.StatusCode, body, want)
			}
			if want == 200 && body != "hello" {
				t.Errorf("max age %s, %s: body %q", maxAge, c.name, body)
			}
			if maxAge > 0 && c.name == "no expiry" && !strings.Contains(body, "useSignatureExpiration") {
				t.Errorf("the refusal does not say how to fix it: %s", body)
			}
		}
	}
}
