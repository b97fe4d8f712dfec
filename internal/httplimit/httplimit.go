// Package httplimit bounds how long hearth's HTTP servers (control plane,
// agent, envd) let a client take, so a slow or silent client cannot hold a
// connection and a goroutine indefinitely (slowloris).
//
// Server-wide ReadTimeout and WriteTimeout cannot be used: exec output
// streams for as long as the command runs, file transfers last as long as
// their size needs and proxied sandbox traffic stays open. So the server
// bounds headers (ReadHeaderTimeout) and idle keep-alive connections
// (IdleTimeout), and a handler wrapper sets per-request read and write
// deadlines (http.ResponseController) on every request that is not a
// stream. Transfers get a stall deadline instead: each read of the body and
// each write of the answer must make progress within Limits.Stall.
package httplimit

import (
	"io"
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Limits bound one server's connections and requests.
type Limits struct {
	// ReadHeader bounds the request line and headers, and a new
	// connection's silence before them.
	ReadHeader time.Duration
	// Idle bounds a keep-alive connection between requests.
	Idle time.Duration
	// Read and Write bound a whole request (body included) and its answer,
	// except streams and transfers.
	Read, Write time.Duration
	// Stall bounds each pause of a transfer: no byte of the body read, or
	// of the answer written, for this long cuts it.
	Stall time.Duration
}

// Defaults are what the servers use unless a test shortens them. Write is
// generous: a create or resume answers only once the VM runs.
func Defaults() Limits {
	return Limits{
		ReadHeader: 10 * time.Second,
		Idle:       2 * time.Minute,
		Read:       time.Minute,
		Write:      10 * time.Minute,
		Stall:      time.Minute,
	}
}

// Apply sets the connection-level timeouts on s. ReadTimeout and
// WriteTimeout stay zero: Handler sets them per request.
func (l Limits) Apply(s *http.Server) *http.Server {
	s.ReadHeaderTimeout = l.ReadHeader
	s.IdleTimeout = l.Idle
	return s
}

// Kind classifies a request for Handler.
type Kind int

const (
	// Bounded requests must arrive within Read and be answered within
	// Write.
	Bounded Kind = iota
	// Stream requests (exec, watches, proxied traffic, WebSockets) have no
	// deadline: they may be silent for as long as the process is.
	Stream
	// Transfer requests (file up- and downloads) may take as long as their
	// size needs but never stall for longer than Stall.
	Transfer
)

// Handler sets the deadlines kind(r) calls for on each request.
// net/http resets a connection's deadlines between requests, so a stream
// later on the same keep-alive connection is not affected.
func (l Limits) Handler(kind func(*http.Request) Kind, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		switch kind(r) {
		case Bounded:
			now := time.Now()
			_ = rc.SetReadDeadline(now.Add(l.Read))
			_ = rc.SetWriteDeadline(now.Add(l.Write))
			// Read bounds the body's arrival, not the handler: once the
			// body is read (or there is none) net/http reads the
			// connection in the background to see the client leave, and
			// that read timing out would cancel the request's context and
			// the connection's (every later request on it too).
			if r.Body == nil || r.Body == http.NoBody {
				_ = rc.SetReadDeadline(time.Time{})
			} else {
				r.Body = &bodyRead{ReadCloser: r.Body, rc: rc}
			}
		case Transfer:
			if l.Stall > 0 {
				_ = rc.SetReadDeadline(time.Now().Add(l.Stall))
				_ = rc.SetWriteDeadline(time.Now().Add(l.Stall))
				r.Body = &stallReader{ReadCloser: r.Body, rc: rc, d: l.Stall}
				w = &stallWriter{ResponseWriter: w, rc: rc, d: l.Stall}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// bodyRead lifts the read deadline once the body has been read to its end.
type bodyRead struct {
	io.ReadCloser
	rc *http.ResponseController
}

func (b *bodyRead) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// stallReader moves the read deadline on before every read of the body.
type stallReader struct {
	io.ReadCloser
	rc *http.ResponseController
	d  time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	_ = s.rc.SetReadDeadline(time.Now().Add(s.d))
	return s.ReadCloser.Read(p)
}

// stallWriter moves the write deadline on before every write.
type stallWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (s *stallWriter) Write(p []byte) (int, error) {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.d))
	return s.ResponseWriter.Write(p)
}

// ReadFrom keeps io.Copy's chunking visible to Write (the underlying
// writer's ReadFrom would bypass the deadline updates).
func (s *stallWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.CopyBuffer(struct{ io.Writer }{s}, r, make([]byte, 32<<10))
}

// Flush keeps the writer an http.Flusher for handlers that assert it.
func (s *stallWriter) Flush() { _ = s.rc.Flush() }

// Unwrap lets http.ResponseController reach the real writer.
func (s *stallWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// StreamingRPCs returns a matcher for the Connect/gRPC procedures of the
// given services that stream in either direction (/package.Service/Method),
// read from the service descriptors so a new streaming method is never
// bounded by mistake.
func StreamingRPCs(services ...protoreflect.ServiceDescriptor) func(*http.Request) bool {
	paths := map[string]bool{}
	for _, sd := range services {
		ms := sd.Methods()
		for i := range ms.Len() {
			m := ms.Get(i)
			if m.IsStreamingClient() || m.IsStreamingServer() {
				paths["/"+string(sd.FullName())+"/"+string(m.Name())] = true
			}
		}
	}
	return func(r *http.Request) bool { return paths[strings.TrimSuffix(r.URL.Path, "/")] }
}
