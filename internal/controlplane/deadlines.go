package controlplane

import (
	"net/http"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/httplimit"
)

// requestKind classifies the control plane's requests for httplimit: sandbox
// traffic (the proxy), REST exec and file transfers, the dashboard's
// terminal and file browser, followed build logs, volume file transfers
// and any WebSocket are streams; everything else (JSON API calls, the
// dashboard's pages and assets) is bounded.
func requestKind(isProxy func(*http.Request) bool) func(*http.Request) httplimit.Kind {
	return func(r *http.Request) httplimit.Kind {
		if isProxy(r) || streamingPath(r) {
			return httplimit.Stream
		}
		return httplimit.Bounded
	}
}

// streamingPath reports the control plane's own long-lived routes (volume
// file reads and writes of E2B's content API among them).
func streamingPath(r *http.Request) bool {
	if r.Header.Get("Upgrade") != "" {
		return true
	}
	p := r.URL.Path
	return strings.HasSuffix(p, "/exec") || strings.HasSuffix(p, "/files") ||
		(strings.HasPrefix(p, "/volumecontent/") && strings.HasSuffix(p, "/file")) ||
		strings.HasPrefix(p, "/ws/") || strings.HasPrefix(p, "/ui/") ||
		// A followed build log (hearth template build) lasts the build.
		strings.HasSuffix(p, "/logs") && r.URL.Query().Get("follow") == "true"
}
