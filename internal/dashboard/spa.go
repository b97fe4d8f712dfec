package dashboard

import (
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// The page loads only its own scripts and styles and talks only to its own
// origin (HTTP and WebSocket). Inline styles are allowed: React style
// attributes and xterm.js use them.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"

// spa serves the built front end under Prefix (Vite builds it with that
// base, so index.html asks for /app/assets/...). A path naming a file serves
// it (Vite's hashed assets/* are cached for a year); any other path without
// a file extension is a client-side route and gets index.html. A missing
// asset is a 404, never index.html (a script tag must not receive HTML).
func (h *handler) spa(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// path.Clean("/app/") is "/app": both that and "/app/x" lose the prefix.
	name := strings.TrimPrefix(strings.TrimPrefix(path.Clean("/"+r.URL.Path), strings.TrimSuffix(Prefix, "/")), "/")
	if name != "" {
		if st, err := fs.Stat(h.assets, name); err == nil && !st.IsDir() {
			if strings.HasPrefix(name, "assets/") {
				w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
			} else {
				w.Header().Set("Cache-Control", "no-cache")
			}
			http.ServeFileFS(w, r, h.assets, name)
			return
		}
		if strings.HasPrefix(name, "assets/") || path.Ext(name) != "" {
			http.Error(w, "404 page not found", http.StatusNotFound)
			return
		}
	}
	if !h.hasIndex {
		http.Error(w, "dashboard not built", http.StatusNotFound)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
	w.Header().Set("X-Frame-Options", "DENY")
	// ServeFileFS would redirect /index.html to /; serve the bytes instead.
	b, err := fs.ReadFile(h.assets, "index.html")
	if err != nil {
		http.Error(w, "dashboard not built", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(b)
}
