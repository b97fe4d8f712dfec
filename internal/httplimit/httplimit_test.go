package httplimit

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	processpb "github.com/hearth-sandbox/hearth/gen/envd/process"
)

const d = 200 * time.Millisecond

// short are the limits the tests run with.
var short = Limits{ReadHeader: d, Idle: 2 * d, Read: d, Write: 4 * d, Stall: 2 * d}

func testServer(t *testing.T) *httptest.Server {
	t.Helper()
	kind := func(r *http.Request) Kind {
		switch r.URL.Path {
		case "/stream":
			return Stream
		case "/files":
			return Transfer
		}
		return Bounded
	}
	h := short.Handler(kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream", "/files":
			if r.Method == http.MethodPost {
				n, err := io.Copy(io.Discard, r.Body)
				if err != nil {
					http.Error(w, "read: "+err.Error(), http.StatusRequestTimeout)
					return
				}
				fmt.Fprintf(w, "got %d\n", n)
				return
			}
			for i := range 6 {
				time.Sleep(d)
				fmt.Fprintf(w, "chunk %d\n", i)
				w.(http.Flusher).Flush()
			}
		case "/slow": // a bounded handler working past Read
			if _, err := io.ReadAll(r.Body); err != nil {
				http.Error(w, "read: "+err.Error(), http.StatusRequestTimeout)
				return
			}
			time.Sleep(3 * d)
			fmt.Fprintf(w, "ctx: %v\n", r.Context().Err())
		default:
			if _, err := io.ReadAll(r.Body); err != nil {
				http.Error(w, "read: "+err.Error(), http.StatusRequestTimeout)
				return
			}
			fmt.Fprintf(w, "ok, ctx: %v\n", r.Context().Err())
		}
	}))
	srv := httptest.NewUnstartedServer(h)
	short.Apply(srv.Config)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func dial(t *testing.T, srv *httptest.Server) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// The test's own bound on every wait below.
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	return conn
}

// waitClosed reads until the server closes conn; it fails if the server
// answers anything or the test's deadline passes first.
func waitClosed(t *testing.T, conn net.Conn, what string) time.Duration {
	t.Helper()
	t0 := time.Now()
	b, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("%s: the server kept the connection open", what)
	}
	if len(b) > 0 && !strings.Contains(string(b), "408") && !strings.Contains(string(b), "400") {
		t.Fatalf("%s: the server answered %q before closing", what, b)
	}
	return time.Since(t0)
}

// A bounded request whose body stalls fails; a stream that outlives the
// bounds on the same keep-alive connection, after a bounded request, works.
func TestBoundedAndStream(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	conn := dial(t, srv)
	br := bufio.NewReader(conn)
	do := func(req string) (*http.Response, string) {
		t.Helper()
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("body: %v", err)
		}
		return resp, string(b)
	}
	if resp, body := do("POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"); resp.StatusCode != 200 || body != "ok, ctx: <nil>\n" {
		t.Fatalf("bounded request: %d %q", resp.StatusCode, body)
	}
	// 6×d of streaming, past the write deadline (4×d) the first request set.
	if resp, body := do("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || strings.Count(body, "chunk") != 6 {
		t.Fatalf("stream after a bounded request: %d %q", resp.StatusCode, body)
	}
	// A transfer longer than Write that never stalls for Stall goes through.
	if resp, body := do("GET /files HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || strings.Count(body, "chunk") != 6 {
		t.Fatalf("download slower than the write bound: %d %q", resp.StatusCode, body)
	}

	// A body that never arrives is cut off by the read deadline.
	slow := dial(t, srv)
	io.WriteString(slow, "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
	resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
	if err != nil || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("stalled body: %v, %v; want the handler's 408 once the read deadline passed", resp, err)
	}
}

// A bounded handler may work past Read once its body is in (a create
// that takes long): its context stays live, and so does the next
// request's on the same keep-alive connection.
func TestBoundedHandlerPastRead(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	c := srv.Client()
	for _, req := range []struct{ method, path, body string }{
		{"GET", "/slow", ""}, {"POST", "/slow", "{}"}, {"GET", "/json", ""},
	} {
		r, err := http.NewRequest(req.method, srv.URL+req.path, strings.NewReader(req.body))
		if err != nil {
			t.Fatal(err)
		}
		if req.body == "" {
			r.Body = nil
		}
		resp, err := c.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "ctx: <nil>") {
			t.Errorf("%s %s: %d %q: the request's context ended", req.method, req.path, resp.StatusCode, b)
		}
	}
}

