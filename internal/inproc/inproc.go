// Package inproc turns an http.Handler into an http.RoundTripper, so Go
// clients (envdclient, Connect) can talk to a handler of this process, such
// as the sandbox traffic proxy, without a socket. Responses stream: the
// client reads the body while the handler is still writing it.
package inproc

import (
	"errors"
	"io"
	"net/http"
	"sync"
)

// Transport serves every request with Handler after Prepare (optional)
// adjusted it.
type Transport struct {
	Handler http.Handler
	// Prepare edits the cloned request before it is served (e.g. routing
	// headers). It must not keep the request.
	Prepare func(*http.Request)
}

var _ http.RoundTripper = (*Transport)(nil)

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	if r.Body == nil {
		r.Body = http.NoBody
	}
	if r.RemoteAddr == "" {
		r.RemoteAddr = "127.0.0.1:0" // in-process callers are local
	}
	r.RequestURI = r.URL.RequestURI()
	if r.Host == "" {
		r.Host = r.URL.Host
	}
	if t.Prepare != nil {
		t.Prepare(r)
	}
	pr, pw := io.Pipe()
	w := &writer{header: http.Header{}, body: pw, ready: make(chan struct{})}
	go func() {
		defer func() {
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				pw.CloseWithError(errors.New("inproc: handler panicked"))
				w.start(http.StatusInternalServerError)
				return
			}
			w.start(http.StatusOK) // a handler that wrote nothing
			pw.Close()
		}()
		t.Handler.ServeHTTP(w, r)
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
	return &http.Response{
		Status:     http.StatusText(w.code),
		StatusCode: w.code,
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        w.sent,
		Body:          pr,
		ContentLength: -1,
		Request:       req,
	}, nil
}

// writer is the handler's side: headers are frozen at the first
// WriteHeader/Write and the body flows through the pipe.
type writer struct {
	header http.Header
	body   *io.PipeWriter

	once  sync.Once
	ready chan struct{} // closed once code and sent are set
	code  int
	sent  http.Header
}

func (w *writer) Header() http.Header { return w.header }

func (w *writer) start(code int) {
	w.once.Do(func() {
		w.code, w.sent = code, w.header.Clone()
		close(w.ready)
	})
}

func (w *writer) WriteHeader(code int) {
	if code >= 100 && code < 200 {
		return // informational answers are not relayed
	}
	w.start(code)
}

func (w *writer) Write(b []byte) (int, error) {
	w.start(http.StatusOK)
	return w.body.Write(b)
}

// Flush is a no-op: the pipe is unbuffered, every Write already reached
// the reader.
func (w *writer) Flush() {}
