package envd_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hearth-sandbox/hearth/gen/envd/filesystem/filesystemconnect"
	"github.com/hearth-sandbox/hearth/gen/envd/process/processconnect"
	"github.com/hearth-sandbox/hearth/internal/envd"
)

const testToken = "test-token-0123456789"

// codecs runs RPC tests with both wire formats the SDKs use.
var codecs = []struct {
	name string
	opts []connect.ClientOption
}{
	{"proto", nil},
	{"json", []connect.ClientOption{connect.WithProtoJSON()}},
}

type clockRecorder struct {
	mu  sync.Mutex
	set []time.Time
}

func (c *clockRecorder) SetClock(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.set = append(c.set, t)
	return nil
}

func (c *clockRecorder) calls() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.set...)
}

type harness struct {
	url   string
	srv   *envd.Server
	clock *clockRecorder
	// hc sends the access token on every request.
	hc *http.Client
	// raw sends nothing extra.
	raw *http.Client
}

type tokenTransport struct {
	base  http.RoundTripper
	token string
}

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if r.Header.Get(envd.AccessTokenHeader) == "" {
		r.Header.Set(envd.AccessTokenHeader, t.token)
	}
	return t.base.RoundTrip(r)
}

// newServer starts a real envd HTTP server on loopback without /init.
func newServer(t *testing.T) *harness { return newServerWith(t, envd.Config{}) }

// newServerWith is newServer with cfg's InitHash and Limits.
func newServerWith(t *testing.T, cfg envd.Config) *harness {
	t.Helper()
	clock := &clockRecorder{}
	srv := envd.New(envd.Config{SetClock: clock.SetClock, Logger: slog.New(slog.DiscardHandler), InitHash: cfg.InitHash, Limits: cfg.Limits})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := srv.HTTPServer(ln.Addr().String())
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			_ = hs.Close()
		}
	})
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &harness{
		url:   "http://" + ln.Addr().String(),
		srv:   srv,
		clock: clock,
		hc:    &http.Client{Transport: tokenTransport{base: tr, token: testToken}},
		raw:   &http.Client{Transport: tr},
	}
}

// newEnvd starts envd and initialises it with testToken.
func newEnvd(t *testing.T, init map[string]any) *harness {
	t.Helper()
	return initEnvd(t, newServer(t), init)
}

// initEnvd sends h its first /init with testToken.
func initEnvd(t *testing.T, h *harness, init map[string]any) *harness {
	t.Helper()
	body := map[string]any{"accessToken": testToken}
	for k, v := range init {
		body[k] = v
	}
	resp := h.do(t, h.raw, http.MethodPost, "/init", jsonBody(t, body), nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("/init: %d %s", resp.StatusCode, readAll(t, resp))
	}
	resp.Body.Close()
	return h
}

func (h *harness) proc(opts []connect.ClientOption) processconnect.ProcessClient {
	return processconnect.NewProcessClient(h.hc, h.url, opts...)
}

func (h *harness) fs(opts []connect.ClientOption) filesystemconnect.FilesystemClient {
	return filesystemconnect.NewFilesystemClient(h.hc, h.url, opts...)
}

func (h *harness) do(t *testing.T, c *http.Client, method, path string, body io.Reader, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, h.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func jsonBody(t *testing.T, v any) io.Reader {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func basicUser(name string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"))
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	// A safety net against hangs, not a timing assertion.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func contains(haystack, needle string) bool { return strings.Contains(haystack, needle) }