// An upload that trickles a byte at a time, each within Stall, runs past
// Read; one that stops for longer than Stall is cut.
func TestTransferStall(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	conn := dial(t, srv)
	io.WriteString(conn, "POST /files HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
	for range 8 {
		time.Sleep(d / 2) // 8 × d/2 = 4×d in all, past Read (d)
		io.WriteString(conn, "x")
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "got 8\n" {
		t.Fatalf("trickled upload: %d %q", resp.StatusCode, b)
	}

	stalled := dial(t, srv)
	io.WriteString(stalled, "POST /files HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nxx")
	resp, err = http.ReadResponse(bufio.NewReader(stalled), nil)
	if err != nil || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("stalled upload: %v, %v; want 408 once it stalled for Stall", resp, err)
	}
}

// Slowloris: a connection that never sends a request, one that sends its
// headers a byte at a time, and an idle keep-alive connection are closed.
func TestSlowClientsCut(t *testing.T) {
	t.Parallel()
	srv := testServer(t)

	silent := dial(t, srv)
	if took := waitClosed(t, silent, "silent connection"); took > 10*short.ReadHeader {
		t.Errorf("silent connection closed after %s", took)
	}

	trickle := dial(t, srv)
	done := make(chan time.Duration)
	go func() { done <- waitClosed(t, trickle, "headers sent slowly") }()
	req := "GET /json HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 200) + "\r\n\r\n"
	closed := false
	for i := 0; i < len(req) && !closed; i++ {
		if _, err := trickle.Write([]byte{req[i]}); err != nil {
			closed = true
		}
		time.Sleep(d / 4)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("headers sent slowly: the connection stayed open")
	}

	idle := dial(t, srv)
	io.WriteString(idle, "GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("keep-alive request: %v %v", resp, err)
	}
	io.ReadAll(resp.Body)
	t0 := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle keep-alive connection: read %v, want EOF (closed by the server)", err)
	}
	if took := time.Since(t0); took < short.Idle/2 {
		t.Errorf("idle connection closed after %s, before the idle timeout %s", took, short.Idle)
	}
}

func TestStreamingRPCs(t *testing.T) {
	t.Parallel()
	sd := processpb.File_envd_process_process_proto.Services().ByName("Process")
	if sd == nil {
		t.Fatal("no Process service")
	}
	match := StreamingRPCs(sd)
	for _, c := range []struct {
		name protoreflect.Name
		want bool
	}{{"Start", true}, {"Connect", true}, {"StreamInput", true}, {"List", false}, {"SendSignal", false}} {
		r := httptest.NewRequest("POST", "/"+string(sd.FullName())+"/"+string(c.name), nil)
		if got := match(r); got != c.want {
			t.Errorf("%s: streaming %v, want %v", c.name, got, c.want)
		}
	}
}

// Over cleartext HTTP/2 (the agent's and envd's gRPC clients), a request's
// deadline applies to its stream: a body that stops arriving is cut while
// a stream on the same connection carries on.
func TestH2CDeadlines(t *testing.T) {
	t.Parallel()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := httptest.NewUnstartedServer(short.Handler(func(r *http.Request) Kind {
		if r.URL.Path == "/stream" {
			return Stream
		}
		return Bounded
	}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			for i := range 6 {
				time.Sleep(d)
				fmt.Fprintf(w, "chunk %d\n", i)
				w.(http.Flusher).Flush()
			}
			return
		}
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, "read: "+err.Error(), http.StatusRequestTimeout)
			return
		}
		io.WriteString(w, "ok\n")
	})))
	srv.Config.Protocols = &p
	short.Apply(srv.Config)
	srv.Start()
	t.Cleanup(srv.Close)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}

	stream := make(chan string, 1)
	go func() {
		resp, err := c.Get(srv.URL + "/stream")
		if err != nil {
			stream <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		stream <- resp.Proto + " " + string(b)
	}()
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("{")) // then nothing
	resp, err := c.Post(srv.URL+"/json", "application/json", pr)
	if err != nil {
		t.Fatalf("stalled h2c body: %v (want the handler's 408)", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || resp.ProtoMajor != 2 {
		t.Fatalf("stalled h2c body: %s %d, want HTTP/2 408", resp.Proto, resp.StatusCode)
	}
	if got := <-stream; !strings.HasPrefix(got, "HTTP/2.0 ") || strings.Count(got, "chunk") != 6 {
		t.Fatalf("h2c stream next to it: %q", got)
	}
}
