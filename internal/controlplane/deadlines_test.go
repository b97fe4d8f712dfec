package controlplane

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
)

// A bounded request whose body stalls fails; a stream that outlives the
// bounds on the same keep-alive connection, after a bounded request, works.
func TestBoundedDeadlines(t *testing.T) {
	t.Parallel()
	const d = 200 * time.Millisecond
	h := bounded(d, 4*d, func(r *http.Request) bool { return r.URL.Path == "/stream" }, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			for i := range 6 {
				time.Sleep(d)
				fmt.Fprintf(w, "chunk %d\n", i)
				w.(http.Flusher).Flush()
			}
		default:
			if _, err := io.ReadAll(r.Body); err != nil {
				http.Error(w, "read: "+err.Error(), http.StatusRequestTimeout)
				return
			}
			io.WriteString(w, "ok\n")
		}
	}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
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
	if resp, body := do("POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"); resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("bounded request: %d %q", resp.StatusCode, body)
	}
	// 6×d of streaming, past the write deadline (4×d) the first request set.
	if resp, body := do("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || strings.Count(body, "chunk") != 6 {
		t.Fatalf("stream after a bounded request: %d %q", resp.StatusCode, body)
	}

	// A body that never arrives is cut off by the read deadline.
	slow, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	io.WriteString(slow, "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
	slow.SetReadDeadline(time.Now().Add(10 * time.Second)) // the test's own bound
	resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
	if err != nil || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("stalled body: %v, %v; want the handler's 408 once the read deadline passed", resp, err)
	}
}

func TestStreamingPath(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]bool{
		"/v1/sandboxes/x/exec": true, "/v1/sandboxes/x/files": true, "/ws/sandboxes/x/terminal": true,
		"/ui/sandboxes/x/dir": true, "/v1/sandboxes": false, "/sandboxes/x/network": false, "/app/": false,
	} {
		r := httptest.NewRequest("GET", path, nil)
		if got := streamingPath(r); got != want {
			t.Errorf("%s: %v, want %v", path, got, want)
		}
	}
	r := httptest.NewRequest("GET", "/anything", nil)
	r.Header.Set("Upgrade", "websocket")
	if !streamingPath(r) {
		t.Error("WebSocket upgrade not treated as a stream")
	}
}
