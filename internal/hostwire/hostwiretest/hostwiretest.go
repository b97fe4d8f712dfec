// Package hostwiretest helps test the sandbox-traffic proxies (the control
// plane's and the host agent's).
package hostwiretest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/hearth-sandbox/hearth/gen/envd/process"
	"github.com/hearth-sandbox/hearth/gen/envd/process/processconnect"
)

// LateBodyRead wraps a proxy's handler so that the proxy's Transport,
// forwarding the request body upstream, gets the end of that body (its
// read after the last byte) only once the response has started (its first
// flush). A loaded host produces this order at random, when the
// Transport's goroutine is descheduled between sending the body and that
// last read while the upstream already answers; here it is certain.
func LateBodyRead(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		fw := &flushSignal{ResponseWriter: w, started: make(chan struct{})}
		// Replaced in place: this *Request is also the server's own view
		// of the request, as it is for the proxy in production.
		r.Body = &gatedBody{ReadCloser: r.Body, started: fw.started, ctx: r.Context()}
		next.ServeHTTP(fw, r)
	})
}

// gatedBody holds any read after the body's end until started is closed
// (or the request is over).
type gatedBody struct {
	io.ReadCloser
	started <-chan struct{}
	ctx     context.Context
	ended   bool
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if b.ended {
		select {
		case <-b.started:
		case <-b.ctx.Done():
		}
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.ended = true
	}
	return n, err
}

// flushSignal closes started after the first flush of the response.
type flushSignal struct {
	http.ResponseWriter
	started chan struct{}
	once    sync.Once
}

func (w *flushSignal) Flush() {
	_ = http.NewResponseController(w.ResponseWriter).Flush()
	w.once.Do(func() { close(w.started) })
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *flushSignal) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WholeBody is a client Transport that sends each request body whole, with
// a Content-Length, as the E2B SDK's fetch does (connect-go's own client
// streams it chunked), then goes on with next.
func WholeBody(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			b, err := io.ReadAll(r.Body)
			r.Body.Close()
			if err != nil {
				return nil, err
			}
			r = r.Clone(r.Context())
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
			r.TransferEncoding = nil
		}
		return next.RoundTrip(r)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// CheckWholeStream runs a shell command whose stream outlives the proxy's
// first flush through pc, and fails t unless the stream carries all of its
// output and its end.
func CheckWholeStream(ctx context.Context, t testing.TB, pc processconnect.ProcessClient) {
	t.Helper()
	stream, err := pc.Start(ctx, connect.NewRequest(&process.StartRequest{
		Process: &process.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "echo one; sleep 0.5; echo two"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var out string
	ended := false
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		out += string(ev.GetData().GetStdout())
		if end := ev.GetEnd(); end != nil {
			ended = end.GetExitCode() == 0
		}
	}
	if err := stream.Err(); err != nil || !ended || out != "one\ntwo\n" {
		t.Fatalf("stream: err %v, ended %v, stdout %q; want the whole stream", err, ended, out)
	}
}
