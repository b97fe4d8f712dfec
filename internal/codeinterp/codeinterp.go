// Package codeinterp is hearth's code interpreter: the server the official
// `@e2b/code-interpreter` SDK talks to on port 49999 of a sandbox (POST
// /execute streaming JSON lines, /contexts, /health), driving real Jupyter
// kernels. It is Python on Debian's jupyter_client (server.py, embedded
// here) rather than Go beside envd: the kernels speak the Jupyter
// protocol over ZeroMQ, and jupyter_client is the reference client of that
// protocol (message signing, channels, interrupt and restart semantics),
// already in the image as a dependency of ipykernel.
//
// The image builder (internal/image) installs Script as ServerPath and a
// service file for the guest init, which starts it at boot; the control
// plane bakes the platform snapshot template TemplateName from the image
// with the server up and its default kernel warm (internal/citemplate).
package codeinterp

import _ "embed"

// Script is the server's source (server.py).
//
//go:embed server.py
var Script []byte

const (
	// Port is where the server listens in the guest (the SDK's JUPYTER_PORT).
	Port = 49999
	// ImageName is the guest image holding Python, the kernels and the server.
	ImageName = "code-interpreter"
	// TemplateName is the SDK's default template: the snapshot of ImageName
	// with the server up and the default kernel warm.
	TemplateName = "code-interpreter-v1"
	// ServerPath is where the image installs Script.
	ServerPath = "/usr/lib/hearth/code-interpreter/server.py"
	// ServiceName names the guest init's service file
	// (/etc/hearth/services/<ServiceName>) that starts the server.
	ServiceName = "code-interpreter"
	// ListeningMarker starts the line the server prints on its stderr (the
	// guest console) once it listens.
	ListeningMarker = "code-interpreter: listening on"
)
