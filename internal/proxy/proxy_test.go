package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/websocket"

	"github.com/hearth-sandbox/hearth/gen/envd/filesystem"
	"github.com/hearth-sandbox/hearth/gen/envd/filesystem/filesystemconnect"
	"github.com/hearth-sandbox/hearth/gen/envd/process"
	"github.com/hearth-sandbox/hearth/gen/envd/process/processconnect"
	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/envd/envdtest"
	"github.com/hearth-sandbox/hearth/internal/hostwire"
	"github.com/hearth-sandbox/hearth/internal/hostwire/hostwiretest"
	"github.com/hearth-sandbox/hearth/internal/proxy"
)

const (
	testToken  = "proxy-test-token-0123456789"
	testDomain = "sandbox.test"
)

// fakeResolver maps sandbox IDs to upstream base URLs (any port of a
// sandbox goes to its per-port entry, else to its default). It stands in for
// the store and host lookup; everything behind it is real.
type fakeResolver struct {
	mu         sync.Mutex
	upstreams  map[string]map[int]string // id -> port -> base URL ("" port 0: default)
	paused     map[string]bool
	autoResume map[string]bool
	resumes    int
}

func newResolver() *fakeResolver {
	return &fakeResolver{upstreams: map[string]map[int]string{}, paused: map[string]bool{}, autoResume: map[string]bool{}}
}

func (f *fakeResolver) add(id string, port int, base string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.upstreams[id] == nil {
		f.upstreams[id] = map[int]string{}
	}
	f.upstreams[id][port] = base
}

func (f *fakeResolver) Resolve(_ context.Context, id string, port int) (proxy.Target, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ports, ok := f.upstreams[id]
	if !ok {
		return proxy.Target{}, proxy.ErrNotFound
	}
	if f.paused[id] {
		return proxy.Target{}, proxy.ErrPaused
	}
	base, ok := ports[port]
	if !ok {
		base = ports[0]
	}
	u, err := url.Parse(base)
	if err != nil {
		return proxy.Target{}, err
	}
	return proxy.Target{URL: u}, nil
}

func (f *fakeResolver) AutoResume(_ context.Context, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.paused[id] || !f.autoResume[id] {
		return false, nil
	}
	f.paused[id] = false
	f.resumes++
	return true, nil
}

// startEnvd runs a real envd on loopback, initialised with testToken.
func startEnvd(t *testing.T) string {
	t.Helper()
	base := envdtest.Start(t, envd.Config{})
	resp, err := http.Post(base+"/init", "application/json", strings.NewReader(`{"accessToken":"`+testToken+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("envd /init: %d", resp.StatusCode)
	}
	return base
}

type harness struct {
	res   *fakeResolver
	proxy *proxy.Proxy
	url   string // the proxy's own origin
	envd  string // envd's direct origin
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	res := newResolver()
	p := proxy.New(res, proxy.Options{Domain: testDomain, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	h := &harness{res: res, proxy: p, url: srv.URL, envd: startEnvd(t)}
	res.add("sbx1", proxy.EnvdPort, h.envd)
	return h
}

// headerTransport adds the E2B routing headers and, when token is set, the
// envd access token: what the SDK sends to E2B_SANDBOX_URL.
type headerTransport struct {
	id, port, token string
}

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(hostwire.HeaderSandboxID, t.id)
	r.Header.Set(hostwire.HeaderSandboxPort, t.port)
	if t.token != "" {
		r.Header.Set(envd.AccessTokenHeader, t.token)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func sdkClient(id, token string) *http.Client {
	return &http.Client{Transport: headerTransport{id: id, port: "49983", token: token}}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	// A safety net against hangs, not a timing assertion.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHeaderRoutingReachesEnvd(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := testCtx(t)
	for _, codec := range []struct {
		name string
		opts []connect.ClientOption
	}{{"proto", nil}, {"json", []connect.ClientOption{connect.WithProtoJSON()}}} {
		t.Run(codec.name, func(t *testing.T) {
			fs := filesystemconnect.NewFilesystemClient(sdkClient("sbx1", testToken), h.url, codec.opts...)
			dir := t.TempDir()
			res, err := fs.MakeDir(ctx, connect.NewRequest(&filesystem.MakeDirRequest{Path: dir + "/made"}))
			if err != nil {
				t.Fatalf("MakeDir through proxy: %v", err)
			}
			if got := res.Msg.GetEntry().GetName(); got != "made" {
				t.Fatalf("entry name %q, want made", got)
			}
			st, err := fs.Stat(ctx, connect.NewRequest(&filesystem.StatRequest{Path: dir + "/made"}))
			if err != nil || st.Msg.GetEntry().GetType() != filesystem.FileType_FILE_TYPE_DIRECTORY {
				t.Fatalf("Stat: %v %v", st, err)
			}
		})
	}
}

// TestAccessTokenEnforcedByEnvd: the proxy adds no credentials, so a
// request without the sandbox's token gets envd's own 401, and a wrong one
// too.
func TestAccessTokenEnforcedByEnvd(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, tc := range []struct{ name, token, wantMsg string }{
		{"missing", "", "missing access token"},
		{"wrong", "not-the-token", "invalid access token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := sdkClient("sbx1", tc.token).Get(h.url + "/envs")
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, tc.wantMsg) {
				t.Fatalf("got %d %s, want envd's 401 %q", resp.StatusCode, body, tc.wantMsg)
			}
		})
	}
	resp, err := sdkClient("sbx1", testToken).Get(h.url + "/envs")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("with token: %d %s", resp.StatusCode, body)
	}
}

func TestHostRouting(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A guest web server on another port: it sees the client's Host and no
	// routing headers.
	type seen struct {
		host, path, query, routeHdr string
	}
	got := make(chan seen, 1)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.URL.Path, r.URL.RawQuery, r.Header.Get(hostwire.HeaderSandboxID) + r.Header.Get(hostwire.HeaderSandboxPort)}
		io.WriteString(w, "hello from the guest")
	}))
	t.Cleanup(web.Close)
	h.res.add("sbx1", 3000, web.URL)

	for _, tc := range []struct {
		name, host, path string
		wantStatus       int
		wantBody         string
	}{
		{"envd health", "49983-sbx1." + testDomain, "/health", http.StatusNoContent, ""},
		{"guest web server", "3000-sbx1." + testDomain + ":8080", "/a/b?x=1", http.StatusOK, "hello from the guest"},
		{"unknown sandbox", "3000-nosuch." + testDomain, "/", http.StatusNotFound, `"code":404`},
		{"bad port", "99999-sbx1." + testDomain, "/", http.StatusBadRequest, `"code":400`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, h.url+tc.path, nil)
			req.Host = tc.host
			if !h.proxy.Matches(req) {
				t.Fatalf("Matches(%s) = false", tc.host)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != tc.wantStatus || !strings.Contains(body, tc.wantBody) {
				t.Fatalf("got %d %q, want %d containing %q", resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
		})
	}
	s := <-got
	if s.host != "3000-sbx1."+testDomain+":8080" || s.path != "/a/b" || s.query != "x=1" || s.routeHdr != "" {
		t.Fatalf("guest saw %+v", s)
	}
}

