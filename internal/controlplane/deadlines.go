package controlplane

import (
	"net/http"
	"strings"
	"time"
)

// Per-request deadlines. The server-wide ReadTimeout and WriteTimeout
// cannot be used: exec output streams for as long as the command runs,
// file transfers last as long as their size needs, and sandbox traffic
// (the proxy) and WebSockets stay open. Every other request (JSON API
// calls, the dashboard's pages and assets) must arrive and be answered
// within these bounds, so a slow client cannot hold a connection and a
// goroutine indefinitely.
const (
	requestReadTimeout = time.Minute
	// Generous: a create or resume answers only once the VM runs.
	requestWriteTimeout = 10 * time.Minute
)

// bounded sets read and write deadlines on each request that isStream
// does not claim. (net/http resets a connection's deadlines between
// requests, so a stream later on the same keep-alive connection is not
// affected; the test checks it.)
func bounded(read, write time.Duration, isStream func(*http.Request) bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isStream(r) {
			rc := http.NewResponseController(w)
			now := time.Now()
			_ = rc.SetReadDeadline(now.Add(read))
			_ = rc.SetWriteDeadline(now.Add(write))
		}
		next.ServeHTTP(w, r)
	})
}

// streamingPath reports the control plane's own long-lived routes: REST
// exec and file transfers, the dashboard's terminal and file browser, and
// any WebSocket upgrade.
func streamingPath(r *http.Request) bool {
	if r.Header.Get("Upgrade") != "" {
		return true
	}
	p := r.URL.Path
	return strings.HasSuffix(p, "/exec") || strings.HasSuffix(p, "/files") ||
		strings.HasPrefix(p, "/ws/") || strings.HasPrefix(p, "/ui/")
}
