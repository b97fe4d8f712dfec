package envd_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hearth-sandbox/hearth/internal/envd"
	"github.com/hearth-sandbox/hearth/internal/httplimit"
)

// envd's server with short limits: slow and silent clients are cut off; a
// process stream and a file upload that each take longer than the
// per-request bounds still work.
func TestServerLimits(t *testing.T) {
	t.Parallel()
	const d = 300 * time.Millisecond
	h := initEnvd(t, newServerWith(t, envd.Config{Limits: httplimit.Limits{ReadHeader: d, Idle: 2 * d, Read: d, Write: d, Stall: 2 * d}}), nil)
	addr := strings.TrimPrefix(h.url, "http://")
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(20 * time.Second)) // the test's own bound
		return c
	}
	closed := func(c net.Conn, what string) {
		t.Helper()
		_, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: envd kept the connection open", what)
		}
	}

	// A process that is silent for longer than Read and Write.
	c := runToEnd(t, h.proc(nil), connect.NewRequest(startReq("/bin/sh", "-c", "sleep 1; echo done")))
	if c.stdout.String() != "done\n" || c.end.GetExitCode() != 0 {
		t.Errorf("long process stream: stdout %q, end %v", c.stdout.String(), c.end)
	}

	// An upload that trickles for longer than Read without stalling.
	dest := filepath.Join(t.TempDir(), "up")
	up := dial()
	fmt.Fprintf(up, "POST /files?path=%s HTTP/1.1\r\nHost: x\r\n%s: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 6\r\n\r\n",
		url.QueryEscape(dest), envd.AccessTokenHeader, testToken)
	for range 6 {
		time.Sleep(d / 2)
		io.WriteString(up, "x")
	}
	resp, err := http.ReadResponse(bufio.NewReader(up), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("trickled upload: %v, %v", resp, err)
	}
	if b, err := os.ReadFile(dest); err != nil || string(b) != "xxxxxx" {
		t.Errorf("uploaded file: %q, %v", b, err)
	}

	// An unauthenticated client holding a connection: headers a byte at a
	// time, a stalled /init body, or nothing at all.
	slow := dial()
	go func() {
		for _, b := range []byte("GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 100)) {
			if _, err := slow.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(d / 3)
		}
	}()
	closed(slow, "headers sent slowly")
	stalled := dial()
	io.WriteString(stalled, "POST /init HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
	closed(stalled, "stalled /init body")
	closed(dial(), "silent connection")
}
