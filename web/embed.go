// Package web holds the dashboard's front end (React + Vite, sources in
// web/src) and embeds its build into the Go binary.
//
// Why web/static and not web/dist: go:embed fails to compile when the
// embedded directory is missing, and the build output is not committed. So
// the embedded directory is web/static, which is always there (it holds the
// committed not-built.html), and scripts/web.sh makes Vite write the build
// into web/static/app (ignored by web/.gitignore). A binary built before the
// front end serves not-built.html, which says how to build it; one built
// after serves the dashboard. No build tags, no generated Go files.
package web

import (
	"embed"
	"io/fs"
)

//go:embed all:static
var static embed.FS

// Assets returns the built dashboard (index.html at its root) and true, or,
// when the front end was not built before the binary, a file system whose
// index.html is a page explaining how to build it, and false.
func Assets() (fs.FS, bool) {
	if app, err := fs.Sub(static, "static/app"); err == nil {
		if _, err := fs.Stat(app, "index.html"); err == nil {
			return app, true
		}
	}
	return NotBuilt(), false
}

// NotBuilt is what Assets returns without a build: a file system whose only
// file, index.html, says how to build the dashboard.
func NotBuilt() fs.FS { return placeholder{} }

// placeholder serves static/not-built.html as index.html.
type placeholder struct{}

func (placeholder) Open(name string) (fs.File, error) {
	if name == "index.html" {
		return static.Open("static/not-built.html")
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}