func TestMatches(t *testing.T) {
	t.Parallel()
	p := proxy.New(newResolver(), proxy.Options{Domain: testDomain})
	noDomain := proxy.New(newResolver(), proxy.Options{})
	for _, tc := range []struct {
		name   string
		p      *proxy.Proxy
		host   string
		header bool
		want   bool
	}{
		{"routing header", p, "127.0.0.1:3000", true, true},
		{"host name", p, "49983-abc123." + testDomain, false, true},
		{"host name with port, upper case", p, "3000-ABC." + strings.ToUpper(testDomain) + ":443", false, true},
		{"api host", p, "127.0.0.1:3000", false, false},
		{"domain itself", p, testDomain, false, false},
		{"deeper subdomain", p, "x.3000-abc." + testDomain, false, false},
		{"other domain", p, "3000-abc.example.com", false, false},
		{"no domain configured", noDomain, "3000-abc." + testDomain, false, false},
		{"no domain, header", noDomain, "localhost", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Host = tc.host
			if tc.header {
				r.Header.Set(hostwire.HeaderSandboxID, "abc")
			}
			if got := tc.p.Matches(r); got != tc.want {
				t.Fatalf("Matches = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestStreamingIsNotBuffered: the first event of a Connect server stream
// arrives while the process still runs (it only ends when killed), so a
// buffering proxy would make this test hang until its safety timeout.
func TestStreamingIsNotBuffered(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := testCtx(t)
	pc := processconnect.NewProcessClient(sdkClient("sbx1", testToken), h.url, connect.WithProtoJSON())
	stream, err := pc.Start(ctx, connect.NewRequest(&process.StartRequest{
		Process: &process.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "echo first; exec sleep 600"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var pid uint32
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		if st := ev.GetStart(); st != nil {
			pid = st.GetPid()
		}
		if d := ev.GetData(); d != nil && strings.Contains(string(d.GetStdout()), "first") {
			break
		}
		if ev.GetEnd() != nil {
			t.Fatal("process ended before its output was seen")
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if pid == 0 {
		t.Fatal("no start event")
	}
	if _, err := pc.SendSignal(ctx, connect.NewRequest(&process.SendSignalRequest{
		Process: &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: pid}},
		Signal:  process.Signal_SIGNAL_SIGKILL,
	})); err != nil {
		t.Fatalf("kill: %v", err)
	}
	for stream.Receive() {
		if end := stream.Msg().GetEvent().GetEnd(); end != nil {
			if end.GetExited() {
				t.Fatalf("process exited normally, want killed: %+v", end)
			}
			return
		}
	}
	t.Fatalf("stream ended without an end event: %v", stream.Err())
}

func TestWebSocketUpgrade(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	echo := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) { _, _ = io.Copy(c, c) }))
	t.Cleanup(echo.Close)
	h.res.add("sbx1", 8080, echo.URL)

	cfg, err := websocket.NewConfig(strings.Replace(h.url, "http", "ws", 1)+"/echo", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Header = http.Header{hostwire.HeaderSandboxID: {"sbx1"}, hostwire.HeaderSandboxPort: {"8080"}}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("dial through proxy: %v", err)
	}
	defer ws.Close()
	for _, msg := range []string{"hello", "through the proxy"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var back string
		if err := websocket.Message.Receive(ws, &back); err != nil {
			t.Fatal(err)
		}
		if back != msg {
			t.Fatalf("echo %q, want %q", back, msg)
		}
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A port nobody listens on: bind, note, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	h.res.add("gone", 0, dead)
	h.res.add("sleepy", 0, h.envd)
	h.res.paused["sleepy"] = true

	for _, tc := range []struct {
		name, id, port string
		wantStatus     int
	}{
		{"unknown sandbox", "nosuch", "49983", http.StatusNotFound},
		// The SDK's isRunning() reads 502 from /health as "gone".
		{"unknown sandbox health", "nosuch", "49983", http.StatusBadGateway},
		{"invalid id", "No_Such", "49983", http.StatusNotFound},
		{"unreachable", "gone", "49983", http.StatusBadGateway},
		{"paused without auto-resume", "sleepy", "49983", http.StatusConflict},
		{"bad port", "sbx1", "http", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/envs"
			if strings.HasSuffix(tc.name, "health") {
				path = "/health"
			}
			req, _ := http.NewRequest(http.MethodGet, h.url+path, nil)
			req.Header.Set(hostwire.HeaderSandboxID, tc.id)
			req.Header.Set(hostwire.HeaderSandboxPort, tc.port)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if resp.StatusCode != tc.wantStatus || e.Code != tc.wantStatus || e.Message == "" {
				t.Fatalf("got %d %s, want %d {code, message}", resp.StatusCode, body, tc.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
		})
	}
}

// TestConnectClientsGetConnectErrors: an SDK talking Connect to a sandbox
// that is gone sees not_found (the E2B SDK's NotFoundError), for unary
// calls and server streams alike, and unavailable for an unreachable one.
func TestConnectClientsGetConnectErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := testCtx(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.res.add("gone", 0, "http://"+ln.Addr().String())
	ln.Close()

	for _, tc := range []struct {
		id   string
		want connect.Code
	}{{"nosuch", connect.CodeNotFound}, {"gone", connect.CodeUnavailable}} {
		t.Run(tc.id, func(t *testing.T) {
			hc := sdkClient(tc.id, testToken)
			fs := filesystemconnect.NewFilesystemClient(hc, h.url, connect.WithProtoJSON())
			_, err := fs.Stat(ctx, connect.NewRequest(&filesystem.StatRequest{Path: "/"}))
			if got := connect.CodeOf(err); got != tc.want {
				t.Fatalf("unary: code %v (%v), want %v", got, err, tc.want)
			}
			pc := processconnect.NewProcessClient(hc, h.url, connect.WithProtoJSON())
			stream, err := pc.Start(ctx, connect.NewRequest(&process.StartRequest{Process: &process.ProcessConfig{Cmd: "true"}}))
			if err == nil {
				for stream.Receive() {
				}
				err = stream.Err()
				stream.Close()
			}
			if got := connect.CodeOf(err); got != tc.want {
				t.Fatalf("stream: code %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

func TestAutoResume(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.res.add("napper", 0, h.envd)
	h.res.paused["napper"] = true
	h.res.autoResume["napper"] = true

	resp, err := sdkClient("napper", testToken).Get(h.url + "/envs")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("after auto-resume: %d %s", resp.StatusCode, body)
	}
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	if h.res.resumes != 1 || h.res.paused["napper"] {
		t.Fatalf("resumes=%d paused=%v, want one resume", h.res.resumes, h.res.paused["napper"])
	}
}

// TestUploadAndDownloadThroughProxy: envd's REST /files (multipart upload,
// download) works through the proxy byte for byte.
func TestUploadAndDownloadThroughProxy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hc := sdkClient("sbx1", testToken)
	path := t.TempDir() + "/blob.bin"
	data := bytes.Repeat([]byte{0, 1, 2, 254, 255}, 300_000)

	req, _ := http.NewRequest(http.MethodPost, h.url+"/files?path="+url.QueryEscape(path), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	resp, err = hc.Get(h.url + "/files?path=" + url.QueryEscape(path))
	if err != nil {
		t.Fatal(err)
	}
	got := readBody(t, resp)
	if resp.StatusCode != http.StatusOK || got != string(data) {
		t.Fatalf("download: %d, %d bytes, want %d", resp.StatusCode, len(got), len(data))
	}
}

// TestStreamingSSE: a plain chunked HTTP stream from a guest service is
// delivered line by line (the upstream waits for the client to acknowledge
// each line, so buffering would deadlock until the safety timeout).
func TestStreamingSSE(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ack := make(chan struct{})
	sse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			io.WriteString(w, "data: "+string(rune('a'+i))+"\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-ack:
			case <-r.Context().Done():
				return
			}
		}
	}))
	t.Cleanup(sse.Close)
	h.res.add("sbx1", 8000, sse.URL)

	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, h.url+"/events", nil)
	req.Header.Set(hostwire.HeaderSandboxID, "sbx1")
	req.Header.Set(hostwire.HeaderSandboxPort, "8000")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if want := "data: " + string(rune('a'+i)) + "\n"; line != want {
			t.Fatalf("line %q, want %q", line, want)
		}
		if _, err := br.ReadString('\n'); err != nil { // blank separator
			t.Fatal(err)
		}
		ack <- struct{}{}
	}
}

// errResolver fails lookups with a plain error (store down).
type errResolver struct{}

func (errResolver) Resolve(context.Context, string, int) (proxy.Target, error) {
	return proxy.Target{}, errors.New("database is down")
}
func (errResolver) AutoResume(context.Context, string) (bool, error) { return false, nil }

func TestResolverFailureIs502WithoutDetails(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(proxy.New(errResolver{}, proxy.Options{}))
	t.Cleanup(srv.Close)
	resp, err := sdkClient("abc", "").Get(srv.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "database") {
		t.Fatalf("got %d %s, want 502 without internal details", resp.StatusCode, body)
	}
}

// poolResolver routes one sandbox to one upstream through the pool its
// test sets (what DirectRoute does with the agent's network slot number).
type poolResolver struct {
	mu   sync.Mutex
	base *url.URL
	pool string
}

func (r *poolResolver) Resolve(context.Context, string, int) (proxy.Target, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return proxy.Target{URL: r.base, Pool: r.pool}, nil
}

func (r *poolResolver) AutoResume(context.Context, string) (bool, error) { return false, nil }

// A kept-alive upstream connection serves later requests of the same pool
// and never those of another: a resumed sandbox's new network slot (same
// guest address or not) gets fresh connections, never one into the
// namespace its pause replaced.
func TestProxyPoolsPerTargetPool(t *testing.T) {
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	base, _ := url.Parse(up.URL)
	res := &poolResolver{base: base, pool: "sbx1#1"}
	srv := httptest.NewServer(proxy.New(res, proxy.Options{Logger: slog.New(slog.DiscardHandler)}))
	defer srv.Close()
	post := func() {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/x", strings.NewReader("{}"))
		req.Header.Set(hostwire.HeaderSandboxID, "sbx1")
		req.Header.Set(hostwire.HeaderSandboxPort, "8080")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	for _, tc := range []struct {
		pool  string
		conns int32
	}{
		{"sbx1#1", 1}, {"sbx1#1", 1}, // kept alive
		{"sbx1#2", 2}, {"sbx1#2", 2}, // resumed: a new slot, a new connection, kept again
	} {
		res.mu.Lock()
		res.pool = tc.pool
		res.mu.Unlock()
		post()
		if got := conns.Load(); got != tc.conns {
			t.Fatalf("pool %s: %d upstream connections so far, want %d", tc.pool, got, tc.conns)
		}
	}
}

// A process stream goes through whole when envd answers before the proxy's
// Transport has read the end of the client's request body. The HTTP/1
// server drains and closes an unread body once the response starts, so that
// late read used to fail and the Transport closed the guest connection
// under the stream: the E2B SDK's "terminated" of a commands.run, seen one
// run in four in the volume scenario on a busy host (LateBodyRead makes the
// order certain).
func TestStreamWhenBodyEndReadLate(t *testing.T) {
	t.Parallel()
	res := newResolver()
	srv := httptest.NewServer(hostwiretest.LateBodyRead(proxy.New(res, proxy.Options{Logger: slog.New(slog.DiscardHandler)})))
	t.Cleanup(srv.Close)
	res.add("sbx1", proxy.EnvdPort, startEnvd(t))
	hc := &http.Client{Transport: hostwiretest.WholeBody(headerTransport{id: "sbx1", port: "49983", token: testToken})}
	pc := processconnect.NewProcessClient(hc, srv.URL)
	hostwiretest.CheckWholeStream(testCtx(t), t, pc)
}
